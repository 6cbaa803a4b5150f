"""The last screen of `make distill`, and the same content as summary.json and summary.md.

Everything here renders one summary dict (JSON-able, written as summary.json); the figures in it are
the pipeline's own measurements (profiler, real bitstreams of the RD stage, ONNX decode timings).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

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


# ---- the summary ------------------------------------------------------------------------------------
def build_summary(entries: dict, rd: dict, images: list[Path], teacher_images: list[Path], meta: dict) -> dict:
    """The summary dict (summary.json) from the entries and the RD rows: BD-rates, checks, verdicts."""
    from evaluation.bdrate import bd_summary


    rows = rd["result"]["rows"]
    webp = "webp"
    table = []
    for key in ("teacher", "shipped", "student", "pruned", "int8"):
        e = entries.get(key)
        if e is None:
            continue
        r = {"key": key, "label": e.label, "codec": e.codec, "weights": str(e.weights),
             "decoder_kmac": e.report.total("decoder") if e.report else None,
             "encoder_kmac": e.report.total("encoder") if e.report else None,
             "encoder_ratio": e.report.ratio("encoder") if e.report else None,
             "decoder_ratio": e.report.ratio("decoder") if e.report else None,
             "bd_jpeg": bd_summary(rows, "jpeg", e.codec, "psnr_yuv"),
             "bd_webp": bd_summary(rows, webp, e.codec, "psnr_yuv"),
             "input": e.input if e.input in entries else None,
             "onnx_fp32_ms": e.onnx_ms.get("fp32"), "onnx_int8_ms": e.onnx_ms.get("int8"),
             "onnx_dir": str(e.onnx_dir) if e.onnx_dir else None, "note": e.note,
             "images": len({x["image"] for x in rows if x["codec"] == e.codec})}
        if r["input"]:
            r["vs_input"] = bd_summary(rows, entries[r["input"]].codec, e.codec, "psnr_yuv")
        table.append(r)
    by_key = {r["key"]: r for r in table}
    t = by_key.get("teacher")
    if t is not None:
        prov = rd["teacher"]
        how = (f"cached from a run on {prov['date']} ({prov['file']}; same model id, same image bytes)"
               if prov.get("cached") else f"measured in this run ({prov.get('seconds', 0):.0f} s)")
        if len(teacher_images) < len(images):
            t["note"] = (f"RD on {len(teacher_images)} of the {len(images)} evaluation images "
                         f"({', '.join(p.stem for p in teacher_images)}), {how}: the 70 kMAC/px teacher codes at "
                         "about 1 s per picture, so its BD-rates are over those images only")
        else:
            t["note"] = f"RD on all {len(images)} evaluation images, {how}"
        if t.get("onnx_fp32_ms") is None:
            t["note"] += "; ONNX decode not timed (--no-teacher-onnx)"
    stage_names = {"student": "distillation", "pruned": "pruning", "int8": "INT8 export"}
    checks = [check(stage_names[r["key"]], r, by_key) for r in table if r.get("input")]

    verdicts = []
    d = meta["distillation"]
    kd_label = {"student": f"the shipped {meta['student']} itself (self-distillation)",
                "teacher": f"the VMuC teacher ({d['kd_teacher_weights']})",
                "none": "none (RD loss only)"}[d["kd_teacher"]]
    line = (f"Distillation: {d['steps']} steps from {d['init'] or 'random weights'} at lr {d['lr']:g}; "
            f"teacher: {kd_label}. Why: {meta['kd_why']}")
    s, tt = by_key.get("shipped"), by_key.get("teacher")
    if s and tt and finite(s["bd_jpeg"]["bd_rate"]) and finite(tt["bd_jpeg"]["bd_rate"]):
        line += (f" (measured here: teacher {tt['bd_jpeg']['bd_rate']:+.1f}% vs JPEG on {tt['bd_jpeg']['n_images']} "
                 f"images, shipped student {s['bd_jpeg']['bd_rate']:+.1f}% on {s['bd_jpeg']['n_images']}).")
    verdicts.append(line)
    verdicts += [c["text"] for c in checks]
    for r in table:
        note = ranking_note(r, by_key[r["input"]], rows) if r.get("input") else None
        if note:
            verdicts.append(note)
    p = meta["pruning"]
    if not p["reached"]:
        verdicts.append(f"Pruning stopped at {p['decoder_kmac']:.3f} kMAC/px, above the {p['target_kmac']} target "
                        "(every stream at its floor).")
    st = by_key["student"]
    sj = st["bd_jpeg"]["bd_rate"]
    worse = next((c for c in checks if c["row"] == "student" and c["verdict"] == "worse"), None)
    if worse:
        best = f"the shipped weights ({by_key['shipped']['weights']}) stay the better codec: the pipeline's " \
               f"student lost {worse['bd_rate']:+.1f}% BD-rate against them"
    elif finite(sj) and sj < 0:
        best = (f"{st['weights']} codes {-sj:.1f}% fewer bits than JPEG at equal PSNR-YUV "
                f"({st['decoder_kmac']:.3f} decoder kMAC/px; "
                f"{'better' if st['bd_webp']['bd_rate'] < 0 else 'worse'} than WebP by "
                f"{abs(st['bd_webp']['bd_rate']):.1f}%)")
    else:
        best = f"none: {st['weights']} does not beat JPEG (BD-rate vs JPEG: {bd_txt(st['bd_jpeg'])})"
    verdicts.append(f"Codec worth having: {best}.")
    worse_all = [c for c in checks if c["verdict"] == "worse"]
    unknown = [c["stage"] for c in checks if c["verdict"] == "unmeasured"]
    verdicts.append(f"Stages that left their model worse than the ~{NOISE:.0f}% noise: "
                    + (", ".join(f"{c['stage']} ({c['bd_rate']:+.1f}%)" for c in worse_all) if worse_all else "none")
                    + (f" (not measurable: {', '.join(unknown)})" if unknown else "") + ".")
    return {**{k: v for k, v in meta.items() if k != "kd_why"}, "rows": table, "checks": checks,
            "verdicts": verdicts, "eval_images": [p.stem for p in images],
            "teacher_images": [p.stem for p in teacher_images], "webp": rd["webp"], "classical": rd["classical"],
            "classical_left_out": rd["left_out"]}


def bd_txt(bd: dict) -> str:
    return bd_cell(bd)


def next_commands(student: str, profile: str, out: Path, entries: dict) -> list[dict]:
    w = entries["student"].weights
    return [
        {"what": "the full profile (hours; resumes after an interruption)",
         "command": f"make distill PROFILE=full STUDENT={student}   "
                    f"# = python -m pipeline --profile full --student {student}"},
        {"what": "phone export of the pipeline's student (ONNX FP32 + INT8 + ORT format)",
         "command": f"python -m export --model {w} -o {out / 'phone'} --int8"},
        {"what": "every codec and model side by side (classical codecs: make install-codecs)",
         "command": "make bench"},
    ]


def machine_note() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    cores = os.cpu_count() or 1
    busy = "shared with other jobs" if load > 0.5 else "otherwise idle"
    return f"{cores} cores, load {load:.1f} at the end: {busy}"


def write_summary(summary: dict, out: Path) -> None:
    """summary.json, summary.md, and the final screen on stdout."""

    clean = json.loads(json.dumps(summary, default=str), parse_constant=lambda _: None)
    (out / "summary.json").write_text(json.dumps(clean, indent=1) + "\n")
    (out / "summary.md").write_text(markdown(summary))
    print(screen(summary), flush=True)
