"""The GPU burst itself: ``run_burst`` trains the teacher for a few minutes from the shipped weights (none
when its minutes are 0), then the student from its shipped weights in the time left of the budget, on the
RD loss alone or distilled from that teacher (bf16 autocast, channels_last, crops of the packed tiles drawn
on the device), one ``_phase`` each through the shared Trainer (``BurstTrainer``: fed from a
TileSampler, stopped by time or steps on all ranks at once, snapshots written as returned parts), and records
what happened in OUT/gpu.json. ``BurstOptions`` holds one burst's settings (``rehearsal``: the CPU dry run).
Codec, training and model modules are imported inside the functions, after distill.gpu has prepared the
Python (distill.gpu_env).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from . import gpu_env
from .gpu_pack import PACK, TileSampler, load_pack
from .gpu_parts import write_parts

RUN_DIR = Path("runs/gpu")
MIN_STUDENT_S = 30.0                 # a student phase shorter than this is skipped
END_MARGIN_S = 10.0                  # kept free at the end of the budget for the student's last writes


@dataclass
class BurstOptions:
    """One burst: where things are, how long, and the training settings."""

    out: Path
    minutes: float = 8.0            # teacher training (0: no teacher at all)
    budget_minutes: float = 9.5     # the whole command from its start (the student gets what is left)
    pack: Path = PACK
    run_dir: Path = RUN_DIR
    weights_dir: Path = Path("weights")
    student: str | None = "student-2k"
    kd: bool = True                 # distil the student from the teacher; False: the RD loss alone
    batch: int = 32
    crop: int = 256
    lr: float | None = None         # None: the full profiles' (teacher 2e-4, student 5e-4; cosine goes on)
    bf16: bool = True
    channels_last: bool = True
    snapshot_minutes: float = 2.0
    dry: bool = False
    teacher_steps: int | None = None
    student_steps: int | None = None
    seed: int = 0
    env: dict = field(default_factory=dict)
    started: float | None = None    # time.monotonic() at the command's start (default: run_burst's)

    @classmethod
    def rehearsal(cls, out: Path, **kw) -> "BurstOptions":
        """The CPU rehearsal: the same path in a few small steps (``--dry``)."""
        base = dict(minutes=2.0, budget_minutes=6.0, batch=2, crop=64, snapshot_minutes=2 / 60, dry=True,
                    teacher_steps=4, student_steps=3, run_dir=Path("runs/gpu-dry"))
        return cls(out=Path(out), **{**base, **kw})


class AutocastTeacher(nn.Module):
    """The trained teacher for distillation, run under bf16 autocast (its outputs back in fp32)."""

    def __init__(self, teacher, enabled: bool):
        super().__init__()
        self.inner, self.cfg, self.enabled = teacher, teacher.cfg, enabled

    def forward(self, y, uv, q):
        with torch.autocast(y.device.type, dtype=torch.bfloat16, enabled=self.enabled):
            out = self.inner(y, uv, q)
        return {k: v.float() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in out.items()}


class _Placeholder(torch.utils.data.Dataset):
    """A dataset of ``n`` dummy items for the Trainer's loader, which a burst never reads."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return i


def _trainer_class():
    from training import Trainer

    class BurstTrainer(Trainer):
        """The shared Trainer fed from a TileSampler on its device, stopped by time or steps (one decision
        for all ranks under torchrun), with its snapshots written as returned parts into OUT."""

        def __init__(self, model, cfg, run_dir, sampler, out: Path, tag: str, seconds: float,
                     max_steps: int | None, meta: dict, extra_loss=None, extra_modules=None):
            # The loader is never read (_batches draws from the sampler): a placeholder dataset.
            super().__init__(model, cfg, run_dir, _Placeholder(cfg.crops_per_epoch), extra_loss, extra_modules)
            self.sampler, self.out, self.tag, self.seconds, self.max_steps = sampler, out, tag, seconds, max_steps
            self.meta, self.snapshots, self.start = meta, 0, None
            device = sampler.tiles.device
            inner, extra = self.forward, self.extra_loss   # q is drawn on the CPU: move it to the model
            self.forward = lambda y, uv, q, **kw: inner(y, uv, q.to(device), **kw)
            if extra is not None:
                self.extra_loss = lambda out, y, uv, q: extra(out, y, uv, q.to(device))

        def _batches(self):
            self.start = (time.monotonic(), self.step)
            while not self._stop():
                yield self.sampler()

        def _stop(self) -> bool:
            """Time or steps are up, or SIGTERM came (on any rank: all stop at the same step)."""
            t0, step0 = self.start
            stop = (time.monotonic() - t0 > self.seconds or self.interrupted
                    or (self.max_steps is not None and self.step - step0 >= self.max_steps))
            if self.world > 1:
                import torch.distributed as dist
                flag = torch.tensor([float(stop)], device=self.sampler.tiles.device)
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                stop = bool(flag.item())
            return stop

        def gpu_meta(self) -> dict:
            """The metadata of the weights as they are now: step, GPU-seconds and GPU steps so far (counted
            from the weights the phase went on from, a checkpoint of an earlier burst included)."""
            m = dict(self.meta)
            base_s, base_step = float(m.pop("base_train_s")), int(m.pop("base_step"))
            m["step"] = self.step
            m["gpu_s"] = round(float(m.pop("gpu_s_before")) + self.train_s - base_s, 1)   # summed over ranks
            m["gpu_steps"] = int(m.pop("gpu_steps_before")) + self.step - base_step
            return m

        def snapshot(self):
            if self.rank != 0:
                return None
            averaged = getattr(self, "averaged", None)  # the weight average, where the profile keeps one
            with averaged() if averaged else contextlib.nullcontext():
                paths = write_parts(self.model, self.out, self.tag, self.gpu_meta())
            if (self.run_dir / "log.csv").is_file():
                shutil.copyfile(self.run_dir / "log.csv", self.out / f"{self.tag}-log.csv")
            self.snapshots += 1
            return paths[0]

    return BurstTrainer


def _source_meta(weights: Path) -> dict:
    """What the weights a phase starts from record, carried on: CPU time, GPU time and steps so far."""
    from codec.weights import weights_metadata

    m = weights_metadata(weights)
    keep = {k: m[k] for k in ("train_s", "threads") if k in m}
    keep.update(base_train_s=m.get("train_s", 0), base_step=m.get("step", 0), gpu_s_before=m.get("gpu_s", 0),
                gpu_steps_before=m.get("gpu_steps", 0))
    return keep


def _start(trainer, weights: Path) -> str:
    """Resume the run's own checkpoint when it is ahead of ``weights``, else go on from ``weights`` and
    the step they record; returns which."""
    from training import continue_from, load_checkpoint
    from codec.weights import weights_metadata

    ckpt = trainer.ckpt
    if ckpt.is_file() and int(load_checkpoint(ckpt)["step"]) > int(weights_metadata(weights).get("step", 0)):
        trainer.resume()
        return f"checkpoint {ckpt} at step {trainer.step}"
    if not continue_from(trainer, weights):
        raise ValueError(f"no weights to go on from at {weights}")
    return f"{weights} at step {trainer.step}"


def _build(name: str, weights: Path, device):
    """The preset ``name`` with as many rate points as ``weights`` hold (a model built with 6 cannot load
    an 8-point file), on ``device``."""
    from codec.weights import model_for_weights

    if not weights.is_file():
        raise ValueError(f"no weights to go on from at {weights}")
    return model_for_weights(name, weights).to(device)   # sized on the CPU, before anything holds the parameters


def _phase(name: str, model, profile: dict, o: BurstOptions, sampler, device, seconds: float,
           max_steps, weights: Path, distiller=None) -> tuple[dict, object]:
    """Train one model for ``seconds`` (or ``max_steps``) from ``weights``, with KD where ``distiller`` is
    given; returns its summary and trainer."""
    from training import TrainConfig, lr_at

    cfg = TrainConfig(**{**profile, "batch": o.batch, "crop": o.crop, "bf16": o.bf16,
                         "channels_last": o.channels_last, "snapshot_every_s": o.snapshot_minutes * 60,
                         "checkpoint_every_s": 1e9, "max_seconds": 0.0, "seed": o.seed,
                         "threads": 1 if o.dry else min(8, os.cpu_count() or 1),
                         "log_every": 1 if o.dry else 20, **({"lr": o.lr} if o.lr else {})})
    meta = {**_source_meta(weights), "gpu": _device_name(device), "gpu_world": _world(),
            "gpu_batch": o.batch, "gpu_crop": o.crop, "bf16": int(o.bf16)}
    if distiller is not None:
        meta["kd_teacher_step"] = distiller.teacher_step
    if o.dry:
        shutil.rmtree(o.run_dir / name, ignore_errors=True)
    trainer = _trainer_class()(model, cfg, o.run_dir / name, sampler, o.out, name, seconds, max_steps, meta,
                               extra_loss=distiller, extra_modules=distiller)
    started = _start(trainer, weights)
    t0 = time.monotonic()
    metrics = trainer.train(progress=False)
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall = time.monotonic() - t0
    steps = trainer.step - trainer.start[1]
    return {"from": started, "to_step": trainer.step, "steps": steps, "seconds": round(wall, 1), "lr": cfg.lr,
            "lr_from": float(f"{lr_at(trainer.start[1], cfg):.3g}"),  # the schedule's, at the step it went on from
            "loss": "rd" if distiller is None else "rd + kd", "rate_points": getattr(model, "num_qualities", None),
            "ema": getattr(cfg, "ema", 0.0),
            "steps_per_s": round(steps / max(wall, 1e-9), 3),
            "crops_per_s": round(steps * o.batch / max(wall, 1e-9), 1), "snapshots": trainer.snapshots,
            "metrics": metrics, **({"gpu_s": trainer.gpu_meta()["gpu_s"]} if trainer.rank == 0 else {}),
            **({"max_gpu_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 1)}
               if device.type == "cuda" else {})}, trainer


def _device_name(device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (dry run)"


def _world() -> int:
    return int(os.environ.get("WORLD_SIZE", 1))


def _device(dry: bool):
    """cpu for the rehearsal; else this rank's GPU (process group started under torchrun)."""
    if dry:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError("no CUDA device here: run with --dry for the CPU rehearsal")
    local = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local)
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    if _world() > 1:
        import torch.distributed as dist
        if not dist.is_initialized():
            dist.init_process_group("nccl")
    return torch.device("cuda", local)


def _write_summary(o: BurstOptions, summary: dict) -> None:
    if int(os.environ.get("RANK", 0)) == 0:
        tmp = o.out / "gpu.json.tmp"
        tmp.write_text(json.dumps(summary, indent=1, default=str))
        os.replace(tmp, o.out / "gpu.json")


def run_burst(o: BurstOptions) -> dict:
    """Teacher for ``o.minutes`` from the shipped weights (none at 0), then the student (RD loss alone, or
    KD from that teacher) in the time left; weights, logs and gpu.json go to ``o.out``. Returns the summary
    (also in gpu.json)."""
    from training.teacher import PROFILES as TEACHER_PROFILES

    from .losses import Distiller, KDWeights
    from .train import PROFILES as STUDENT_PROFILES

    t_start = o.started or time.monotonic()
    o.out.mkdir(parents=True, exist_ok=True)
    device = _device(o.dry)
    rank, world = int(os.environ.get("RANK", 0)), _world()
    if o.batch % world:
        raise ValueError(f"batch {o.batch} does not split over {world} processes")
    if o.student and o.kd and o.minutes <= 0:
        raise ValueError("distillation needs the teacher phase: --minutes above 0, or --no-kd")
    summary = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "dry": o.dry, "device": _device_name(device),
               "world": world, "torch": torch.__version__, "env": o.env, "options": asdict(o), "phases": {}}
    _write_summary(o, summary)
    try:
        tiles = load_pack(o.pack)
        summary["pack"] = {"tiles": int(tiles.shape[0]), "tile": int(tiles.shape[-1])}
        sampler = TileSampler(tiles, o.crop, o.batch // world, device, seed=o.seed + 1000 * rank)
        summary["setup_s"] = round(time.monotonic() - t_start, 1)
        if o.minutes > 0:
            weights = o.weights_dir / "teacher.safetensors"
            teacher = _build("teacher", weights, device)
            phase, trainer = _phase("teacher", teacher, TEACHER_PROFILES["full"], o, sampler, device,
                                    o.minutes * 60, o.teacher_steps, weights)
            summary["phases"]["teacher"] = phase
            _write_summary(o, summary)
        left = o.budget_minutes * 60 - (time.monotonic() - t_start) - END_MARGIN_S
        if o.student and (left >= MIN_STUDENT_S or o.dry):
            weights = o.weights_dir / f"{o.student}.safetensors"
            student = _build(o.student, weights, device)
            distiller = None
            if o.kd:
                distiller = Distiller(AutocastTeacher(teacher, o.bf16), student, KDWeights()).to(device)
                distiller.teacher_step = trainer.step
            phase, _ = _phase(o.student, student, STUDENT_PROFILES["full"], o, sampler, device, max(left, 1.0),
                              o.student_steps, weights, distiller)
            summary["phases"][o.student] = phase
        elif o.student:
            summary["phases"][o.student] = {"skipped": f"{left:.0f} s left, under {MIN_STUDENT_S:.0f}"}
    except Exception as e:  # noqa: BLE001 - recorded for the returned gpu.json, then raised as it was
        summary["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
        raise
    finally:
        summary["wall_s"] = round(time.monotonic() - t_start, 1)
        summary["return_check"] = gpu_env.check_return(o.out) or "ok"
        _write_summary(o, summary)
    return summary
