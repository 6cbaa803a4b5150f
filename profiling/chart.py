"""Bar chart of the per-module decoder cost, one panel per model (each on its own scale)."""
from __future__ import annotations

from pathlib import Path

from .report import Report


def decoder_chart(reports: list[Report], path: str | Path) -> Path:
    """Write a PNG with one horizontal bar chart of decoder kMAC/px per module for each report."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heights = [max(sum(row.macs > 0 for row in r.side_rows("decoder")), 1) * 0.32 + 0.9 for r in reports]
    fig, axes = plt.subplots(len(reports), 1, figsize=(8, sum(heights)), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for ax, r in zip(axes[:, 0], reports):
        rows = [row for row in r.side_rows("decoder") if row.macs > 0][::-1]
        values = [r.kmac(row.macs) for row in rows]
        bars = ax.barh([row.label for row in rows], values, color="tab:blue")
        ax.bar_label(bars, labels=[f"{v:.3g}" for v in values], padding=3, fontsize=8)
        ax.set_title(f"{r.model}: decoder {r.total('decoder'):.3g} kMAC/px "
                     f"({r.width}x{r.height})", fontsize=10, loc="left")
        ax.set_xlim(0, max(values + [1e-9]) * 1.18)
        ax.tick_params(labelsize=8)
    axes[-1, 0].set_xlabel("kMAC per luma pixel")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
