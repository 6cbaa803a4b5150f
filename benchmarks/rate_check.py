"""Does training see the rate the coder spends? ``python -m benchmarks rate-check``.

For every evaluation photo and rate point: the bytes of the real file (``codec.api.encode_image``), the rate
term the training loss sees (``YUVCodec.forward`` in training mode, ``out["bits"]``: the coded bits as its
value, with the default ``rate="noise"`` gradients and with ``rate="coded"``), and the classic estimate it
replaced (uniform noise, every element coded, likelihoods floored at 1e-9). Writes
results/rate_check.{md,json}.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from codec.api import encode_image, pad_planes
from codec.bitstream import overhead_bytes
from codec.color import to_tensor
from codec.images import load_rgb
from codec.weights import load_model

from evaluation.machine import machine


def _bits(model, y, uv, q: int, rate: str) -> tuple[float, float]:
    """(the training loss's rate term, the classic likelihood estimate) in bits for one picture, the model
    in training mode, no gradients."""
    torch.manual_seed(0)
    model.train()
    try:
        with torch.no_grad():
            out = model(y, uv, q, rate=rate)
    finally:
        model.eval()
    classic = float(sum(-torch.log2(lik.clamp_min(1e-9)).sum() for lik in out["likelihoods"].values()))
    return float(sum(b.sum() for b in out["bits"].values())), classic


def measure(model_name: str, images: list[Path]) -> list[dict]:
    """One row per picture and rate point: file bits, coded-rate term, classic estimate."""
    model = load_model(model_name)
    rows = []
    for path in images:
        rgb = load_rgb(path)
        h, w = rgb.shape[:2]
        y, uv = pad_planes(to_tensor(rgb), model.cfg.multiple)
        for q in range(model.num_qualities):
            file_bits = 8 * len(encode_image(model, rgb, q))
            train_bits, classic = _bits(model, y, uv, q, "noise")
            header = 8 * overhead_bytes()
            rows.append({"image": path.stem, "quality": q, "pixels": h * w, "file_bits": file_bits,
                         "train_bits": train_bits + header, "coded_bits": _bits(model, y, uv, q, "coded")[0] + header,
                         "noise_bits": classic})
    return rows


def write(model_name: str, rows: list[dict], out: Path, command: str) -> list[Path]:
    """results/rate_check.{json,md}."""
    out.mkdir(parents=True, exist_ok=True)
    train = np.array([r["train_bits"] / r["file_bits"] for r in rows])
    coded = np.array([r["coded_bits"] / r["file_bits"] for r in rows])
    noise = np.array([r["noise_bits"] / r["file_bits"] for r in rows])
    meta = {"command": command, "model": model_name, "machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M")}
    (out / "rate_check.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    md = ["# Training rate term against the real files", "",
          f"Made by `{command}` ({meta['date']}, {meta['machine']}), model `{model_name}`, "
          f"{len({r['image'] for r in rows})} evaluation photos x every rate point. `training`: the rate term of "
          "the training loss as it trains now (default `rate=\"noise\"` gradients, coded bits as value); "
          "`coded pass`: the same with `rate=\"coded\"` (the coder's own two-pass reconstruction); "
          "`classic`: the noise-based estimate used before. Ratios to the file's bits; the first two include the "
          f"file's fixed {overhead_bytes()} bytes (header, stream lengths, CRC), which are not learned.", "",
          "| estimate | mean ratio to the file | min | max | mean abs error |",
          "|---|---:|---:|---:|---:|"]
    for name, v in (("training (now)", train), ("coded pass", coded), ("classic (noise, no skip)", noise)):
        md.append(f"| {name} | {v.mean():.4f} | {v.min():.4f} | {v.max():.4f} | {np.abs(v - 1).mean():.2%} |")
    md += ["", "| image | q | file bpp | training bpp | training / file | coded pass / file | classic bpp | "
           "classic / file |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        px = r["pixels"]
        md.append(f"| {r['image']} | {r['quality']} | {r['file_bits'] / px:.4f} | {r['train_bits'] / px:.4f} | "
                  f"{r['train_bits'] / r['file_bits']:.4f} | {r['coded_bits'] / r['file_bits']:.4f} | "
                  f"{r['noise_bits'] / px:.4f} | {r['noise_bits'] / r['file_bits']:.3f} |")
    (out / "rate_check.md").write_text("\n".join(md) + "\n")
    return [out / "rate_check.json", out / "rate_check.md"]
