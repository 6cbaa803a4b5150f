"""The distillation ablation: the same student, the same steps and data, with and without the
distillation terms; BD-rate of the distilled one against the RD-only one on the evaluation set,
from real bitstreams. Writes results/distill_ablation.{md,json}.

    python -m distill.ablation --teacher weights/teacher.safetensors --student student-2k [--steps N]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from codec.paths import RUNS_DIR


def run(student: str, teacher: str, steps: int | None, out: Path, images: int | None = None) -> dict:
    """Train both variants, benchmark them, write the results files; returns the summary."""
    from evaluation.codecs import LearnedCodec, PillowJPEG
    from evaluation.compare import compare
    from photos import ensure_data, eval_images, train_images

    from .losses import KDWeights
    from .train import distill

    ensure_data()
    out.mkdir(parents=True, exist_ok=True)
    runs = {}
    for label, kd in (("rd-only", KDWeights(0, 0, 0)), ("distilled", KDWeights())):
        start = time.monotonic()
        summary = distill(student, teacher, RUNS_DIR / f"ablation-{student}-{label}", train_images(),
                          "quick", kd, steps, resume=False)
        summary["train_seconds"] = round(time.monotonic() - start, 1)
        runs[label] = summary
    run = compare(eval_images()[:images], [LearnedCodec(label, runs[label]["weights"]) for label in runs]
                  + [PillowJPEG()])
    rows = run.rows
    result = {"student": student, "teacher": teacher, "steps": runs["rd-only"]["steps"], "runs": runs,
              "bd": {m: run.bd("rd-only", "distilled", m) for m in ("psnr_yuv", "psnr_rgb", "ms_ssim")},
              "vs_jpeg": {label: run.bd("jpeg", label) for label in runs},
              "command": "python -m distill.ablation " + " ".join(sys.argv[1:])}
    (out / "distill_ablation.json").write_text(json.dumps({**result, "rows": rows}, indent=1))
    (out / "distill_ablation.md").write_text(markdown(result))
    return result


def markdown(r: dict) -> str:
    """The ablation as a Markdown table."""
    lines = [f"# Distillation ablation: {r['student']}", "",
             f"Made by `{r['command']}`. Both runs: {r['steps']} steps of the quick profile, same data, "
             f"same seed; teacher `{r['teacher']}`. BD over the evaluation set from real bitstreams "
             "(bjontegaard, Akima, per image then averaged).", "",
             "| metric | BD-rate distilled vs RD-only | BD-quality | images |", "|---|---:|---:|---:|"]
    for m, s in r["bd"].items():
        lines.append(f"| {m} | {s['bd_rate']:+.2f}% | {s['bd_quality_db']:+.3f} dB | {s['n_images']} |")
    lines += ["", "| run | train s | BD-rate vs JPEG (PSNR-YUV) |", "|---|---:|---:|"]
    for label, s in r["vs_jpeg"].items():
        lines.append(f"| {label} | {r['runs'][label]['train_seconds']} | {s['bd_rate']:+.2f}% ({s['n_images']} img) |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m distill.ablation", description=__doc__.splitlines()[0])
    p.add_argument("--student", default="student-2k")
    p.add_argument("--teacher", default="weights/teacher.safetensors")
    p.add_argument("--steps", type=int, help="steps of each run (default: the quick profile's)")
    p.add_argument("--images", type=int, help="evaluate on the first N evaluation images only")
    p.add_argument("--out", default="results")
    a = p.parse_args(argv)
    from codec.cli_util import fail
    try:
        r = run(a.student, a.teacher, a.steps, Path(a.out), a.images)
    except (ValueError, OSError, KeyError, RuntimeError) as e:
        return fail(e)
    print(markdown(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
