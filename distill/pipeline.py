"""`make distill`: the whole job on one machine, from data to an RD summary.

    data -> teacher (shipped weights, or a quick training) -> distil the student -> prune it (one round)
    -> ONNX export, FP32 and INT8 -> budget report -> RD of teacher vs student vs JPEG on the evaluation set.
Everything lands in runs/pipeline-PROFILE/.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


PRUNE_TARGET = {"student-1k": 0.5, "student-2k": 1.6, "student-4k": 3.0}  # decoder kMAC/px


def _stage(title: str) -> float:
    print(f"\n=== {title} ===", flush=True)
    return time.monotonic()


def _teacher_weights(profile: str, run: Path, retrain: bool) -> tuple[str, Path]:
    """(benchmark name, weights path) of the teacher: the shipped one unless asked to train."""
    from codec.weights import shipped_weights
    shipped = shipped_weights("teacher")
    if shipped.is_file() and not retrain:
        print(f"using the shipped teacher {shipped}")
        return "teacher", shipped
    from teacher.__main__ import main as teacher_main
    out = run / "teacher-quick" / "teacher.safetensors"
    if not out.is_file():
        print("no shipped teacher weights: training the teacher's quick profile")
        if teacher_main(["train", "--profile", "quick", "--run-dir", str(out.parent), "--out", str(out)]):
            raise RuntimeError("teacher training failed")
    return "teacher-quick", out


def run(profile: str, student: str, retrain_teacher: bool = False, images: int | None = None,
        steps: int | None = None) -> Path:
    """Run the pipeline; returns the folder holding its outputs."""
    from codec.data import ensure_data, train_images

    from .train import distill

    run_dir = Path(f"runs/pipeline-{profile}")
    run_dir.mkdir(parents=True, exist_ok=True)
    timings = {}

    t = _stage("1/7 data")
    ensure_data()
    timings["data"] = time.monotonic() - t

    t = _stage("2/7 teacher")
    t_name, t_weights = _teacher_weights(profile, run_dir, retrain_teacher)
    timings["teacher"] = time.monotonic() - t

    t = _stage(f"3/7 distil {student} ({profile} profile)")
    s_weights = run_dir / f"{student}.safetensors"
    summary = distill(student, t_weights, run_dir / f"distill-{student}", train_images(), profile,
                      steps=steps, out=s_weights)
    timings["distill"] = time.monotonic() - t

    t = _stage(f"4/7 prune {student} to {PRUNE_TARGET[student]} kMAC/px (one round, short fine-tuning)")
    from .prune_cli import main as prune_main
    pruned = run_dir / f"{student}-pruned.safetensors"
    if prune_main(["--student", str(s_weights), "--teacher", str(t_weights), "--target-kmac",
                   str(PRUNE_TARGET[student]), "--rounds", "1", "--finetune-steps", "100", "--no-rd",
                   "--quiet", "-o", str(pruned), "--run-dir", str(run_dir / "prune"),
                   "--results", str(run_dir / "prune")]):
        raise RuntimeError("pruning failed")
    timings["prune"] = time.monotonic() - t

    t = _stage(f"5/7 export {student} to ONNX, FP32 and INT8")
    from export.__main__ import main as export_main
    if export_main(["--model", str(s_weights), "-o", str(run_dir / "onnx"), "--int8", "--calib", "8"]):
        raise RuntimeError("ONNX export failed")
    timings["export"] = time.monotonic() - t

    t = _stage("6/7 budget report")
    from profiling.__main__ import main as profiling_main
    profiling_main(["all", "--out", str(run_dir / "report")])
    timings["report"] = time.monotonic() - t

    t = _stage("7/7 rate-distortion on the evaluation set (real bitstreams)")
    from benchmarks.__main__ import main as bench_main
    s_name = f"{student}-{profile}"
    argv = ["rd", "--codecs", f"jpeg,{t_name},{s_name}", "--weights", f"{s_name}={s_weights}",
            "--out", str(run_dir / "rd")]
    if t_name != "teacher":
        argv += ["--weights", f"{t_name}={t_weights}"]
    if images:
        argv += ["--images", str(images)]
    if bench_main(argv):
        raise RuntimeError("RD benchmark failed")
    timings["rd"] = time.monotonic() - t

    summary["timings_s"] = {k: round(v, 1) for k, v in timings.items()}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"\nRD table: {run_dir / 'rd' / 'rd.md'}\nbudget: {run_dir / 'report' / 'budget.md'}")
    print(f"stage times (s): {summary['timings_s']}")
    return run_dir


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m distill.pipeline", description=__doc__.splitlines()[0])
    p.add_argument("--profile", choices=("quick", "full"), default="quick")
    p.add_argument("--student", default="student-2k")
    p.add_argument("--retrain-teacher", action="store_true", help="train the teacher's quick profile "
                   "even when shipped weights exist")
    p.add_argument("--images", type=int, help="evaluate on the first N evaluation images only")
    p.add_argument("--steps", type=int, help="override the distillation profile's step count")
    a = p.parse_args(argv)
    from codec.cli_util import fail
    try:
        run(a.profile, a.student, a.retrain_teacher, a.images, a.steps)
    except (ValueError, OSError, KeyError, RuntimeError) as e:
        return fail(e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
