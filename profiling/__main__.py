"""Command line of the MAC profiler.

    python -m profiling report --model SPEC [--budget MAC_PER_PX] [--height H --width W] [--format table|json|md]
    python -m profiling all [--out reports] [--height H --width W] [--budget MAC_PER_PX]

SPEC: a preset (``teacher``, any student), a ``.safetensors`` checkpoint or ``compressai:NAME:QUALITY``.
``report --budget N`` exits 2 when the decoder needs more than N MAC per pixel; errors exit 1.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from codec.cli_util import fail

OVER_BUDGET = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line and exit 1, like every other error of this tool
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(1)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m profiling", description="MACs per luma pixel, encoder and decoder, per module.")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    r = sub.add_parser("report", help="profile one model")
    r.add_argument("--model", required=True, help="preset, .safetensors checkpoint or compressai:NAME:QUALITY")
    r.add_argument("--format", choices=("table", "json", "md"), default="table")
    a = sub.add_parser("all", help="write reports/budget.{md,json} and the decoder chart for every preset")
    a.add_argument("--out", default="reports", help="output folder (default: reports)")
    for s, default in ((r, None), (a, 2000.0)):
        s.add_argument("--budget", type=float, default=default, help="decoder budget in MAC per pixel")
        s.add_argument("--height", type=int, default=512, help="picture height (padded up to the model's multiple)")
        s.add_argument("--width", type=int, default=768, help="picture width (padded up to the model's multiple)")
    return p


def budget_message(report, budget: float) -> tuple[bool, str]:
    """(over budget?, one-line verdict naming the heaviest decoder modules when over)."""
    need = report.total("decoder") * 1000
    if need <= budget:
        return False, f"within budget: decoder {need:,.0f} MAC/px <= {budget:,.0f} MAC/px (margin {budget - need:,.0f})"
    top = ", ".join(f"{r.label} {report.kmac(r.macs) * 1000:,.0f} ({report.kmac(r.macs) * 1000 / need:.1%})"
                    for r in report.heaviest("decoder"))
    return True, (f"over budget: decoder needs {need:,.0f} MAC/px, budget {budget:,.0f} MAC/px: over by "
                  f"{need - budget:,.0f} ({need / budget:.2f}x the budget); heaviest decoder modules: {top}")


def cmd_report(a) -> int:
    from . import profile_model

    report = profile_model(a.model, a.height, a.width)
    text = {"table": report.to_table, "json": report.to_json, "md": report.to_markdown}[a.format]()
    print(text)
    if a.budget is None:
        return 0
    over, msg = budget_message(report, a.budget)
    print(msg, file=sys.stderr)
    return OVER_BUDGET if over else 0


def cmd_all(a) -> int:
    from tqdm import tqdm

    from codec.registry import list_models

    from . import profile_model
    from .chart import decoder_chart
    from .effort import effort_rows
    from .profile import TEACHER
    from .specs import resolve

    names = [TEACHER] + [n for n in list_models() if n != TEACHER]
    reports = [profile_model(n, a.height, a.width) for n in tqdm(names, desc="profiling", unit="model")]
    efforts = {r.model: effort_rows(resolve(r.model).model, r) for r in tqdm(reports, desc="effort levels", unit="model")}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    chart = decoder_chart(reports, out / "budget_decoder.png")
    (out / "budget.json").write_text(json.dumps(
        {"picture": {"height": a.height, "width": a.width}, "budget_mac_per_px": a.budget,
         "models": {r.model: r.to_dict() for r in reports}, "effort_levels": efforts}, indent=2) + "\n")
    (out / "budget.md").write_text(_summary_md(reports, a.budget, chart.name, efforts))
    for p in (out / "budget.md", out / "budget.json", chart):
        print(p)
    return 0


def _effort_md(efforts: dict) -> list[str]:
    lines = ["## Encoder effort levels", "",
             "`python -m codec encode --effort slow|max` spends encoding time on refining one picture's latents "
             "for the same decoder (`codec.refine`). Cost per iteration: one forward and one backward pass of "
             "the decoder side to the latents, counted by torch's FlopCounterMode on a real iteration at this "
             "picture size (masked convolutions dense: an upper bound). The challenge's 35x encoder budget holds "
             "for `fast` only; the other levels are for users who choose to spend encode time.", "",
             "| model | effort | iterations (cap) | kMAC/px per iteration | encoder kMAC/px | ratio enc vs teacher |",
             "|---|---|---:|---:|---:|---:|"]
    for model, rows in efforts.items():
        for r in rows:
            ratio = f"{r['ratio_vs_teacher']:.2f}x" if r["ratio_vs_teacher"] else ""
            lines.append(f"| {model} | {r['level']} | {r['iterations']} | {r['kmac_per_iteration']:.2f} | "
                         f"{r['encoder_kmac']:,.1f} | {ratio} |")
    return lines + [""]


def _summary_md(reports, budget: float, chart: str, efforts: dict | None = None) -> str:
    r0 = reports[0]
    lines = ["# Compute budget", "",
             f"kMAC per luma pixel at {r0.width}x{r0.height}, by the MAC convention of DESIGN.md. "
             f"Decoder budget: {budget:,.0f} MAC/px. Ratios are teacher / model (the challenge asks >= 35x).",
             "Regenerate with `make report` (`python -m profiling all --out reports`).", "",
             "| model | encoder kMAC/px | decoder kMAC/px | encoder params | decoder params | "
             "ratio enc | ratio dec | decoder vs budget |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in reports:
        over, _ = budget_message(r, budget)
        need = r.total("decoder") * 1000
        verdict = f"over by {need - budget:,.0f}" if over else f"within ({budget - need:,.0f} spare)"
        lines.append(f"| {r.model} | {r.total('encoder'):.3f} | {r.total('decoder'):.3f} | "
                     f"{r.params('encoder'):,} | {r.params('decoder'):,} | {r.ratio('encoder'):.2f}x | "
                     f"{r.ratio('decoder'):.2f}x | {verdict} |")
    lines += ["", f"![decoder cost per module]({chart})", ""]
    if efforts:
        lines += _effort_md(efforts)
    return "\n".join(lines) + "\n" + "\n".join(r.to_markdown(level=2) for r in reports)


def main(argv=None) -> int:
    """Entry point; returns the exit status."""
    try:
        a = _parser().parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (1, already printed)
        return e.code if isinstance(e.code, int) else 1
    from codec.weights import WeightsError

    from .counter import ProfilingError
    try:
        return cmd_report(a) if a.cmd == "report" else cmd_all(a)
    except (ProfilingError, WeightsError, ValueError, KeyError, OSError) as e:
        return fail(e.args[0] if isinstance(e, KeyError) and e.args else e)


if __name__ == "__main__":
    sys.exit(main())
