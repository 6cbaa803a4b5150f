"""The training loop shared by the teacher and the students (distillation adds loss terms to it).

Rate-distortion loss on YUV 4:2:0 (training.loss): lambda_q * 255^2 * D + bpp, with the rate
point q drawn per sample so one run trains every rate (variable rate from one set of weights).
Checkpoints are written atomically (temp file + rename) and hold only tensors and numbers, so they load
with ``torch.load(weights_only=True)``; a run resumes from its checkpoint after any interruption.
"""
from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from codec.color import rgb_to_yuv420
from codec.rate_points import check_rate_weights, sample_rate_points
from codec.weights import fit_entropy_tables

from .checkpoints import (CheckpointError, atomic_save, first_line, checkpoint_train_seconds, export_trained,
                          lineage_meta, load_checkpoint)
from .crops import CropDataset
from .loss import rd_loss

# The transforms only the encoder runs (TrainConfig.trainable="encoder" trains these alone).
ENCODER_MODULES = ("analysis_y", "analysis_uv", "hyper_analysis", "pre_analysis", "post_analysis")


@dataclass
class TrainConfig:
    """One training profile (quick or full)."""

    steps: int = 300
    batch: int = 4
    crop: int = 128
    lr: float = 2e-4
    warmup: int = 100
    min_lr_ratio: float = 0.05
    crops_per_epoch: int = 4000
    threads: int = 0               # 0: auto_threads()
    bf16: bool = False             # bf16 autocast for the transforms (entropy models stay fp32)
    channels_last: bool = False
    checkpoint_every_s: float = 300.0
    snapshot_every_s: float = 0.0  # >0: also keep weights every so often in RUN_DIR/snapshots (RD-vs-time curve)
    max_seconds: float = 0.0       # >0: end the run (normally, weights exported) after this much training time
    gain_lr_scale: float = 1.0     # learning-rate factor of the rate points' gain vectors (YUVCodec.gain_steps)
    new_lr_scale: float = 1.0      # learning-rate factor of the Trainer's ``new_names`` (tensors the init file lacked)
    rewarm: int = 200              # steps of linear warm-up after a start mid-schedule with a fresh optimiser
                                   # (``continue_from``: Adam's first steps move every weight by ~lr at once)
    ema: float = 0.0               # >0: keep an exponential moving average of the weights (decay per step);
                                   # snapshots and exported weights are the average
    log_every: int = 10
    seed: int = 0
    detail: float = 0.0            # crop sampling that favours detail (CropDataset)
    scales: tuple[float, ...] = (1.0,)   # random downscaling of the training photos (CropDataset)
    rate: str = "noise"            # gradients of the rate term (YUVCodec.forward): "noise", "noise-rd", "coded", "coded-ste"
    rate_refresh: int = 100        # steps between rebuilds of the coded rate's tables (0: never)
    trainable: str = "all"         # "encoder": train only the analysis side (decoder and entropy models fixed)
    rate_points: int = 0           # >0: train this many rate points of codec.rate_points.LAMBDA_LADDER (the model's own
                                   # otherwise; set by the training commands before anything holds the weights)
    distortion: str = "psnr"       # training.loss.DISTORTIONS: "psnr" follows the PSNR-YUV metric's gradient
    rate_weights: tuple[float, ...] = ()  # sampling weights of the rate points, lowest first (empty: equal)
    extra: dict = field(default_factory=dict)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup, then cosine decay to ``min_lr_ratio * lr``."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


def auto_threads() -> int:
    """Threads to use: the cores not already busy. Oversubscribing cores makes OpenMP's spinning
    threads slow training down by up to 50x on a shared 2-core machine (measured), so stay below."""
    n = os.cpu_count() or 1
    return max(1, min(n, round(n - os.getloadavg()[0])))


def dist_info() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; (0, 1) in a single process."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


class Trainer:
    """Trains a YUVCodec on random crops of ``images`` (paths, or a Dataset of crops);
    ``extra_loss(out, y, uv, q) -> (tensor, dict)`` adds terms.

    Under torchrun (WORLD_SIZE > 1) it runs DistributedDataParallel (gloo on CPU, nccl on GPU): the
    global batch stays ``cfg.batch`` (split over ranks) so results mean the same as in one process;
    rank 0 alone writes logs and checkpoints."""

    def __init__(self, model, cfg: TrainConfig, run_dir: str | Path, images: list,
                 extra_loss: Callable | None = None, extra_modules: torch.nn.Module | None = None,
                 new_names: frozenset[str] = frozenset(), lineage: dict | None = None):
        self.model, self.cfg, self.extra_loss = model, cfg, extra_loss
        self.lineage = lineage     # metadata of the weights this run started from (``--init``), if any
        self.rank, self.world = dist_info()
        self.owns_group = False    # whether this trainer started the process group (and so ends it)
        if cfg.rate_weights:
            check_rate_weights(cfg.rate_weights, model.num_qualities)
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.seed + self.rank)
        torch.set_num_threads(cfg.threads or auto_threads())
        if cfg.channels_last:
            model.to(memory_format=torch.channels_last)
        self.forward = model
        if self.world > 1:
            import torch.distributed as dist
            from torch.nn.parallel import DistributedDataParallel

            if not dist.is_initialized():
                dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
                self.owns_group = True
            # The entropy bottleneck's quantiles only get gradients from the aux loss (synced below). No
            # buffer takes part in the training forward (the entropy coder's tables are buffers): broadcasting
            # them at every step cost time, and once rank 0's snapshot had rebuilt its tables at another size
            # the broadcast no longer matched and the run died (gloo: "Received data size doesn't match").
            self.forward = DistributedDataParallel(model, find_unused_parameters=True, broadcast_buffers=False)
            if cfg.batch % self.world:
                raise ValueError(f"batch {cfg.batch} does not split over {self.world} processes")
        if cfg.trainable == "encoder":
            for n, p in model.named_parameters():
                p.requires_grad_(n.split(".")[0] in ENCODER_MODULES or n.endswith("quantiles"))
        elif cfg.trainable != "all":
            raise ValueError(f"trainable must be 'all' or 'encoder', not {cfg.trainable!r}")
        named = [(n, p) for n, p in model.named_parameters() if not n.endswith("quantiles") and p.requires_grad]
        params = [p for n, p in named if n != "gain_steps" and n not in new_names]
        if extra_modules is not None:
            params += list(extra_modules.parameters())
        self.extra_modules = extra_modules
        groups = [{"params": params, "lr_scale": 1.0}]
        new = [p for n, p in named if n in new_names]
        if new:  # blocks that start as identities grow from zero output weights: slowly at the base lr
            groups.append({"params": new, "lr_scale": cfg.new_lr_scale})
        gains = [p for n, p in named if n == "gain_steps"]
        if gains:  # in scale-index steps (tens), not weight units (hundredths): Adam moves both ~lr per step
            groups.append({"params": gains, "lr_scale": cfg.gain_lr_scale})
        self.opt = torch.optim.Adam(groups, lr=cfg.lr)
        self.aux_opt = torch.optim.Adam([p for n, p in model.named_parameters() if n.endswith("quantiles")],
                                        lr=1e-3)
        if isinstance(images, Dataset):  # a ready source of 3xSxS crops (e.g. packed tiles)
            data = images
        else:
            data = CropDataset(images, crop_size=cfg.crop, count=cfg.crops_per_epoch, detail=cfg.detail,
                               scales=tuple(cfg.scales))
        self.loader = DataLoader(data, batch_size=cfg.batch // self.world, shuffle=True, drop_last=True,
                                 num_workers=0)
        self.step = 0
        self.fresh_optimiser_at: int | None = None   # set by continue_from: the step a fresh Adam starts at
        self.train_s = 0.0         # seconds of training over every resumed segment, summed over the processes
        self.ckpt = self.run_dir / "checkpoint.pt"
        self.ema = self._fresh_ema() if cfg.ema else None

    def _fresh_ema(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in self.model.named_parameters()}

    @torch.no_grad()
    def _update_ema(self) -> None:
        # Short runs average over their own length: the decay ramps up as (1 + t) / (10 + t).
        decay = min(self.cfg.ema, (1 + self.step) / (10 + self.step))
        for n, p in self.model.named_parameters():
            self.ema[n].lerp_(p.detach(), 1 - decay)

    @contextlib.contextmanager
    def averaged(self):
        """The model holds the averaged weights inside this block (a no-op without ``cfg.ema``)."""
        if self.ema is None:
            yield self.model
            return
        params = dict(self.model.named_parameters())
        raw = {n: p.detach().clone() for n, p in params.items()}
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(self.ema[n])
        try:
            yield self.model
        finally:
            with torch.no_grad():
                for n, p in params.items():
                    p.copy_(raw[n])

    def state(self) -> dict:
        """Everything needed to resume, as tensors and numbers only."""
        s = {"model": self.model.state_dict(), "opt": self.opt.state_dict(),
             "aux_opt": self.aux_opt.state_dict(), "step": self.step, "rng": torch.get_rng_state(),
             "train_s": self.train_s}
        if self.lineage:   # what --init started from: a resume without --init still counts the whole lineage
            s["lineage"] = dict(self.lineage)
        if self.extra_modules is not None:
            s["extra"] = self.extra_modules.state_dict()
        if self.ema is not None:
            s["ema"] = self.ema
        return s

    def save(self) -> None:
        """Write the checkpoint atomically (rank 0 only)."""
        if self.rank == 0:
            atomic_save(self.state(), self.ckpt)

    def resume(self) -> bool:
        """Load the run's checkpoint if there is one; returns whether it did."""
        if not self.ckpt.is_file():
            return False
        s = load_checkpoint(self.ckpt)
        rows = s.get("model", {}).get("gain_steps")
        if rows is not None and hasattr(self.model, "num_qualities") and rows.shape[0] != self.model.num_qualities:
            raise CheckpointError(f"checkpoint {self.ckpt} trains {rows.shape[0]} rate points, this run "
                                  f"{self.model.num_qualities}: give --rate-points {rows.shape[0]} to resume it")
        try:
            fit_entropy_tables(self.model, s["model"])
            self.model.load_state_dict(s["model"])
            self._load_opt(s["opt"])
            self.aux_opt.load_state_dict(s["aux_opt"])
            if self.extra_modules is not None and "extra" in s:
                self.extra_modules.load_state_dict(s["extra"])
            self.step = int(s["step"])
            self.train_s = checkpoint_train_seconds(s, self.run_dir)
            if s.get("lineage"):
                self.lineage = dict(s["lineage"])
            if self.ema is not None:  # a checkpoint without an average starts it from its weights
                self.ema = {n: t.clone() for n, t in s["ema"].items()} if "ema" in s else self._fresh_ema()
            torch.set_rng_state(s["rng"])
            if self.rank:  # the saved state is rank 0's: the other ranks would draw its very crops again
                torch.manual_seed(self.cfg.seed + 7919 * self.rank + int(torch.randint(0, 2**31, (1,))))
        except (RuntimeError, KeyError, ValueError, TypeError) as e:
            raise CheckpointError(f"checkpoint {self.ckpt} does not fit this run: {first_line(e)}") from None
        return True

    def _load_opt(self, saved: dict) -> None:
        """Load the optimiser's state; a checkpoint from before the gain vectors had their own parameter
        group (one group, parameters in the model's order) is mapped onto the groups by parameter."""
        if len(saved["param_groups"]) == len(self.opt.param_groups):
            self.opt.load_state_dict(saved)
            return
        old_order = [p for n, p in self.model.named_parameters() if not n.endswith("quantiles")]
        if self.extra_modules is not None:
            old_order += list(self.extra_modules.parameters())
        if len(old_order) != len(saved["param_groups"][0]["params"]):
            raise ValueError("optimiser state does not match the model's parameters")
        for i, p in enumerate(old_order):
            if i in saved["state"]:
                self.opt.state[p] = {k: v.clone() if torch.is_tensor(v) else v for k, v in saved["state"][i].items()}

    def _sync_grads(self, params) -> None:
        """Average gradients over ranks for parameters that live outside the DDP module."""
        import torch.distributed as dist
        for p in params:
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad /= self.world

    def _batches(self):
        while True:
            yield from self.loader

    def train(self, progress: bool = True) -> dict:
        """Run until ``cfg.steps``; returns the last logged metrics."""
        cfg, model = self.cfg, self.model
        model.train()
        lead = self.rank == 0
        log_path = self.run_dir / ("log.csv" if lead else f"log.rank{self.rank}.csv")
        new_log = not log_path.exists() or self.step == 0
        logf = open(log_path, "w" if new_log else "a", newline="")
        writer = csv.writer(logf)
        if new_log:
            writer.writerow(["step", "time_s", "lr", "loss", "bpp", "psnr_yuv", "aux"])
        if lead:
            (self.run_dir / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
        bar = tqdm(total=cfg.steps, initial=self.step, desc=f"train {model.name}",
                   disable=not (progress and lead), dynamic_ncols=True)
        last_ckpt, t0, metrics = time.time(), time.time(), {}
        last_snap, s0 = time.time(), self.train_s
        gen = torch.Generator().manual_seed(cfg.seed + self.step + 7919 * self.rank)
        acc = {"loss": 0.0, "bpp": 0.0, "psnr_yuv": 0.0, "n": 0}
        # SIGTERM (kill, a scheduler's pre-emption) and SIGINT (Ctrl-C) end the run at the next step
        # boundary, checkpointed and snapshotted, instead of a traceback that loses the steps since the last
        # checkpoint.
        self.interrupted = False
        on_main = threading.current_thread() is threading.main_thread()
        previous = {s: signal.signal(s, self._stop) for s in (signal.SIGTERM, signal.SIGINT)} if on_main else {}
        for rgb in self._batches():
            if self.step >= cfg.steps or self.interrupted or (cfg.max_seconds and time.time() - t0 > cfg.max_seconds):
                break
            lr = lr_at(self.step, cfg)
            if cfg.rewarm and self.fresh_optimiser_at is not None:
                lr *= min(1.0, (self.step - self.fresh_optimiser_at + 1) / cfg.rewarm)
            for g in self.opt.param_groups:
                g["lr"] = lr * g.get("lr_scale", 1.0)
            y, uv = rgb_to_yuv420(rgb)
            if cfg.channels_last:
                y, uv = y.contiguous(memory_format=torch.channels_last), uv.contiguous(memory_format=torch.channels_last)
            q = sample_rate_points(cfg.rate_weights, model.num_qualities, rgb.shape[0], gen)
            if cfg.rate_refresh and self.step % cfg.rate_refresh == 0:
                model.refresh_rate_tables()
                model.train()
            with torch.autocast(y.device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
                out = self.forward(y, uv, q, rate=cfg.rate)
            out = {k: (v.float() if torch.is_tensor(v) else v) for k, v in out.items()}
            parts = rd_loss(model, out, y, uv, q, cfg.distortion)
            loss = parts["loss"]
            if "aux_loss" in out:  # a model option's own training term (e.g. a feature loss)
                loss = loss + out["aux_loss"]
            if self.extra_loss is not None:
                extra, _ = self.extra_loss(out, y, uv, q)
                loss = loss + extra
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            if self.world > 1 and self.extra_modules is not None:
                self._sync_grads(self.extra_modules.parameters())
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            self.opt.step()
            aux = model.aux_loss()
            self.aux_opt.zero_grad(set_to_none=True)
            aux.backward()
            if self.world > 1:
                self._sync_grads(p for g in self.aux_opt.param_groups for p in g["params"])
            self.aux_opt.step()
            if self.ema is not None:
                self._update_ema()
            self.step += 1
            for k in ("loss", "bpp", "psnr_yuv"):
                acc[k] += float(parts[k] if k != "loss" else loss.detach())
            acc["n"] += 1
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                metrics = {k: acc[k] / acc["n"] for k in ("loss", "bpp", "psnr_yuv")}
                writer.writerow([self.step, round(time.time() - t0, 1), f"{lr:.3g}",
                                 f"{metrics['loss']:.4f}", f"{metrics['bpp']:.4f}", f"{metrics['psnr_yuv']:.3f}",
                                 f"{float(aux.detach()):.2f}"])
                logf.flush()
                bar.set_postfix(loss=f"{metrics['loss']:.3f}", bpp=f"{metrics['bpp']:.3f}",
                                psnr=f"{metrics['psnr_yuv']:.2f}")
                acc = {"loss": 0.0, "bpp": 0.0, "psnr_yuv": 0.0, "n": 0}
            bar.update(1)
            self.train_s = s0 + (time.time() - t0) * self.world   # torchrun: every process's time counts
            if cfg.snapshot_every_s and time.time() - last_snap > cfg.snapshot_every_s:
                self.snapshot()
                last_snap = time.time()
            if time.time() - last_ckpt > cfg.checkpoint_every_s:
                self.save()
                last_ckpt = time.time()
        bar.close()
        logf.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        self.save()
        if cfg.snapshot_every_s:
            self.snapshot()
        if self.owns_group:   # leave together: a gloo rank whose peer has exited can abort in its I/O thread
            import torch.distributed as dist
            dist.barrier()
            dist.destroy_process_group()
            self.owns_group = False
        model.eval()
        return metrics

    def weights_meta(self) -> dict:
        """Step, training seconds and history to record in this run's weights, counted over the lineage of
        the file it started from."""
        c = self.cfg
        what = (f"{c.crop}x{c.crop} crops, batch {c.batch}, lr {c.lr:g} (cosine over {c.steps:,} steps), "
                f"{c.distortion} distortion" + (f", rate-point weights {c.rate_weights}" if c.rate_weights else "")
                + (f", seed {c.seed}" if c.seed else ""))
        return lineage_meta(self.lineage, self.step, self.train_s, what)

    def _stop(self, signum, frame) -> None:
        self.interrupted = True

    def snapshot(self) -> Path | None:
        """Keep the current weights as RUN_DIR/snapshots/step-N.safetensors with the step and the training
        time so far, for the rate-distortion-against-CPU-time curve (rank 0 only)."""
        if self.rank != 0:
            return None
        out = self.run_dir / "snapshots" / f"step-{self.step:07d}.safetensors"
        out.parent.mkdir(exist_ok=True)
        with self.averaged():
            export_trained(self.model, self.run_dir, out, threads=torch.get_num_threads(), **self.weights_meta())
        self.model.train()
        return out
