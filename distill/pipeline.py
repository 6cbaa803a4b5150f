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
import json
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRUNE_TARGET = {"student-1k": 0.5, "student-2k": 1.5, "student-4k": 3.0}  # decoder kMAC/px
# Self-distillation of the shipped weights, 300 steps, batch 8 of 128x128 crops, warm-up 20, cosine decay.
# Measured on student-2k (BD-rate PSNR-YUV against the shipped weights, 14 evaluation images): lr 2e-5
# +9.1%; 5e-5 +2.1% and +0.2% (two seeds; +0.3% with the output term at 2.0); 1e-3 -2.3%; 2e-3 -5.8%.
# The low rates do not keep the student where it was, the high ones improve it. The full profile keeps its
# own schedule (lr 5e-4).
FINETUNE = {"quick": dict(steps=300, lr=2e-3, warmup=20), "full": {}}
# Pruning: recovery by distillation from the unpruned student. Measured on student-2k (1.953 -> 1.478 decoder
# kMAC/px, BD-rate PSNR-YUV of pruned vs unpruned on the 14 evaluation images): one round of 300 steps at lr
# 5e-4 +21%, 1e-3 +5.2%, 2e-3 -9.8%; 200 steps at 2e-4 +212%, at 1e-3 +18%; three rounds of 100 steps at
# 2e-4 +134%, at 5e-4 +69%.
PRUNE = {"quick": dict(rounds=1, steps=300, lr=2e-3), "full": dict(rounds=3, steps=2000, lr=1e-3)}
TEACHER_IMAGES = {"quick": 3, "full": 0}          # RD images of the slow teacher (0: all)
CLASSICAL = {"quick": "jpeg,webp", "full": "installed"}
RD_CACHE = ROOT / "runs" / "rd-cache"
STAGES = 8


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


# ---- time estimates ---------------------------------------------------------------------------------
# Seconds measured on the reference machine (2-core AMD EPYC, shared with two other jobs) on which
# student-2k's training step (batch 8 of 128x128 crops, forward + backward) took REF_STEP s. Estimates scale
# by this machine's measured step; costs that depend on the student also by its step against student-2k's.
REF_STEP = 0.25
COST = {"step_kd_self": 0.5, "step_rd": 0.4, "step_kd_teacher": 2.3, "prune_search": 15.0,
        "export_int8": 55.0, "export_fp32": 25.0, "export_teacher": 22.0, "profile": 2.0,
        "time_model": 1.5, "time_teacher": 6.0, "rd_learned": 0.45, "rd_teacher": 1.9,
        "rd_classical": {"jpeg": 0.09, "webp": 0.3, "cjpeg": 0.15, "jpeg2000": 0.3, "avif": 0.8, "jxl": 0.5,
                         "hevc": 1.0}}


class Clock:
    """Stage headers with what the stage does and its estimated time; stage times for the summary.

    The time left to the end is the remaining stages' estimates scaled by how the finished stages went
    against theirs (this machine's load may change while the pipeline runs)."""

    def __init__(self, machine: float, model: float):
        self.machine, self.model = machine, model    # speed factors against the reference machine
        self.start = time.monotonic()
        self.times: dict[str, float] = {}
        self.estimates: dict[str, float] = {}
        self._t = self._key = None

    def est(self, machine_s: float = 0.0, model_s: float = 0.0) -> float:
        return self.machine * (machine_s + self.model * model_s)

    def drift(self) -> float:
        """Actual over estimated time of the finished stages of some length (1 before any), within 0.5 .. 3."""
        done = [k for k in self.times if self.estimates.get(k, 0) >= 20]
        if not done:
            return 1.0
        return min(3.0, max(0.5, sum(self.times[k] for k in done) / sum(self.estimates[k] for k in done)))

    def stage(self, n: int, key: str, what: str, estimate: float, left: float | None = None) -> None:
        self.end()
        el = time.monotonic() - self.start
        f = self.drift()
        tail = f"; ~{_dur(left * f)} to the end of the pipeline" if left else ""
        print(f"\n=== {n}/{STAGES} {what} ===\n    estimated {_dur(estimate * f)} on this machine{tail} "
              f"(elapsed {_dur(el)})", flush=True)
        self._t, self._key = time.monotonic(), key
        self.estimates[key] = estimate

    def end(self) -> None:
        if self._key:
            self.times[self._key] = round(time.monotonic() - self._t, 1)
            print(f"    {self._key}: done in {_dur(self.times[self._key])}", flush=True)
        self._key = None


def _dur(s: float) -> str:
    return f"{s:.0f} s" if s < 90 else f"{s / 60:.1f} min"


def calibrate(student: str) -> tuple[float, float]:
    """(machine factor, student factor): this machine's training step of student-2k against REF_STEP, and
    the student's step against student-2k's (a few forward+backward passes, about 2 s)."""
    import torch

    from codec.registry import create_model
    from training import rd_loss

    def step_s(name: str) -> float:
        m = create_model(name).train()
        g = torch.Generator().manual_seed(0)
        y, uv = torch.rand(8, 1, 128, 128, generator=g), torch.rand(8, 2, 64, 64, generator=g)
        q = torch.randint(0, m.num_qualities, (8,), generator=g)
        times = []
        for _ in range(3):
            t = time.perf_counter()
            rd_loss(m, m(y, uv, q), y, uv, q)["loss"].backward()
            times.append(time.perf_counter() - t)
        return min(times[1:])

    ref = step_s("student-2k")
    return ref / REF_STEP, (step_s(student) / ref if student != "student-2k" else 1.0)


# ---- stages -----------------------------------------------------------------------------------------
def _teacher_weights(run: Path, retrain: bool, threads: int) -> tuple[str, Path]:
    """(label, weights path) of the teacher: the shipped one unless asked to train."""
    from codec.weights import shipped_weights
    shipped = shipped_weights("teacher")
    if shipped.is_file() and not retrain:
        return "teacher (shipped)", shipped
    from teacher.__main__ import main as teacher_main
    out = run / "teacher-quick" / "teacher.safetensors"
    if not out.is_file():
        print("training the teacher's quick profile" + ("" if retrain else " (no shipped teacher weights)"))
        if teacher_main(["train", "--profile", "quick", "--run-dir", str(out.parent), "--out", str(out),
                         "--threads", str(threads)]):
            raise RuntimeError("teacher training failed")
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

    from .losses import KDWeights
    from .train import PROFILES, distill

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

    from .prune import prune_to_target
    from .prune_cli import make_finetune, write_results

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
              "command": f"python -m distill.pipeline --profile {profile} --student {student} (prune stage)",
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
    from export.bench import bench_picture
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

    from benchmarks.rd import run_rd
    from benchmarks.report import machine, write_results

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
        meta = {"command": "python -m distill.pipeline (RD stage)", "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "machine": machine(), "seconds": round(time.monotonic() - start, 1), "skipped": left_out,
                "codecs": {c.name: codec_info(c) for c in cl + list(ours.values())}}
        result = {"meta": meta, "rows": rows}
        files = write_results(result, out / "rd")
    finally:
        torch.set_num_threads(threads)
    return {"result": result, "files": files, "teacher": provenance, "left_out": left_out,
            "webp": next(f"{c.version()}, `{c.settings}`" for c in cl if c.name == "webp"),
            "classical": [c.name for c in cl]}


# ---- the summary ------------------------------------------------------------------------------------
def build_summary(entries: dict, rd: dict, images: list[Path], teacher_images: list[Path], meta: dict) -> dict:
    """The summary dict (summary.json) from the entries and the RD rows: BD-rates, checks, verdicts."""
    from benchmarks.bdrate import bd_summary

    from .summary import NOISE, check, finite, ranking_note

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
    from .summary import bd_cell
    return bd_cell(bd)


def next_commands(student: str, profile: str, out: Path, entries: dict) -> list[dict]:
    w = entries["student"].weights
    return [
        {"what": "the full profile (hours; resumes after an interruption)",
         "command": f"make distill PROFILE=full STUDENT={student}   "
                    f"# = python -m distill.pipeline --profile full --student {student}"},
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

    from benchmarks.report import machine

    from .train import PROFILES

    if profile not in PRUNE or student not in PRUNE_TARGET:
        raise ValueError(f"profile must be quick or full and student one of {', '.join(PRUNE_TARGET)}")
    if int8_of not in ("student", "pruned"):
        raise ValueError("int8_of must be 'student' or 'pruned'")
    start = start or ("shipped" if profile == "quick" else "scratch")
    if start not in ("shipped", "scratch"):
        raise ValueError(f"--from must be shipped or scratch, not {start!r}")
    kd, kd_why = kd_choice(kd_teacher, start, student)
    out = Path(out_dir or ROOT / "runs" / f"pipeline-{profile}")
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
    print(f"estimated {_dur(sum(est.values()))} in all on this machine (a training step of {student} takes "
          f"{REF_STEP * clock.machine * clock.model:.2f} s here)", flush=True)

    clock.stage(1, "models", "models: the shipped teacher and student", 5, sum(est.values()))
    entries: dict[str, Entry] = {}
    t_label, t_weights = _teacher_weights(out, retrain_teacher, threads)
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


def write_summary(summary: dict, out: Path) -> None:
    """summary.json, summary.md, and the final screen on stdout."""
    from .summary import markdown, screen

    clean = json.loads(json.dumps(summary, default=str), parse_constant=lambda _: None)
    (out / "summary.json").write_text(json.dumps(clean, indent=1) + "\n")
    (out / "summary.md").write_text(markdown(summary))
    print(screen(summary), flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m distill.pipeline", description=__doc__.splitlines()[0])
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
