"""A GPU burst: a few minutes of teacher training on a lent GPU, then student-2k distilled from it.

    python -m distill.gpu pack [--out gpu/crops.npz]        here: detail-weighted training tiles (<= 18 MiB)
    python3 -m distill.gpu run --out DIR [--minutes 8]      there, under the GPU machine's own python3
    python -m distill.gpu run --out DIR --dry               here: the same path on the CPU in a minute or two
    python -m distill.gpu unpack DIR [--into weights]       here: the returned files -> weights/*.safetensors
    python -m distill.gpu check DIR                         the return limits (8 files, 16 MiB each, 64 in all)

``run`` installs the carried wheels first (distill.gpu_env), so nothing but the standard library and torch is
imported before it. The teacher goes on from weights/teacher.safetensors and the step it records (bf16
autocast, channels_last, batches of 256x256 crops of the packed tiles drawn on the GPU), writes its weights
to DIR every 2 minutes and at the end as float16 parts of at most 15 MiB, then distils student-2k from it
in the time left. ``unpack`` merges the parts, rebuilds the entropy tables here and records the step and
the GPU-seconds in the weights' metadata. docs/gpu.md says how to run it in a lent window.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

STARTED = time.monotonic()  # the command's budget counts from here (before torch is imported)

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from . import gpu_env  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PACK = Path("gpu/crops.npz")
WHEELS = Path("gpu/wheels")
RUN_DIR = Path("runs/gpu")
PACK_FORMAT = "lightcodec-tiles-1"   # per tile: G, R-G, B-G mod 256, gradient-predicted, lzma
PART_BYTES = 15 * 2**20              # one returned weights part
PACK_MIB = 18.0
MIN_STUDENT_S = 30.0                 # a student phase shorter than this is skipped
END_MARGIN_S = 10.0                  # kept free at the end of the budget for the student's last writes


# --------------------------------------------------------------------------- the packed tiles


def encode_tile(tile) -> bytes:
    """3xTxT uint8 tile -> lzma bytes of its gradient-predicted G, R-G, B-G planes (lossless)."""
    import lzma

    import numpy as np

    x = tile.astype(np.int16)
    planes = np.stack((x[1], x[0] - x[1], x[2] - x[1]))
    residual = np.diff(np.diff(planes, axis=-2, prepend=0), axis=-1, prepend=0) % 256
    return lzma.compress(residual.astype(np.uint8).tobytes(), preset=6)


def decode_tile(data: bytes, size: int):
    """Inverse of ``encode_tile``: the 3xTxT uint8 tile."""
    import lzma

    import numpy as np

    r = np.frombuffer(lzma.decompress(data), np.uint8).reshape(3, size, size).astype(np.int64)
    p = r.cumsum(-2).cumsum(-1) % 256
    return np.stack(((p[1] + p[0]) % 256, p[0], (p[0] + p[2]) % 256)).astype(np.uint8)


def _candidates(scaled: dict, tile: int, detail: float, rng) -> dict:
    """Non-overlapping tiles of every image at every scale ({(image, scale): array}): {scale: [(key,
    image, y, x, energy)]}, each scale's list in the order of a weighted draw without replacement
    (weight (energy + eps) ** detail, Efraimidis-Spirakis keys)."""
    from training import crops

    out: dict[float, list] = {}
    for (i, s), im in scaled.items():
        h, w = im.shape[:2]
        if min(h, w) < tile:
            continue
        oy, ox = int(rng.integers(0, h % tile + 1)), int(rng.integers(0, w % tile + 1))
        for y in range(oy, h - tile + 1, tile):
            for x in range(ox, w - tile + 1, tile):
                e = crops.detail_energy(im[y:y + tile, x:x + tile])
                key = rng.random() ** (1.0 / (e + crops.DETAIL_EPS) ** detail)
                out.setdefault(s, []).append((key, i, y, x, e))
    return {s: sorted(c, reverse=True) for s, c in out.items()}


def make_pack(paths: list, out: str | Path, tile: int = 320, max_mib: float = PACK_MIB, detail: float = 1.0,
              scales: tuple[float, ...] = (1.0, 0.75, 0.5), seed: int = 0, max_tiles: int | None = None) -> dict:
    """Pack detail-weighted tiles of the training photos (equal shares per scale, like CropDataset's
    scales) into one .npz of at most ``max_mib`` MiB; returns what went in."""
    import numpy as np

    from training import crops
    from codec.images import load_rgb

    t0 = time.monotonic()
    rng = np.random.default_rng(seed)
    paths = [Path(p) for p in paths]
    images = [load_rgb(p) for p in paths]
    scaled = {(i, s): crops.downscale(im, s) for s in dict.fromkeys(scales) for i, im in enumerate(images)}
    cands = _candidates(scaled, tile, detail, rng)
    order = []  # round robin over the scales: equal shares, as CropDataset draws a scale first
    for rank in range(max(map(len, cands.values()), default=0)):
        order += [lst[rank] + (s,) for s, lst in cands.items() if rank < len(lst)]
    limit = int(max_mib * 2**20) - 64 * 1024  # room for the npz's headers
    blobs, rows, used = [], [], 0
    for key, i, y, x, e, s in order[:max_tiles]:
        data = encode_tile(np.ascontiguousarray(scaled[i, s][y:y + tile, x:x + tile].transpose(2, 0, 1)))
        if used + len(data) + 256 * (len(blobs) + 1) > limit:  # 256: the tile's row in the small arrays
            break
        blobs.append(data)
        rows.append((paths[i].stem, s, y, x, e))
        used += len(data)
    if not blobs:
        raise ValueError(f"no {tile}x{tile} tile fits (images too small, or --max-mib too low)")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez(tmp, format=np.array(PACK_FORMAT), tile=np.array(tile),
             blob=np.frombuffer(b"".join(blobs), np.uint8), offsets=np.cumsum([0] + [len(b) for b in blobs]),
             source=np.array([r[0] for r in rows]), scale=np.array([r[1] for r in rows], np.float32),
             yx=np.array([(r[2], r[3]) for r in rows], np.int32), energy=np.array([r[4] for r in rows], np.float32))
    os.replace(tmp, out)
    per_scale = {str(s): sum(1 for r in rows if r[1] == s) for s in scales}
    return {"pack": str(out), "tiles": len(blobs), "tile": tile, "per_scale": per_scale,
            "mib": round(out.stat().st_size / 2**20, 2), "raw_mib": round(len(blobs) * 3 * tile * tile / 2**20, 2),
            "megapixels": round(len(blobs) * tile * tile / 1e6, 2), "seconds": round(time.monotonic() - t0, 1)}


def load_pack(path: str | Path):
    """The packed tiles as an N x 3 x T x T uint8 tensor; ValueError (one line) for a missing or foreign file."""
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no training pack at {path}: make gpu-pack (and carry it to the GPU machine)")
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["format"]) != PACK_FORMAT:
                raise ValueError(f"format {str(z['format'])!r}")
            tile, blob, offsets = int(z["tile"]), z["blob"].tobytes(), z["offsets"]
        tiles = [decode_tile(blob[a:b], tile) for a, b in zip(offsets[:-1], offsets[1:])]
    except (OSError, KeyError, ValueError, EOFError, ImportError) as e:
        raise ValueError(f"cannot read training pack {path}: {str(e).splitlines()[0]}") from None
    return torch.from_numpy(np.stack(tiles))


class TileSampler:
    """Random crops (and flips) of the packed tiles, drawn where the model trains, as floats in [0, 1]."""

    def __init__(self, tiles, crop: int, batch: int, device, seed: int = 0):
        if crop > tiles.shape[-1]:
            raise ValueError(f"crop {crop} is larger than the packed tiles ({tiles.shape[-1]})")
        self.tiles, self.crop, self.batch = tiles.to(device), crop, batch
        self.gen = torch.Generator(device=device).manual_seed(seed)
        self.span = torch.arange(crop, device=device)
        self.channels = torch.arange(3, device=device)[None, :, None, None]

    def __call__(self):
        n, _, t, _ = self.tiles.shape
        b, dev, g = self.batch, self.tiles.device, self.gen
        idx = torch.randint(n, (b, 1, 1, 1), generator=g, device=dev)
        oy, ox = (torch.randint(t - self.crop + 1, (b, 1), generator=g, device=dev) for _ in range(2))
        rows = (oy + self.span)[:, None, :, None]
        cols = (ox + self.span)[:, None, None, :]
        x = self.tiles[idx, self.channels, rows, cols]
        flips = torch.rand(2, b, 1, 1, 1, generator=g, device=dev) < 0.5
        x = torch.where(flips[0], x.flip(-1), x)
        x = torch.where(flips[1], x.flip(-2), x)
        return x.float().div_(255.0)


# --------------------------------------------------------------------------- returned weights


def split_state(state: dict, limit: int = PART_BYTES) -> list[dict]:
    """Split a state dict (key order kept) into parts of at most ``limit`` bytes of tensor data."""
    parts, size = [{}], 0
    for k, v in state.items():
        n = v.numel() * v.element_size()
        if n > limit:
            raise ValueError(f"tensor {k} alone is {n} bytes, over the part limit {limit}")
        if size + n > limit:
            parts.append({})
            size = 0
        parts[-1][k] = v
        size += n
    return parts


def write_parts(model, out: Path, tag: str, meta: dict, limit: int = PART_BYTES) -> list[Path]:
    """Write a model's weights (floats as float16) into OUT/TAG-0.safetensors, TAG-1, ... with ``meta``;
    every part is written before any is renamed into place, so a set is never half old, half new."""
    from safetensors.torch import save_file

    state = {k: (v.detach().to("cpu", torch.float16) if v.is_floating_point() else v.detach().cpu()).contiguous()
             for k, v in model.state_dict().items()}
    parts = split_state(state, limit)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, part in enumerate(parts):
        tmp = out / f"{tag}-{i}.tmp"
        save_file(part, str(tmp), metadata={**{k: str(v) for k, v in meta.items()},
                                            "preset": model.name, "part": str(i), "parts": str(len(parts))})
        paths.append(tmp)
    final = [p.with_suffix(".safetensors") for p in paths]
    for tmp, dst in zip(paths, final):
        tmp.chmod(0o644)
        os.replace(tmp, dst)
    return final


def read_parts(src: str | Path) -> dict:
    """The weights returned in ``src``: {tag: (state dict, metadata)}; ValueError (one line) for a set
    with parts missing or from different steps."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    groups: dict[str, list[Path]] = {}
    for p in sorted(Path(src).glob("*-[0-9]*.safetensors")):
        groups.setdefault(p.stem.rsplit("-", 1)[0], []).append(p)
    found = {}
    for tag, paths in groups.items():
        try:
            metas = []
            for p in paths:
                with safe_open(str(p), "pt") as f:
                    metas.append(f.metadata() or {})
            state = {k: v for p in paths for k, v in load_file(str(p)).items()}
        except (OSError, SafetensorError) as e:
            raise ValueError(f"cannot read returned weights {paths[0]}: {str(e).splitlines()[0]}") from None
        want = int(metas[0].get("parts", 0))
        steps = {m.get("step") for m in metas}
        if want != len(paths) or sorted(int(m.get("part", -1)) for m in metas) != list(range(want)):
            raise ValueError(f"{tag} in {src}: {len(paths)} parts of {want}; copy every {tag}-N.safetensors")
        if len(steps) != 1:
            raise ValueError(f"{tag} in {src}: parts from different steps ({', '.join(sorted(steps))})")
        found[tag] = (state, metas[0])
    return found


# Metadata that unpacked weights keep (the rest describes the parts).
KEEP_META = ("step", "train_s", "threads", "gpu_s", "gpu_steps", "gpu", "gpu_world", "gpu_batch", "gpu_crop",
             "bf16", "kd_teacher_step")


def unpack(src: str | Path, into: str | Path = "weights", verify: bool = False) -> list[dict]:
    """Turn the returned parts into ``into``/PRESET.safetensors (entropy tables rebuilt here, step and
    GPU-seconds in the metadata); ``verify``: encode and decode a picture with each through the codec CLI."""
    from codec.registry import create_model
    from training import export_trained
    from codec.weights import WeightsError, load_model, weights_metadata

    found = read_parts(src)
    if not found:
        raise ValueError(f"no returned weights (NAME-N.safetensors) in {src}")
    done = []
    for tag, (state, meta) in sorted(found.items()):
        model = create_model(meta["preset"])
        try:
            model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
        except (RuntimeError, KeyError) as e:
            raise WeightsError(f"returned {tag} does not fit {meta['preset']!r}: {str(e).splitlines()[0]}") from None
        path = Path(into) / f"{meta['preset']}.safetensors"
        keep = {k: meta[k] for k in KEEP_META if k in meta and k != "step"}
        with torch.no_grad():
            export_trained(model, src, path, int(meta["step"]), **keep)
        load_model(str(path))  # what the codec will do with it
        row = {"weights": str(path), **{k: v for k, v in weights_metadata(path).items() if k != "preset"}}
        if verify:
            with tempfile.TemporaryDirectory() as work:
                row["roundtrip"] = roundtrip(meta["preset"], path, Path(work))
        done.append(row)
    return done


def roundtrip(preset: str, weights: Path, work: Path) -> str:
    """Encode then decode a small picture with ``weights`` through ``python -m codec``; returns the sizes,
    raises ValueError with the CLI's error line when either step fails."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, 96)[None, :, None] * np.ones((64, 1, 3))
    img = np.clip(ramp + rng.normal(0, 12, (64, 96, 3)), 0, 255).astype(np.uint8)
    src, bits, back = work / "in.png", work / f"{preset}.bin", work / f"{preset}.png"
    Image.fromarray(img).save(src)
    for cmd in (["encode", str(src), "-o", str(bits), "--model", preset, "--weights", str(weights), "-q", "3"],
                ["decode", str(bits), "-o", str(back), "--weights", str(weights)]):
        r = subprocess.run([sys.executable, "-m", "codec", *cmd], cwd=ROOT, capture_output=True, text=True)
        if r.returncode != 0:
            raise ValueError(f"python -m codec {cmd[0]} with {weights} failed: {r.stderr.strip()[-300:]}")
    with Image.open(back) as im:
        if im.size != (96, 64):
            raise ValueError(f"decoded picture is {im.size}, not (96, 64)")
    return f"96x64 -> {bits.stat().st_size} bytes -> decoded"


# --------------------------------------------------------------------------- the burst


@dataclass
class BurstOptions:
    """One burst: where things are, how long, and the training settings."""

    out: Path
    minutes: float = 8.0            # teacher training
    budget_minutes: float = 9.5     # the whole command from its start (the student gets what is left)
    pack: Path = PACK
    run_dir: Path = RUN_DIR
    weights_dir: Path = Path("weights")
    student: str | None = "student-2k"
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
            m["gpu_s"] = round(float(m.pop("gpu_s_before")) + (self.train_s - base_s) * self.world, 1)
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


def _phase(name: str, model, profile: dict, o: BurstOptions, sampler, device, seconds: float,
           max_steps, weights: Path, distiller=None) -> tuple[dict, object]:
    """Train one model for ``seconds`` (or ``max_steps``) from ``weights``; returns its summary and trainer."""
    from training import TrainConfig

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
    if not weights.is_file():
        raise ValueError(f"no weights to go on from at {weights}")
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
    """Teacher for ``o.minutes`` from the shipped weights, then the student from it in the time left;
    weights, logs and gpu.json go to ``o.out``. Returns the summary (also in gpu.json)."""
    from codec.registry import create_model
    from training.teacher import PROFILES as TEACHER_PROFILES

    from .losses import Distiller, KDWeights
    from .train import PROFILES as STUDENT_PROFILES

    t_start = o.started or time.monotonic()
    o.out.mkdir(parents=True, exist_ok=True)
    device = _device(o.dry)
    rank, world = int(os.environ.get("RANK", 0)), _world()
    if o.batch % world:
        raise ValueError(f"batch {o.batch} does not split over {world} processes")
    summary = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "dry": o.dry, "device": _device_name(device),
               "world": world, "torch": torch.__version__, "env": o.env, "options": asdict(o), "phases": {}}
    _write_summary(o, summary)
    try:
        tiles = load_pack(o.pack)
        summary["pack"] = {"tiles": int(tiles.shape[0]), "tile": int(tiles.shape[-1])}
        sampler = TileSampler(tiles, o.crop, o.batch // world, device, seed=o.seed + 1000 * rank)
        teacher = create_model("teacher").to(device)
        summary["setup_s"] = round(time.monotonic() - t_start, 1)
        phase, trainer = _phase("teacher", teacher, TEACHER_PROFILES["full"], o, sampler, device, o.minutes * 60,
                                o.teacher_steps, o.weights_dir / "teacher.safetensors")
        summary["phases"]["teacher"] = phase
        _write_summary(o, summary)
        left = o.budget_minutes * 60 - (time.monotonic() - t_start) - END_MARGIN_S
        if o.student and (left >= MIN_STUDENT_S or o.dry):
            student = create_model(o.student).to(device)
            distiller = Distiller(AutocastTeacher(teacher, o.bf16), student, KDWeights()).to(device)
            distiller.teacher_step = trainer.step
            phase, _ = _phase(o.student, student, STUDENT_PROFILES["full"], o, sampler, device, max(left, 1.0),
                              o.student_steps, o.weights_dir / f"{o.student}.safetensors", distiller)
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


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m distill.gpu", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    k = sub.add_parser("pack", help="pack detail-weighted training tiles for the GPU machine")
    k.add_argument("--data", help="training images (default data/train)")
    k.add_argument("--out", default=str(PACK))
    k.add_argument("--tile", type=int, default=320, help="tile side (crops of up to this side are drawn from it)")
    k.add_argument("--max-mib", type=float, default=PACK_MIB, help="size limit of the pack")
    k.add_argument("--detail", type=float, default=1.0, help="detail weighting (as CropDataset's)")
    k.add_argument("--scales", default="1,0.75,0.5", help="downscalings, equal shares (as CropDataset's)")
    k.add_argument("--max-tiles", type=int)
    k.add_argument("--seed", type=int, default=0)
    r = sub.add_parser("run", help="the burst (on the GPU machine), or its CPU rehearsal (--dry)")
    r.add_argument("--out", default=os.environ.get("OUT"), help="returned files (default $OUT)")
    r.add_argument("--minutes", type=float, help="teacher training minutes (default 8; dry 2, or 4 steps)")
    r.add_argument("--budget", type=float, help="minutes for the whole command (default 9.5; dry 6)")
    r.add_argument("--pack", default=str(PACK))
    r.add_argument("--wheels", default=str(WHEELS), help="carried wheels to install where missing")
    r.add_argument("--site", default=str(RUN_DIR / "site"), help="where the wheels are installed")
    r.add_argument("--run-dir", help="checkpoints and logs (default runs/gpu; dry runs/gpu-dry)")
    r.add_argument("--weights-dir", default="weights", help="the weights to go on from")
    r.add_argument("--student", default="student-2k", help="student to distil afterwards ('none': no student)")
    r.add_argument("--batch", type=int, help="global batch (default 32; dry 2)")
    r.add_argument("--crop", type=int, help="crop side (default 256; dry 64)")
    r.add_argument("--lr", type=float, help="learning rate (default: the full profiles')")
    r.add_argument("--snapshot-minutes", type=float, help="weights to OUT this often (default 2)")
    r.add_argument("--no-bf16", action="store_true")
    r.add_argument("--no-channels-last", action="store_true")
    r.add_argument("--dry", action="store_true", help="rehearse on the CPU: a few small steps, same path")
    u = sub.add_parser("unpack", help="returned files -> weights/*.safetensors")
    u.add_argument("src")
    u.add_argument("--into", default="weights")
    u.add_argument("--verify", action="store_true", help="encode and decode a picture with each (codec CLI)")
    c = sub.add_parser("check", help="check a folder against the return limits")
    c.add_argument("src")
    a = p.parse_args(argv)
    if a.cmd == "run":
        return _cmd_run(a)
    from codec.cli_util import fail
    try:
        if a.cmd == "pack":
            from photos import train_images
            scales = tuple(float(s) for s in a.scales.split(","))
            info = make_pack(train_images(a.data), a.out, a.tile, a.max_mib, a.detail, scales, a.seed, a.max_tiles)
            print(json.dumps(info))
        elif a.cmd == "unpack":
            for row in unpack(a.src, a.into, a.verify):
                print(json.dumps(row))
        else:
            problems = gpu_env.check_return(a.src)
            if problems:
                return fail("; ".join(problems))
            print(f"{a.src}: within the return limits")
    except (ValueError, OSError, KeyError) as e:
        return fail(e)
    return 0


def _cmd_run(a) -> int:
    """``run``: make this Python fit (wheels, stand-ins) before anything of the codec is imported."""
    from codec.cli_util import fail  # the standard library only

    if not a.out:
        return fail("--out DIR is needed (or $OUT set)")
    try:
        env = gpu_env.prepare(a.wheels, a.site)
    except gpu_env.EnvError as e:
        return fail(e)
    # The lent machine runs from a copy of the tree, not an installed package: no entry points, so
    # the model packages register by being imported.
    import student.presets  # noqa: F401
    import teacher.presets  # noqa: F401
    given = {k: v for k, v in dict(minutes=a.minutes, budget_minutes=a.budget, batch=a.batch, crop=a.crop,
                                     lr=a.lr, snapshot_minutes=a.snapshot_minutes).items() if v is not None}
    given.update(pack=Path(a.pack), weights_dir=Path(a.weights_dir), env=env,
                 student=None if a.student == "none" else a.student, bf16=not a.no_bf16,
                 channels_last=not a.no_channels_last, **({"run_dir": Path(a.run_dir)} if a.run_dir else {}))
    given["started"] = STARTED
    o = BurstOptions.rehearsal(Path(a.out), **given) if a.dry else BurstOptions(out=Path(a.out), **given)
    try:
        summary = run_burst(o)
    except ImportError as e:
        return fail(f"cannot import {e.name or e}: {e} (carry its wheel: make gpu-wheels GPU_WHEEL_EXTRA=...)")
    except (ValueError, OSError, KeyError, RuntimeError) as e:
        return fail(e)
    if int(os.environ.get("RANK", 0)) == 0:
        print(json.dumps({k: summary[k] for k in ("device", "wall_s", "phases", "return_check")}, default=str))
    return 0 if summary["return_check"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
