"""Encoder-only training against a fixed decoder, optionally toward latents refined per crop.

``train_encoder`` trains only the analysis transforms (decoder and entropy models fixed, so the same decoder
reads every bitstream) on the RD loss, on fresh random crops or on refined targets plus the distance to
them, in quantisation steps. ``make_targets`` makes those targets: with every weight fixed, per-picture
refinement (codec.refine, the `--effort` levels) of random training crops at random rate points, stored
as (crop, rate point, refined latent, refined hyper-latent) in .npz shards. Measured (README, "Training
crops"): on 256x256 crops the plain RD loss closes the whole gap the refinement found on the step-42,292
student-2k, and the targets add nothing over it.

    python -m distill.refined train --out runs/enc.safetensors --crop 256 --latent-weight 0
    python -m distill.refined targets --out runs/refined --count 2000
    python -m distill.refined train --targets runs/refined --out runs/enc.safetensors --steps 3000
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from codec.cli_util import run_command
from codec.color import rgb_to_yuv420
from codec.refine import Effort, refine_latents
from codec.weights import WeightsError, load_model, save_weights, shipped_weights, weights_metadata
from photos import train_images
from training import ENCODER_MODULES, CropDataset, rd_loss

# The slow effort level without its time limit: a crop is small, the iteration count is what matters.
TARGET_EFFORT = Effort("target", iterations=80, time_limit_s=1e9, lr=0.05, noise_fraction=0.9)
SHARD = 16   # crops per .npz file: a killed run loses at most one shard


def make_targets(model, out_dir: str | Path, count: int, crop: int = 128, seed: int = 0,
                 effort: Effort = TARGET_EFFORT, detail: float = 1.0, progress: bool = True,
                 images: list | None = None) -> list[Path]:
    """Refine ``count`` random crops of ``images`` (default: the training photos; detail-weighted) at
    random rate points; write shards
    out_dir/targets-SEED-NNNN.npz with uint8 crops, rate points, refined latents and hyper-latents
    (float32) and the RD-cost saving of each over the encoder's own rate (codec.refine's costs are in bits
    per pixel; with the ``psnr`` objective their values are not ratios of anything). Existing shards of the
    same seed are kept."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    crops = CropDataset(images or train_images(), crop, count, seed=seed, detail=detail)
    rng = np.random.default_rng(seed)
    qs = rng.integers(0, model.num_qualities, count)
    written = []
    bar = tqdm(total=count, desc="refined targets", disable=not progress, dynamic_ncols=True)
    for first in range(0, count, SHARD):
        path = out_dir / f"targets-{seed}-{first // SHARD:04d}.npz"
        n = min(SHARD, count - first)
        if path.is_file():
            written.append(path)
            bar.update(n)
            continue
        rows = {"rgb": [], "q": [], "latent": [], "z": [], "saving": []}
        for i in range(first, first + n):
            rgb = crops[i][None]
            y, uv = rgb_to_yuv420(rgb)
            r = refine_latents(model, y, uv, int(qs[i]), effort)
            c0, cb = r.history[0]["cost"], min(h["cost"] for h in r.history)
            bpp0 = max(r.history[0]["bpp"], 1e-6)
            rows["rgb"].append((rgb[0] * 255).round().to(torch.uint8).numpy())
            rows["q"].append(int(qs[i]))
            rows["latent"].append(r.latents[0][0].numpy())
            rows["z"].append(r.latents[1][0].numpy())
            rows["saving"].append((c0 - cb) / bpp0)
            bar.update(1)
            bar.set_postfix(saving=f"{np.mean(rows['saving']):.3f}")
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **{k: np.stack(v) for k, v in rows.items()})
        tmp.rename(path)
        written.append(path)
    bar.close()
    return written


def load_targets(target_dir: str | Path) -> dict[str, torch.Tensor]:
    """All shards in ``target_dir`` as tensors: rgb (float, 0-1), q, latent, z, saving."""
    shards = sorted(Path(target_dir).glob("targets-*.npz"))
    shards = [s for s in shards if not s.name.endswith(".tmp.npz")]
    if not shards:
        raise FileNotFoundError(f"no targets-*.npz shards in {target_dir}")
    parts = [dict(np.load(s)) for s in shards]
    cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return {"rgb": torch.from_numpy(cat["rgb"]).float() / 255, "q": torch.from_numpy(cat["q"]).long(),
            "latent": torch.from_numpy(cat["latent"]), "z": torch.from_numpy(cat["z"]),
            "saving": torch.from_numpy(cat["saving"])}


@dataclass
class EncoderDistill:
    """Encoder-only training: RD loss, plus the distance to refined latents where the batches have them."""

    steps: int = 3000
    batch: int = 8
    lr: float = 1e-4
    latent_weight: float = 0.01   # x mean squared distance in quantisation steps (latent and hyper-latent)
    rd_weight: float = 1.0        # x the usual RD loss (noise proxy) of the encoder's own latents
    log_every: int = 50
    seed: int = 0
    distortion: str = "psnr"      # training.loss.DISTORTIONS ("psnr": the gradient of PSNR-YUV)


def encoder_parameters(model) -> list[torch.nn.Parameter]:
    """The parameters of the transforms only the encoder runs."""
    params = []
    for name in ENCODER_MODULES:
        module = getattr(model, name, None)
        if module is not None:
            params.extend(module.parameters())
    return params


def target_batches(targets: dict[str, torch.Tensor]):
    """A batch source over refined targets: ``draw(gen, n) -> (rgb, q, latent, z)``."""
    def draw(gen, n):
        idx = torch.randint(0, targets["rgb"].shape[0], (n,), generator=gen)
        # No flips: strided convolutions are not flip-equivariant (the sampling grid shifts), so a flipped
        # crop's refined latents are not the flipped latents.
        return tuple(targets[k][idx] for k in ("rgb", "q", "latent", "z"))
    return draw


def crop_batches(crops, qualities: int):
    """A batch source of fresh random crops (a CropDataset) at random rate points, no latent targets."""
    def draw(gen, n):
        rgb = torch.stack([crops[int(i)] for i in torch.randint(0, len(crops), (n,), generator=gen)])
        return rgb, torch.randint(0, qualities, (n,), generator=gen), None, None
    return draw


def train_encoder(model, batches, cfg: EncoderDistill, log_path: Path | None = None,
                  progress: bool = True) -> dict:
    """Train the analysis transforms of ``model`` (everything else fixed) on the RD loss plus, where the
    batch source (``target_batches``, ``crop_batches``, or a dict of targets) gives refined latents, the
    distance to them. Returns the last logged metrics."""
    if isinstance(batches, dict):
        batches = target_batches(batches)
    for p in model.parameters():
        p.requires_grad_(False)
    params = encoder_parameters(model)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    log = open(log_path, "w") if log_path else None
    acc, metrics, t0 = {"loss": 0.0, "dist": 0.0, "bpp": 0.0, "psnr_yuv": 0.0, "n": 0}, {}, time.time()
    model.train()
    bar = tqdm(range(1, cfg.steps + 1), desc="encoder training", disable=not progress,
               dynamic_ncols=True)
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = cfg.lr * 0.5 * (1 + np.cos(np.pi * step / cfg.steps))
        rgb, q, lat_t, z_t = batches(gen, cfg.batch)
        y, uv = rgb_to_yuv420(rgb)
        out = model(y, uv, q)
        dist = torch.zeros(())
        if lat_t is not None:
            gain = model._gain(q)[0]
            dist = (((out["latent"] - lat_t) * gain) ** 2).mean() + ((out["z"] - z_t) ** 2).mean()
        parts = rd_loss(model, out, y, uv, q, cfg.distortion)
        loss = cfg.rd_weight * parts["loss"] + cfg.latent_weight * dist
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        for k, v in (("loss", loss), ("dist", dist), ("bpp", parts["bpp"]), ("psnr_yuv", parts["psnr_yuv"])):
            acc[k] += float(v.detach()) if torch.is_tensor(v) else float(v)
        acc["n"] += 1
        if step % cfg.log_every == 0 or step == cfg.steps:
            metrics = {k: acc[k] / acc["n"] for k in ("loss", "dist", "bpp", "psnr_yuv")}
            metrics.update(step=step, time_s=round(time.time() - t0, 1))
            if log:
                log.write(json.dumps(metrics) + "\n")
                log.flush()
            bar.set_postfix(dist=f"{metrics['dist']:.3f}", bpp=f"{metrics['bpp']:.3f}")
            acc = {k: 0.0 for k in acc}
    model.eval()
    if log:
        log.close()
    return metrics


def provenance(source: str, cfg: EncoderDistill, data: str, seconds: float) -> dict:
    """The metadata of encoder-distilled weights: the source's (its training step and seconds) plus what
    the encoder distillation did."""
    path = Path(source) if source.endswith(".safetensors") else shipped_weights(source)
    meta = {k: v for k, v in weights_metadata(path).items() if k != "preset"} if path.is_file() else {}
    return {**meta, "encoder_training": json.dumps({"from": str(source), "steps": cfg.steps, "batch": cfg.batch,
                                                   "lr": cfg.lr, "latent_weight": cfg.latent_weight,
                                                   "rd_weight": cfg.rd_weight, "distortion": cfg.distortion,
                                                   "data": data,
                                                   "train_s": round(seconds, 1)})}


def main(argv: list[str] | None = None) -> int:
    """Command line: make refined targets, or train an encoder toward them."""
    ap = argparse.ArgumentParser(prog="python -m distill.refined", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("targets", help="refine random training crops")
    t.add_argument("--model", default="student-2k")
    t.add_argument("--out", required=True)
    t.add_argument("--count", type=int, default=2000)
    t.add_argument("--crop", type=int, default=128)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--iterations", type=int, default=TARGET_EFFORT.iterations)
    e = sub.add_parser("train", help="train the encoder toward refined targets")
    e.add_argument("--model", default="student-2k")
    e.add_argument("--targets", help="refined targets (from `targets`); without: fresh random training crops")
    e.add_argument("--crop", type=int, default=256, help="crop size of fresh crops")
    e.add_argument("--out", required=True)
    for f in ("steps", "batch", "lr", "latent_weight", "rd_weight", "seed", "distortion"):
        e.add_argument("--" + f.replace("_", "-"), type=type(getattr(EncoderDistill, f)),
                       default=getattr(EncoderDistill, f))
    args = ap.parse_args(argv)
    return run_command(lambda: _run(args), (WeightsError, ValueError, OSError))


def _run(args) -> None:
    torch.set_num_threads(1)
    model = load_model(args.model)
    if args.cmd == "targets":
        effort = replace(TARGET_EFFORT, iterations=args.iterations)
        make_targets(model, args.out, args.count, args.crop, args.seed, effort)
        return
    cfg = EncoderDistill(**{f: getattr(args, f) for f in ("steps", "batch", "lr", "latent_weight", "rd_weight",
                                                          "seed", "distortion")})
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.targets:
        targets = load_targets(args.targets)
        source, described = target_batches(targets), f"{len(targets['q'])} refined crops"
    else:
        crops = CropDataset(train_images(), args.crop, 10 ** 6, detail=1.0)
        source, described = crop_batches(crops, model.num_qualities), f"fresh {args.crop}x{args.crop} crops"
    start = time.time()
    metrics = train_encoder(model, source, cfg, out.with_suffix(".log.jsonl"))
    save_weights(model, out, meta=provenance(args.model, cfg, described, time.time() - start))
    print(json.dumps(metrics))

if __name__ == "__main__":
    raise SystemExit(main())
