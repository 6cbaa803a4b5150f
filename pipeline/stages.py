"""The stages of the main job, each a library call that takes loaded models and paths and hands on an
``Entry`` (model, weights file, what it is) per model it made."""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from distill import FINETUNE_CROPS


PRUNE_TARGET = {"student-1k": 0.5, "student-2k": 1.5, "student-4k": 3.0}  # decoder kMAC/px
# Self-distillation of the shipped weights, 300 steps, warm-up 20, cosine decay. Measured on the step-43,792
# student-2k (BD-rate PSNR-YUV against the shipped weights, 14 evaluation images, 2026-11-30): batch 8 of
# 128x128 crops at lr 2e-3 (the setting measured -5.8% on the older 128-crop weights) +22.9%; batch 2 of
# 256x256 crops (same pixels per step) at lr 2e-3 +10.4%, 5e-4 +0.7%, 1e-4 +0.9%. Weights trained on 256x256
# crops lose their gain when fine-tuned on 128x128 ones (the hyper-latent is then a 2x2 grid).
# The full profile keeps its own schedule.
FINETUNE = {"quick": dict(steps=300, lr=5e-4, warmup=20, **FINETUNE_CROPS), "full": {}}
# Pruning: recovery by distillation from the unpruned student. Measured on student-2k (1.953 -> 1.478 decoder
# kMAC/px, BD-rate PSNR-YUV of pruned vs unpruned on the 14 evaluation images): one round of 300 steps at lr
# 5e-4 +21%, 1e-3 +5.2%, 2e-3 -9.8%; 200 steps at 2e-4 +212%, at 1e-3 +18%; three rounds of 100 steps at
# 2e-4 +134%, at 5e-4 +69%.
PRUNE = {"quick": dict(rounds=1, steps=300, lr=2e-3), "full": dict(rounds=3, steps=2000, lr=1e-3)}


# ---- what the stages hand on ------------------------------------------------------------------------
@dataclass
class Entry:
    """One model of the summary table: where it came from, the loaded model, what was measured."""

    key: str                       # teacher | shipped | student | pruned | int8
    label: str
    codec: str                     # its name in the RD rows
    weights: Path
    model: object
    input: str | None = None       # key of the model it was made from
    onnx_dir: Path | None = None   # export folder (FP32 networks; INT8 ones where made)
    int8: bool = False             # decoded by the ONNX INT8 networks
    note: str = ""
    report: object = None          # profiling Report
    onnx_ms: dict = field(default_factory=dict)



# ---- stages -----------------------------------------------------------------------------------------
def teacher_weights(run: Path, retrain: bool, threads: int) -> tuple[str, Path]:
    """(label, weights path) of the teacher: the shipped one unless asked to train."""
    from codec.weights import shipped_weights
    shipped = shipped_weights("teacher")
    if shipped.is_file() and not retrain:
        return "teacher (shipped)", shipped
    from photos import train_images
    from training.teacher import train_teacher
    out = run / "teacher-quick" / "teacher.safetensors"
    if not out.is_file():
        print("training the teacher's quick profile" + ("" if retrain else " (no shipped teacher weights)"))
        train_teacher(train_images(), "quick", out.parent, out, threads=threads)
    return "teacher (quick training)", out


def kd_choice(kd_teacher: str, start: str, student: str) -> tuple[str, str]:
    """(which teacher: 'student' | 'teacher' | 'none', why) for the distillation stage."""
    if kd_teacher == "auto":
        kd_teacher = "student" if start == "shipped" else "teacher"
        why = (f"self-distillation from the shipped {student}: the shipped VMuC teacher is the weaker codec "
               "(see its row), so distilling from it would pull the student toward worse reconstructions"
               if kd_teacher == "student" else
               "the VMuC teacher: a student trained from random weights starts far below even this teacher")
    else:
        why = "chosen on the command line (--kd-teacher)"
    return kd_teacher, why


def stage_distill(student: str, profile: str, start: str, kd: str, entries: dict, out: Path, train: list,
                  steps: int | None, threads: int, progress: bool) -> tuple[Entry, dict]:
    """Train the pipeline's student; returns its entry (weights reloaded as they ship) and the record."""
    from codec.weights import load_model

    from distill.losses import KDWeights
    from distill.train import PROFILES, distill

    run_dir = out / f"distill-{student}"
    weights = out / f"{student}.safetensors"
    kd_weights = {"student": entries["shipped"].weights if "shipped" in entries else None,
                  "teacher": entries["teacher"].weights, "none": None}[kd]
    if kd == "student" and kd_weights is None:
        raise ValueError(f"no shipped {student} weights to self-distil from: use --kd-teacher teacher")
    terms = KDWeights() if kd != "none" else KDWeights(0, 0, 0)
    overrides = {}
    if start == "shipped":
        overrides = dict(FINETUNE[profile])
        steps = steps or overrides.pop("steps", None)
        overrides.pop("steps", None)   # an explicit --steps wins
        init = entries["shipped"].weights
        resume = profile == "full"                       # hours-long runs go on after an interruption
    else:
        init = None
        # distill() would continue a full run from the shipped weights when there is no checkpoint.
        resume = profile == "full" and (run_dir / "checkpoint.pt").is_file()
    if not resume:
        shutil.rmtree(run_dir, ignore_errors=True)
    cfg = {**PROFILES[profile], **overrides, **({"steps": steps} if steps else {})}
    print(f"    start: {init or 'random weights'}; distillation teacher: {kd_weights or 'none (RD loss only)'}; "
          f"{cfg['steps']} steps, batch {cfg['batch']} of {cfg['crop']}x{cfg['crop']} crops, lr {cfg['lr']:g}, "
          f"warm-up {cfg['warmup']}", flush=True)
    res = distill(student, kd_weights, run_dir, train, profile, kd=terms, steps=steps, threads=threads,
                  out=weights, init=init, resume=resume, progress=progress, **overrides)
    if res.get("interrupted") or "weights" not in res:
        raise RuntimeError("distillation was interrupted: no weights written")
    model = load_model(str(weights))
    label = f"pipeline's {student}"
    entry = Entry("student", label, f"{student}-{profile}", weights, model,
                  input="shipped" if start == "shipped" else None)
    record = {"start": "shipped" if init else "scratch", "init": str(init) if init else None,
              "kd_teacher": kd, "kd_teacher_weights": str(kd_weights) if kd_weights else None,
              "kd_terms": res.get("kd"), "steps": res["steps"], "lr": cfg["lr"], "warmup": cfg["warmup"],
              "batch": cfg["batch"], "crop": cfg["crop"], "train_metrics": res["train_metrics"],
              "weights": str(weights)}
    return entry, record


def stage_prune(src: Entry, student: str, profile: str, target: float, rounds: int, steps: int, lr: float,
                out: Path, train: list, threads: int, progress: bool) -> tuple[Entry, dict]:
    """Prune the pipeline's student to ``target`` decoder kMAC/px, recovering after each round by
    distillation from the unpruned student; returns the pruned entry (weights reloaded) and the record."""
    from codec.weights import load_model, save_weights

    from distill.prune import prune_to_target
    from distill.prune_cli import make_finetune, write_results

    teacher = load_model(str(src.weights))        # the unpruned student, frozen: the recovery teacher
    work = load_model(str(src.weights))
    run_dir = out / "prune"
    shutil.rmtree(run_dir, ignore_errors=True)
    finetune = make_finetune(teacher, train, steps, lr, run_dir, threads, progress)
    pruned, history = prune_to_target(work, target, rounds, 0.5, finetune, lambda m: print(f"    {m}", flush=True))
    pruned.eval()
    pruned.update(force=True)
    weights = out / f"{student}-pruned.safetensors"
    save_weights(pruned, weights, meta={"step": steps * rounds})
    reached = history[-1]["decoder_kmac"] <= target + 1e-9
    result = {"student": str(src.weights), "out": str(weights), "date": time.strftime("%Y-%m-%d %H:%M"),
              "command": f"python -m pipeline --profile {profile} --student {student} (prune stage)",
              "args": {"target_kmac": target, "ranking": "uniform", "min_keep": 0.5, "rounds": rounds,
                       "finetune_steps": steps, "no_kd": False, "teacher": str(src.weights)},
              "rounds": history, "reached": reached, "plan": pruned.pruned_plan}
    js, md = write_results(result, run_dir)
    model = load_model(str(weights))
    entry = Entry("pruned", f"pruned {student}", f"{student}-{profile}-pruned", weights, model, input="student")
    record = {"target_kmac": target, "reached": reached, "rounds": rounds, "finetune_steps": steps, "lr": lr,
              "kd_teacher": str(src.weights), "decoder_kmac": history[-1]["decoder_kmac"],
              "widths": history[-1].get("widths"), "weights": str(weights), "report": str(md)}
    return entry, record


def stage_export(entries: dict, int8_of: str, out: Path, calib: int, teacher_onnx: bool) -> None:
    """ONNX exports: the pipeline's student and the pruned one in full (encoder + decoder, FP32; INT8 for
    the model of the INT8 row) under out/onnx/; the shipped models' FP32 decoders (cached in runs/onnx-cache)
    for the decode-time column. Sets each entry's onnx_dir."""
    from export.cache import cached_export
    from export.exporter import export_model

    for key in ("student", "pruned"):
        e = entries[key]
        e.onnx_dir = out / "onnx" / e.weights.stem
        shutil.rmtree(e.onnx_dir, ignore_errors=True)
        int8 = key == int8_of
        print(f"    {e.label} -> {e.onnx_dir} (FP32{' and INT8' if int8 else ''}, encoder and decoder)", flush=True)
        export_model(e.model, e.onnx_dir, int8=int8, calib=calib, ort_format=False, encoder=True,
                     log=lambda m: print(f"      {m}", flush=True))
    for key in ("shipped", "teacher"):
        e = entries.get(key)
        if e is None or (key == "teacher" and not teacher_onnx):
            continue
        print(f"    {e.label}: FP32 decoder networks (runs/onnx-cache, reused when this model was exported before)",
              flush=True)
        e.onnx_dir = cached_export(e.model, int8=False)
    src = entries[int8_of]
    entries["int8"] = Entry("int8", f"INT8 of the {src.label}", f"{src.codec}-int8", src.weights, src.model,
                            input=int8_of, onnx_dir=src.onnx_dir, int8=True)


def stage_profile(entries: dict, out: Path) -> Path:
    """MAC counts of every model (decoder kMAC/px, ratios to the teacher) into out/report/budget.md."""
    from profiling import profile_model

    parts, seen = [], {}
    for e in entries.values():
        if id(e.model) not in seen:
            seen[id(e.model)] = profile_model(e.model, check_size=None)
            parts.append(f"<!-- {e.label}: {e.weights} -->\n" + seen[id(e.model)].to_markdown())
            r = seen[id(e.model)]
            print(f"    {e.label:<36} decoder {r.total('decoder'):8.3f} kMAC/px, encoder {r.total('encoder'):8.3f}"
                  f" kMAC/px, ratios to the teacher {r.ratio('encoder'):.1f}x / {r.ratio('decoder'):.1f}x", flush=True)
        e.report = seen[id(e.model)]
    path = out / "report" / "budget.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n\n".join(parts))
    return path


def stage_timing(entries: dict, runs: int) -> None:
    """ONNX decode ms (1 thread, fastest of ``runs``; the teacher's of 2) of one 768x512 picture for every
    entry with an export."""
    from export.timing import bench_picture
    from export.cache import cached_export

    from .bench import onnx_decode_ms

    picture = bench_picture()
    for e in entries.values():
        if e.onnx_dir is None:
            continue
        kind = "int8" if e.int8 else "fp32"
        n = min(runs, 2) if e.key == "teacher" else runs
        try:
            e.onnx_ms[kind] = onnx_decode_ms(e.model, e.onnx_dir, e.int8, picture, n)
        except Exception as err:  # noqa: BLE001 - ORT raises its own types
            if e.key not in ("shipped", "teacher"):
                raise
            # runs/onnx-cache is keyed by the model id only: an export written by an older export/ may not
            # fit today's runtime. Export again, once.
            print(f"    {e.label}: the cached export {e.onnx_dir} does not decode with this export/ "
                  f"({str(err).splitlines()[0][:120]}): exporting again", flush=True)
            shutil.rmtree(e.onnx_dir, ignore_errors=True)
            e.onnx_dir = cached_export(e.model, int8=False)
            e.onnx_ms[kind] = onnx_decode_ms(e.model, e.onnx_dir, e.int8, picture, n)
        print(f"    {e.label:<36} ONNX {kind.upper()} {e.onnx_ms[kind]:7.1f} ms", flush=True)


def stage_rd(entries: dict, images: list[Path], teacher_images: list[Path], classical: str, out: Path,
             cache: Path | None, progress: bool) -> dict:
    """RD of the classical codecs and every entry on ``images`` (the teacher on ``teacher_images``, rows
    cached by model id); writes out/rd/ (rd.md, rd_curves.png, ...) and returns the result dict."""
    import torch

    from evaluation.rd import run_rd
    from evaluation.machine import machine
    from benchmarks.report import write_results

    from .bench import ModelCodec, cached_rd, classical as classical_codecs, codec_info

    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # one thread for every decoder, as the CLI tools run
    try:
        cl, left_out = classical_codecs(classical)
        ours = {k: ModelCodec(e.codec, e.model, e.weights, e.onnx_dir if e.int8 else None)
                for k, e in entries.items()}
        for k, c in ours.items():
            c.available()    # builds the ONNX INT8 decoder of the INT8 row
            c.kmac_px = entries[k].report.total("decoder") if entries[k].report else None
        main = cl + [c for k, c in ours.items() if k != "teacher"]
        print(f"    {', '.join(c.name for c in main)} on {len(images)} images", flush=True)
        start = time.monotonic()
        rows, failed = run_rd(images, main, progress=progress)
        if failed:
            raise RuntimeError(f"RD failed: {failed}")
        provenance = {}
        if "teacher" in ours:
            print(f"    {ours['teacher'].name} on {len(teacher_images)} of the {len(images)} images", flush=True)
            t_rows, provenance = cached_rd(ours["teacher"], teacher_images, cache, progress,
                                           log=lambda m: print(f"    {m}", flush=True))
            rows += t_rows
        meta = {"command": "python -m pipeline (RD stage)", "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "machine": machine(), "seconds": round(time.monotonic() - start, 1), "skipped": left_out,
                "codecs": {c.name: codec_info(c) for c in cl + list(ours.values())}}
        result = {"meta": meta, "rows": rows}
        files = write_results(result, out / "rd")
    finally:
        torch.set_num_threads(threads)
    return {"result": result, "files": files, "teacher": provenance, "left_out": left_out,
            "webp": next(f"{c.version()}, `{c.settings}`" for c in cl if c.name == "webp"),
            "classical": [c.name for c in cl]}
