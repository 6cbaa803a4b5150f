"""Results files: rd.csv, rd.json, bd.csv, rd.md and the two PNG plots, all from the result rows."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from evaluation.bdrate import METHOD, METRICS, bd_summary
from evaluation.rd import ANCHORS, FIELDS

# The Kodak (kodim23 and the TID2013 copies I03..I19) and Waterloo photos of the evaluation set.
KODAK_WATERLOO = ["kodim23", "I03", "I04", "I06", "I08", "I19", "monarch", "sail", "tulips"]
BD_FIELDS = ["dataset", "anchor", "codec", "metric", "bd_rate", "bd_quality_db", "n_images", "n_skipped"]


def datasets(rows: list[dict]) -> dict[str, list[str]]:
    """The data sets of the tables: every image present, and the Kodak+Waterloo subset."""
    images = sorted({r["image"] for r in rows})
    sets = {f"all {len(images)} image{'s' * (len(images) > 1)}": images}
    subset = [i for i in KODAK_WATERLOO if i in images]
    if subset:
        sets[f"kodak+waterloo ({len(subset)} image{'s' * (len(subset) > 1)})"] = subset
    return sets


def codec_order(result: dict) -> list[str]:
    """Codecs with rows: anchors first, then in the order they ran."""
    present = list(dict.fromkeys(r["codec"] for r in result["rows"]))
    return [c for c in ANCHORS if c in present] + [c for c in present if c not in ANCHORS]


def anchors_of(result: dict) -> list[str]:
    """The anchors with rows: JPEG and HEVC, then any asked for (``meta["extra_anchors"]``, e.g. the
    previous weights of a model, for a direct comparison over the rates both curves cover)."""
    present = codec_order(result)
    extra = result.get("meta", {}).get("extra_anchors", [])
    return [a for a in dict.fromkeys(list(ANCHORS) + list(extra)) if a in present]


def compute_bd(result: dict) -> list[dict]:
    """BD rows for every data set x anchor x codec x metric."""
    out = []
    codecs = codec_order(result)
    for dname, images in datasets(result["rows"]).items():
        for anchor in anchors_of(result):
            for codec in codecs:
                for metric in METRICS:
                    s = bd_summary(result["rows"], anchor, codec, metric, images)
                    out.append({"dataset": dname, **s})
    return out


def _cell(s: dict | None, n_total: int) -> str:
    if s is None:
        return ""
    if s["anchor"] == s["codec"]:
        return "anchor"
    if not math.isfinite(s["bd_rate"]):
        return "no overlap" if s["n_skipped"] else "n/a"
    text = f"{s['bd_rate']:+.1f}% / {s['bd_quality_db']:+.2f} dB"
    return text if s["n_images"] == n_total else f"{text} ({s['n_images']}/{n_total})"


def _ms(rows: list[dict], wall: str, cpu: str) -> str:
    """Mean wall / CPU milliseconds of two timing fields, or '' when no row has them."""
    timed = [r for r in rows if r.get(wall) not in (None, "")]
    if not timed:
        return ""
    return (f"{1000 * np.mean([float(r[wall]) for r in timed]):.1f} / "
            f"{1000 * np.mean([float(r[cpu]) for r in timed]):.1f}")


def markdown(result: dict) -> str:
    """The Markdown report: one table per data set, then settings and skipped codecs."""
    meta, rows = result["meta"], result["rows"]
    info = meta["codecs"]
    anchors = anchors_of(result)
    bd = {(b["dataset"], b["anchor"], b["codec"], b["metric"]): b for b in result["bd"]}
    lines = [
        "# Rate-distortion benchmark", "",
        f"Made by `{meta['command']}` on {meta['date']}, machine: {meta['machine']}.", "",
        f"Each cell: BD-rate / BD-quality against the anchor (negative rate = fewer bits), computed per "
        f"image with the `bjontegaard` package ({METHOD} interpolation, over the overlapping range), then "
        f"averaged over images with equal weight; `(n/N)`: only n images had overlapping curves. "
        f"MS-SSIM enters as -10 log10(1 - MS-SSIM) dB. Rates are the bytes of the coded files "
        f"(bpp = bytes * 8 / (H * W)). Decode time: mean per image and setting, wall and CPU time of "
        f"the decoder, CLI tools timed as they run (process start, decoding, writing the picture), "
        f"every decoder on one thread; our models also with the torch-free ONNX FP32 decoder of export/ "
        f"(same bitstreams; `ONNX INT8` rows decode with the INT8 networks). CPU times leave out the rANS "
        f"helper process of our decoders.", ""]
    for dname, images in datasets(rows).items():
        lines += [f"## {dname}", ""]
        head = ["codec", "chroma", "kMAC/px", "decoder", "decode ms (wall/CPU)", "ONNX FP32 decode ms (wall/CPU)",
                "bpp range"]
        for a in anchors:
            head += [f"vs {a} {label}" for label in METRICS.values()]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for codec in codec_order(result):
            sub = [r for r in rows if r["codec"] == codec and r["image"] in images]
            if not sub:
                continue
            kmac = info.get(codec, {}).get("kmac_px")
            cells = [codec, info.get(codec, {}).get("chroma", ""),
                     f"{kmac:.2f}" if kmac is not None else "", info.get(codec, {}).get("decoder", ""),
                     _ms(sub, "decode_s", "decode_cpu_s"), _ms(sub, "decode_onnx_s", "decode_onnx_cpu_s"),
                     f"{min(r['bpp'] for r in sub):.2f}-{max(r['bpp'] for r in sub):.2f}"]
            for a in anchors:
                cells += [_cell(bd.get((dname, a, codec, m)), len(images)) for m in METRICS]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += by_rate(result)
    lines += ["## Codec settings", "", "| codec | version | settings |", "|---|---|---|"]
    lines += [f"| {n} | {c.get('version', '')} | `{c.get('settings', '')}` |" for n, c in info.items()]
    lines += ["", "## Skipped codecs", ""]
    skipped = meta.get("skipped", {})
    lines += [f"- {n}: {why}" for n, why in skipped.items()] or ["none"]
    lines.append("")
    return "\n".join(lines)


def by_rate(result: dict, metric: str = "psnr_yuv") -> list[str]:
    """Markdown lines: each learned codec's BD-rate against the classical codecs over its lower and its upper
    half of rate points apart (all images), to show where on the curve a model gains or loses."""
    rows, info = result["rows"], result["meta"]["codecs"]
    present = codec_order(result)
    learned = [c for c in present if info.get(c, {}).get("kind") == "learned"]
    against = [a for a in ("jpeg", "webp", "hevc") if a in present]
    if not learned or not against:
        return []
    head = ["codec", "points"] + [f"vs {a}" for a in against]
    lines = [f"## By rate: lower and upper half of each learned codec's rate points ({METRICS[metric]})", "",
             "The same BD-rate / BD-quality, all images, with the model's curve cut to its lower or upper half of "
             "rate points (the anchors' curves whole).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    n_images = len({r["image"] for r in rows})
    for codec in learned:
        points = sorted({r["quality"] for r in rows if r["codec"] == codec})
        if len(points) < 4:
            continue
        half = len(points) // 2
        for name, keep in (("lower", set(points[:half])), ("upper", set(points[half:]))):
            cut = [r for r in rows if r["codec"] != codec or r["quality"] in keep]
            cells = [codec, f"{name}: {min(keep)}-{max(keep)}"]
            cells += [_cell(bd_summary(cut, a, codec, metric), n_images) for a in against]
            lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def _mean_curves(rows: list[dict], metric: str) -> dict[str, tuple[list, list]]:
    """Per codec: (mean bpp, mean metric) at each setting, over the images."""
    curves = {}
    for codec in dict.fromkeys(r["codec"] for r in rows):
        pts = []
        for q in dict.fromkeys(r["quality"] for r in rows if r["codec"] == codec):
            sub = [r for r in rows if r["codec"] == codec and r["quality"] == q]
            vals = [r[metric] for r in sub]
            if metric == "ms_ssim":
                vals = [-10 * math.log10(max(1 - v, 1e-10)) for v in vals]
            pts.append((np.mean([r["bpp"] for r in sub]), np.nanmean(vals) if vals else math.nan))
        pts.sort()
        curves[codec] = ([p[0] for p in pts], [p[1] for p in pts])
    return curves


def plots(result: dict, out: Path) -> list[Path]:
    """Write rd_curves.png and complexity_vs_bdrate.png; return their paths."""
    import warnings

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, info = result["rows"], result["meta"]["codecs"]
    dname = next(iter(datasets(rows)))
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    for ax, metric, label in ((axes[0], "psnr_yuv", "PSNR-YUV (dB)"),
                              (axes[1], "ms_ssim", "MS-SSIM (dB)")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN MS-SSIM of tiny images
            curves = _mean_curves(rows, metric)
        for codec, (x, y) in curves.items():
            style = "--" if info.get(codec, {}).get("kind") == "classical" else "-"
            ax.plot(x, y, style, marker="o", ms=3, label=codec)
        ax.set(xlabel="bits per pixel (mean over images)", ylabel=label, xlim=(0, 2.5),
               title=f"{label} vs rate, {dname}")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    rd_png = out / "rd_curves.png"
    fig.savefig(rd_png, dpi=120)
    plt.close(fig)

    bd = {b["codec"]: b for b in result["bd"] if b["dataset"] == dname and b["anchor"] == "jpeg"
          and b["metric"] == "psnr_yuv" and math.isfinite(b["bd_rate"])}
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    ours = [(info[c]["kmac_px"], b["bd_rate"], c) for c, b in bd.items()
            if info.get(c, {}).get("kmac_px") is not None]
    for x, y, name in ours:
        axes[0].scatter(x, y)
        axes[0].annotate(name, (x, y), fontsize=8)
    if ours:
        axes[0].set_xscale("log")
    else:
        axes[0].text(0.5, 0.5, "no learned model with a MAC count yet", ha="center",
                     transform=axes[0].transAxes)
    axes[0].set(xlabel="decoder kMAC/px", title="learned codecs: decoder cost")
    for c, b in bd.items():
        ms = 1000 * np.mean([r["decode_cpu_s"] for r in rows if r["codec"] == c])
        axes[1].scatter(ms, b["bd_rate"], marker="s" if info.get(c, {}).get("kind") == "classical" else "o")
        axes[1].annotate(c, (ms, b["bd_rate"]), fontsize=8)
    axes[1].set_xscale("log")
    axes[1].set(xlabel="decode CPU time per image (ms, one thread)", title="all codecs: decode time")
    for ax in axes:
        ax.set_ylabel("BD-rate vs JPEG, PSNR-YUV (%)")
        ax.axhline(0, color="gray", lw=0.5)
        ax.grid(alpha=0.3)
    fig.suptitle(f"Cost vs BD-rate ({dname}; lower is better on both axes)")
    fig.tight_layout()
    cx_png = out / "complexity_vs_bdrate.png"
    fig.savefig(cx_png, dpi=120)
    plt.close(fig)
    return [rd_png, cx_png]


def _write_csv(path: Path, fields: list[str], rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def write_results(result: dict, out: str | Path) -> list[Path]:
    """Compute the BD figures into ``result`` and write every results file; return their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result["bd"] = compute_bd(result)
    _write_csv(out / "rd.csv", FIELDS, result["rows"])
    _write_csv(out / "bd.csv", BD_FIELDS, result["bd"])
    # NaN is not JSON: write null (MS-SSIM of images too small for it, BD of non-overlapping curves).
    clean = json.loads(json.dumps(result), parse_constant=lambda _: None)
    (out / "rd.json").write_text(json.dumps(clean, indent=1) + "\n")
    (out / "rd.md").write_text(markdown(result))
    return [out / n for n in ("rd.csv", "bd.csv", "rd.json", "rd.md")] + plots(result, out)


def load_result(out: str | Path) -> dict:
    """Read results/rd.json back (nulls become NaN) to rebuild the report."""
    path = Path(out) / "rd.json"
    if not path.is_file():
        raise FileNotFoundError(f"no {path}: run `python -m benchmarks rd` first")
    result = json.loads(path.read_text())
    for r in result["rows"]:
        for k in ("psnr_rgb", "psnr_yuv", "ms_ssim"):
            r[k] = math.nan if r[k] is None else r[k]
    return result


def save_figure(fig, ax, path) -> None:
    """Finish a one-axes benchmark plot the same way everywhere (grid, legend) and write it as PNG."""
    import matplotlib.pyplot as plt

    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
