"""`make distill`: the whole job on one machine, from the data to one screen that says what it made.

    data -> models (shipped teacher and student) -> distil the student -> prune it, recover by distillation
    -> ONNX export, FP32 and INT8 -> MAC budget -> ONNX decode time -> RD on the evaluation set -> summary

The quick profile starts from the shipped student (weights/STUDENT.safetensors) and self-distils it for
300 steps (the shipped student is its own teacher: the shipped VMuC teacher is the weaker codec; learning
rate: FINETUNE); ``--from scratch`` (the full profile's default) trains from random weights with the VMuC
teacher. The stages hand on loaded models and the paths of what they wrote (``Entry``): the
distilled weights go to pruning, both to export, every model to the profiler, the timing and the RD stage.
Everything lands in runs/pipeline-PROFILE/ (summary.json, summary.md, weights, onnx/, rd/, report/).
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

from codec.paths import RUNS_DIR

from .clock import COST, REF_STEP, Clock, dur, calibrate
from .stages import (FINETUNE, PRUNE, PRUNE_TARGET, Entry, teacher_weights, kd_choice, stage_distill,
                     stage_export, stage_profile, stage_prune, stage_rd, stage_timing)
from .summary import build_summary, machine_note, next_commands, write_summary

TEACHER_IMAGES = {"quick": 3, "full": 0}          # RD images of the slow teacher (0: all)
CLASSICAL = {"quick": "jpeg,webp", "full": "installed"}
RD_CACHE = RUNS_DIR / "rd-cache"


# ---- the pipeline -----------------------------------------------------------------------------------
def run(profile: str = "quick", student: str = "student-2k", *, start: str | None = None,
        kd_teacher: str = "auto", out_dir: str | Path | None = None, images: int | None = None,
        teacher_images: int | None = None, steps: int | None = None, prune_steps: int | None = None,
        prune_rounds: int | None = None, prune_target: float | None = None, classical: str | None = None,
        int8_of: str = "student", threads: int = 0, calib: int = 16, timing_runs: int = 5,
        teacher_onnx: bool = True, rd_cache: str | Path | None = RD_CACHE, retrain_teacher: bool = False,
        progress: bool = True) -> Path:
    """Run the pipeline; returns the folder holding its outputs (summary.json, summary.md, ...).

    ``start``: 'shipped' (the quick profile's default) or 'scratch' (the full profile's); ``kd_teacher``:
    'auto' (the shipped student when starting from it, else the VMuC teacher), 'student', 'teacher' or
    'none'; ``images``: the first N evaluation images (default all); ``teacher_images``: of those, how many
    the slow teacher codes (default 3 in the quick profile, 0 = all); ``steps``/``prune_steps``/
    ``prune_rounds``/``prune_target``: override the profile; ``classical``: 'installed' or names (JPEG and
    WebP always); ``int8_of``: 'student' or 'pruned', the model of the INT8 row; ``rd_cache``: folder of the
    teacher's cached RD rows (None: no cache)."""
    import torch

    from photos import ensure_data, eval_images, train_images
    from training import auto_threads
    from codec.weights import load_model, shipped_weights

    from evaluation.machine import machine

    from distill.train import PROFILES

    if profile not in PRUNE or student not in PRUNE_TARGET:
        raise ValueError(f"profile must be quick or full and student one of {', '.join(PRUNE_TARGET)}")
    if int8_of not in ("student", "pruned"):
        raise ValueError("int8_of must be 'student' or 'pruned'")
    start = start or ("shipped" if profile == "quick" else "scratch")
    if start not in ("shipped", "scratch"):
        raise ValueError(f"--from must be shipped or scratch, not {start!r}")
    kd, kd_why = kd_choice(kd_teacher, start, student)
    out = Path(out_dir or RUNS_DIR / f"pipeline-{profile}")
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(threads or auto_threads())
    pr = {**PRUNE[profile], **{k: v for k, v in (("rounds", prune_rounds), ("steps", prune_steps)) if v is not None}}
    target = prune_target or PRUNE_TARGET[student]
    classical = classical or CLASSICAL[profile]
    wall = time.monotonic()

    print(f"make distill: {student}, {profile} profile, from {start} weights, into {out}", flush=True)
    clock = Clock(*calibrate(student))
    ensure_data()    # make distill fetched the data already; a direct call may not have
    evals = eval_images()[:images]
    if not evals:
        raise ValueError("no evaluation images")
    n_t = TEACHER_IMAGES[profile] if teacher_images is None else teacher_images
    t_imgs = evals[:n_t] if n_t else evals
    train = train_images()
    d_steps = steps or (FINETUNE[profile].get("steps") if start == "shipped" else None) or PROFILES[profile]["steps"]
    step_cost = {"student": "step_kd_self", "teacher": "step_kd_teacher", "none": "step_rd"}[kd]
    names = list(COST["rd_classical"]) if classical == "installed" else ["jpeg", "webp"] + classical.split(",")
    rd_points = {n: 10 * len(evals) for n in dict.fromkeys(x.strip() for x in names if x.strip())}
    est = {
        "distill": clock.est(model_s=d_steps * COST[step_cost]),
        "prune": clock.est(machine_s=COST["prune_search"], model_s=pr["rounds"] * pr["steps"] * COST["step_kd_self"]),
        "export": clock.est(machine_s=COST["export_teacher"] * teacher_onnx,
                            model_s=COST["export_int8"] + 2 * COST["export_fp32"]),
        "profile": clock.est(machine_s=4 * COST["profile"]),
        "timing": clock.est(machine_s=COST["time_teacher"] * teacher_onnx, model_s=4 * COST["time_model"]),
        "rd": clock.est(machine_s=sum(COST["rd_classical"].get(n, 0.5) * k for n, k in rd_points.items())
                        + len(t_imgs) * 6 * COST["rd_teacher"], model_s=len(evals) * 6 * 4 * COST["rd_learned"]),
    }
    left = lambda *keys: sum(v for k, v in est.items() if k in keys)  # noqa: E731
    print(f"estimated {dur(sum(est.values()))} in all on this machine (a training step of {student} takes "
          f"{REF_STEP * clock.machine * clock.model:.2f} s here)", flush=True)

    clock.stage(1, "models", "models: the shipped teacher and student", 5, sum(est.values()))
    entries: dict[str, Entry] = {}
    t_label, t_weights = teacher_weights(out, retrain_teacher, threads)
    entries["teacher"] = Entry("teacher", t_label, "teacher" if "shipped" in t_label else "teacher-quick",
                               t_weights, load_model(str(t_weights)))
    shipped = shipped_weights(student)
    if shipped.is_file():
        entries["shipped"] = Entry("shipped", f"shipped {student}", f"{student}-shipped", shipped,
                                   load_model(str(shipped)))
    elif start == "shipped":
        raise ValueError(f"no shipped weights {shipped}: use --from scratch")
    for e in entries.values():
        print(f"    {e.label}: {e.weights}", flush=True)

    what = (f"self-distil the shipped {student}" if kd == "student" and start == "shipped" else
            f"distil {student} from {start} weights")
    clock.stage(2, "distill", f"{what} ({profile} profile, distillation terms on: {kd != 'none'})",
                est["distill"], left(*est))
    entries["student"], d_rec = stage_distill(student, profile, start, kd, entries, out, train, steps, threads,
                                              progress)

    clock.stage(3, "prune", f"prune to {target} decoder kMAC/px ({pr['rounds']} round(s), {pr['steps']} recovery "
                f"steps each, distilled from the unpruned student)", est["prune"], left(*list(est)[1:]))
    entries["pruned"], p_rec = stage_prune(entries["student"], student, profile, target, pr["rounds"], pr["steps"],
                                           pr["lr"], out, train, threads, progress)

    clock.stage(4, "export", f"ONNX export, FP32 and INT8 (INT8 of the {int8_of})", est["export"],
                left(*list(est)[2:]))
    stage_export(entries, int8_of, out, calib, teacher_onnx)

    clock.stage(5, "profile", "MAC budget of every model (profiler, 768x512)", est["profile"], left(*list(est)[3:]))
    budget = stage_profile(entries, out)

    clock.stage(6, "timing", f"ONNX decode time of one 768x512 picture (1 thread, fastest of {timing_runs})",
                est["timing"], left(*list(est)[4:]))
    stage_timing(entries, timing_runs)

    clock.stage(7, "rd", f"rate-distortion on {len(evals)} evaluation images (real bitstreams; teacher on "
                f"{len(t_imgs)})", est["rd"], left("rd"))
    rd = stage_rd(entries, evals, t_imgs, classical, out, Path(rd_cache) if rd_cache else None, progress)

    clock.stage(8, "summary", "summary", 1)
    clock.end()
    meta = {"profile": profile, "student": student, "date": time.strftime("%Y-%m-%d %H:%M"),
            "machine": machine(),
            "machine_note": machine_note(), "python": platform.python_version(),
            "wall_s": round(time.monotonic() - wall, 1), "stage_s": clock.times, "timing_runs": timing_runs,
            "distillation": d_rec, "kd_why": kd_why, "pruning": p_rec, "int8_of": int8_of}
    summary = build_summary(entries, rd, evals, t_imgs, meta)
    rd_files = {p.name: p for p in rd["files"]}
    summary["files"] = {
        "student weights": str(entries["student"].weights), "pruned weights": str(entries["pruned"].weights),
        "ONNX (student)": str(entries["student"].onnx_dir), "ONNX (pruned)": str(entries["pruned"].onnx_dir),
        f"INT8 ONNX ({int8_of})": str(entries["int8"].onnx_dir),
        "RD plot": str(rd_files["rd_curves.png"]), "RD table": str(rd_files["rd.md"]),
        "MAC budget": str(budget), "pruning report": p_rec["report"],
        "summary": str(out / "summary.md"), "summary (JSON)": str(out / "summary.json")}
    summary["next"] = next_commands(student, profile, out, entries)
    write_summary(summary, out)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__.splitlines()[0])
    p.add_argument("--profile", choices=("quick", "full"), default="quick")
    p.add_argument("--student", default="student-2k", choices=sorted(PRUNE_TARGET))
    p.add_argument("--from", dest="start", choices=("shipped", "scratch"),
                   help="start from weights/STUDENT.safetensors (quick default) or random weights (full default)")
    p.add_argument("--kd-teacher", choices=("auto", "student", "teacher", "none"), default="auto",
                   help="distillation teacher: auto = the shipped student when starting from it (self-distillation), "
                        "else the VMuC teacher")
    p.add_argument("--retrain-teacher", action="store_true", help="train the teacher's quick profile "
                   "even when shipped weights exist")
    p.add_argument("--images", type=int, help="evaluate on the first N evaluation images only")
    p.add_argument("--teacher-images", type=int, help="RD of the teacher on the first N of those (0 = all; "
                   "quick default 3: it codes at ~1 s per picture)")
    p.add_argument("--steps", type=int, help="override the distillation step count")
    p.add_argument("--prune-steps", type=int, help="override the recovery steps per pruning round")
    p.add_argument("--prune-rounds", type=int, help="override the pruning rounds")
    p.add_argument("--prune-target", type=float, help="decoder kMAC/px after pruning (default per student)")
    p.add_argument("--classical", help="classical codecs: 'installed' or names (JPEG and WebP always; quick "
                   "default jpeg,webp, full default installed)")
    p.add_argument("--int8-of", choices=("student", "pruned"), default="student",
                   help="the model of the INT8 row")
    p.add_argument("--threads", type=int, default=0, help="torch threads for training (0 = the idle cores)")
    p.add_argument("--calib", type=int, default=16, help="INT8 calibration crops (256x256, training set)")
    p.add_argument("--no-teacher-onnx", action="store_true", help="skip the teacher's ONNX export and timing")
    p.add_argument("--no-cache", action="store_true", help="measure the teacher's RD even when cached")
    p.add_argument("--out", help="output folder (default runs/pipeline-PROFILE)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    a = p.parse_args(argv)
    from codec.cli_util import fail
    try:
        run(a.profile, a.student, start=a.start, kd_teacher=a.kd_teacher, out_dir=a.out, images=a.images,
            teacher_images=a.teacher_images, steps=a.steps, prune_steps=a.prune_steps, prune_rounds=a.prune_rounds,
            prune_target=a.prune_target, classical=a.classical, int8_of=a.int8_of, threads=a.threads,
            calib=a.calib, teacher_onnx=not a.no_teacher_onnx, rd_cache=None if a.no_cache else RD_CACHE,
            retrain_teacher=a.retrain_teacher, progress=not a.quiet)
    except (ValueError, OSError, KeyError, RuntimeError) as e:
        return fail(e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
