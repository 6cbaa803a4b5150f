"""The last screen of `make distill`, and the same content as summary.json and summary.md.

Everything here renders one summary dict (JSON-able, written as summary.json); the figures in it are
the pipeline's own measurements (profiler, real bitstreams of the RD stage, ONNX decode timings).
"""
from __future__ import annotations

import math

NOISE = 1.0   # % BD-rate: the spread of the same fine-tuning with another seed (README, seed-module ablation)

COLUMNS = ("model", "decoder kMAC/px", "encoder ratio vs teacher", "BD-rate vs JPEG", "BD-rate vs WebP",
           "vs its input", "ONNX FP32 ms", "ONNX INT8 ms")


def finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def bd_cell(bd: dict | None, n_total: int | None = None, dq: bool = False) -> str:
    """'-6.0%' (with '/ -0.57 dB' when ``dq``), '(n/N)' when fewer images than N overlapped."""
    if not bd:
        return "-"
    if not finite(bd.get("bd_rate")):
        return "no overlap" if bd.get("n_skipped") else "n/a"
    text = f"{bd['bd_rate']:+.1f}%"
    if dq:
        text += f" / {bd['bd_quality_db']:+.2f} dB"
    if n_total and bd["n_images"] != n_total:
        text += f" ({bd['n_images']}/{n_total})"
    return text


def check(stage: str, row: dict, inputs: dict[str, dict]) -> dict:
    """Did ``row`` leave its input model worse by more than the noise? One finding, with a sentence."""
    src = inputs[row["input"]]
    bd = row.get("vs_input") or {}
    rate = bd.get("bd_rate")
    out = {"stage": stage, "row": row["key"], "input": src["key"], "bd_rate": rate,
           "bd_quality_db": bd.get("bd_quality_db"), "n_images": bd.get("n_images", 0)}
    what = f"{stage}: {row['label']} against {src['label']}"
    if not finite(rate):
        out["verdict"] = "unmeasured"
        out["text"] = f"{what}: BD-rate undefined (the RD curves do not overlap); quality change unknown."
    elif rate > NOISE:
        out["verdict"] = "worse"
        out["text"] = (f"{what}: WORSE by {rate:+.1f}% BD-rate ({bd['bd_quality_db']:+.2f} dB), more than the "
                       f"~{NOISE:.0f}% measurement noise.")
    elif rate < -NOISE:
        out["verdict"] = "better"
        out["text"] = f"{what}: better, {rate:+.1f}% BD-rate ({bd['bd_quality_db']:+.2f} dB)."
    else:
        out["verdict"] = "same"
        out["text"] = (f"{what}: {rate:+.1f}% BD-rate ({bd['bd_quality_db']:+.2f} dB), within the ~{NOISE:.0f}% "
                       "measurement noise: no loss.")
    return out


def ranking_note(row: dict, src: dict, rd_rows: list[dict], anchor: str = "jpeg") -> str | None:
    """A sentence when the anchor columns rank ``row`` and its input the other way round from their direct
    comparison (each BD-rate averages over the rates both of its curves cover, and the anchor's curve may
    not reach the rates where the two models differ); None when they agree or the gap is within the noise."""
    direct = (row.get("vs_input") or {}).get("bd_rate")
    a, b = (row.get(f"bd_{anchor}") or {}), (src.get(f"bd_{anchor}") or {})
    if not all(finite(x) for x in (direct, a.get("bd_rate"), b.get("bd_rate"))):
        return None
    gap = a["bd_rate"] - b["bd_rate"]
    if not ((direct < -NOISE and gap > NOISE) or (direct > NOISE and gap < -NOISE)):
        return None
    lows: dict[str, float] = {}
    for r in rd_rows:
        if r["codec"] == anchor:
            lows[r["image"]] = min(lows.get(r["image"], math.inf), r["bpp"])
    low = sum(lows.values()) / len(lows) if lows else math.nan
    mine = [r["bpp"] for r in rd_rows if r["codec"] == row["codec"]]
    name = anchor.upper() if anchor == "jpeg" else anchor
    return (f"{row['label']} against {src['label']}: {direct:+.1f}% BD-rate directly, yet {a['bd_rate']:+.1f}% "
            f"against {b['bd_rate']:+.1f}% vs {name}. Each BD-rate averages over the rates both of its curves "
            f"cover: {name}'s lowest setting averages {low:.2f} bpp per image while the models go down to "
            f"{min(mine):.2f} bpp, so the {name} column leaves out low rates the direct comparison counts; "
            f"BD-PSNR vs {name} ({a['bd_quality_db']:+.2f} dB against {b['bd_quality_db']:+.2f} dB) and the "
            "RD plot show where each is ahead.")


def _ms(x) -> str:
    return f"{x:.0f}" if finite(x) else "-"


def table_cells(s: dict) -> list[list[str]]:
    """The table's rows as strings, in COLUMNS order."""
    n = len(s["eval_images"])
    out = []
    for r in s["rows"]:
        label = r["label"] + (" *" if r.get("note") else "")
        ratio = r.get("encoder_ratio")
        out.append([label, f"{r['decoder_kmac']:.3f}" if finite(r.get("decoder_kmac")) else "-",
                    f"{ratio:.1f}x" if finite(ratio) else "-",
                    bd_cell(r.get("bd_jpeg"), n), bd_cell(r.get("bd_webp"), n),
                    bd_cell(r.get("vs_input"), n) if r.get("input") else "-",
                    _ms(r.get("onnx_fp32_ms")), _ms(r.get("onnx_int8_ms"))])
    return out


def _columns(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for k, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


HEAD_SHORT = ("model", "dec kMAC/px", "enc ratio", "vs JPEG", "vs WebP", "vs input", "ONNX FP32 ms", "INT8 ms")


def _intro(s: dict) -> list[str]:
    return [f"BD-rate on PSNR-YUV ({len(s['eval_images'])} evaluation images, real bitstreams, per image then "
            f"averaged; negative = fewer bits than the anchor); WebP: {s['webp']}; `vs input`: against the model "
            "the row was made from; kMAC per luma pixel and ratios from the profiler at 768x512; "
            f"ONNX decode: one 768x512 picture at quality 3, 1 thread, fastest of {s['timing_runs']} decodes "
            "(the teacher's of 2)."]


def screen(s: dict) -> str:
    """The final screen: the table, notes, verdicts, files, next commands."""
    title = (f"make distill: {s['student']}, {s['profile']} profile - {s['wall_s'] / 60:.1f} min "
             f"({s['machine_note']})")
    lines = ["", "=" * len(title), title, "=" * len(title)]
    lines += _columns([list(HEAD_SHORT)] + table_cells(s))
    lines += ["", *_intro(s)]
    lines += [f"* {r['label']}: {r['note']}" for r in s["rows"] if r.get("note")]
    lines += ["", "Verdict:"] + [f"  - {v}" for v in s["verdicts"]]
    lines += ["", "Files:"] + [f"  {k:<22} {v}" for k, v in s["files"].items()]
    lines += ["", "Next:"] + [f"  {n['what']}:\n      {n['command']}" for n in s["next"]]
    return "\n".join(lines) + "\n"


def markdown(s: dict) -> str:
    """summary.md: the same content as the screen, with BD-PSNR in the cells."""
    n = len(s["eval_images"])
    lines = [f"# make distill: {s['student']}, {s['profile']} profile", "",
             f"Run {s['date']} in {s['wall_s'] / 60:.1f} min ({s['machine_note']}; {s['machine']}).", "",
             *_intro(s), "",
             "| " + " | ".join(COLUMNS) + " |", "|---|" + "---:|" * (len(COLUMNS) - 1)]
    for r, cells in zip(s["rows"], table_cells(s)):
        cells[3] = bd_cell(r.get("bd_jpeg"), n, dq=True)
        cells[4] = bd_cell(r.get("bd_webp"), n, dq=True)
        if r.get("input"):
            cells[5] = bd_cell(r.get("vs_input"), n, dq=True)
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines += [f"\\* {r['label']}: {r['note']}" + "  " for r in s["rows"] if r.get("note")]
    lines += ["", "## Verdict", ""] + [f"- {v}" for v in s["verdicts"]]
    lines += ["", "## Stages", "", "| stage | seconds |", "|---|---:|"]
    lines += [f"| {k} | {v:.0f} |" for k, v in s["stage_s"].items()]
    lines += ["", "## Files", ""] + [f"- {k}: `{v}`" for k, v in s["files"].items()]
    lines += ["", "## Next", ""] + [f"- {x['what']}: `{x['command']}`" for x in s["next"]]
    return "\n".join(lines) + "\n"
