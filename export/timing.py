"""Timing one decode: the benchmark picture (a 768x512 evaluation photo), the ONNX decoder's phases (entropy,
integer scale decoder, networks, colour) and torch's decode, medians after a warm-up; the export's files on disk.
The deployment benchmark (export.bench) and table (export.table) and the speed benchmark use them."""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

SIZE = (512, 768)  # H, W
PHASES = ("entropy", "scale_decoder", "networks", "colour")


def bench_picture() -> np.ndarray:
    """A 768x512 evaluation photo (one of that size if there is one, else the first one resized)."""
    from PIL import Image

    from codec.images import load_rgb
    from photos import eval_images

    paths = eval_images()
    for p in paths:
        img = load_rgb(p)
        if img.shape[:2] == SIZE:
            return img
    return np.asarray(Image.fromarray(load_rgb(paths[0])).resize(SIZE[::-1], Image.LANCZOS))


def time_decoder(onnx_dir: Path, data: bytes, ref: np.ndarray, int8: bool, threads: int, n: int) -> dict:
    """Median wall time per phase over ``n`` decodes (after a warm-up), and the decoded PSNR."""
    from codec.metrics import psnr_rgb

    from .runtime import OnnxDecoder

    dec = OnnxDecoder(onnx_dir, int8=int8, threads=threads)
    out = dec.decode(data)
    runs = []
    for _ in range(n):
        dec.timings.clear()
        t = time.perf_counter()
        dec.decode(data)
        total = time.perf_counter() - t
        runs.append({"total": total, "other": total - sum(dec.timings.get(k, 0.0) for k in PHASES), **dec.timings})
    keys = sorted({k for r in runs for k in r})
    med = {k: 1000 * statistics.median(r.get(k, 0.0) for r in runs) for k in keys}
    return {"precision": "INT8" if int8 else "FP32", "threads": threads, "ms": med,
            "psnr_rgb": psnr_rgb(ref, out.rgb)}


def time_torch(model, data: bytes, threads: int, n: int) -> float:
    """Median decode time (ms) of the torch reference decoder."""
    import torch

    from codec.api import decode_image

    torch.set_num_threads(threads)
    decode_image(model, data)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        decode_image(model, data)
        times.append(time.perf_counter() - t)
    torch.set_num_threads(1)
    return 1000 * statistics.median(times)


def file_sizes(onnx_dir: Path, manifest: dict) -> dict:
    """Bytes on disk per group of files."""
    nets = manifest["networks"]
    size = lambda f: (onnx_dir / f).stat().st_size  # noqa: E731
    dec = manifest["decoder_networks"]
    out = {
        "decoder FP32 ONNX": sum(size(nets[n]["file"]) for n in dec),
        "decoder INT8 ONNX": sum(size(nets[n]["int8"]) for n in dec if nets[n].get("int8")) or None,
        "encoder ONNX": sum(size(nets[n]["file"]) for n in manifest["encoder_networks"]),
        "integer tables (scale decoder, CDFs, rates)": sum(size(f) for f in (
            manifest["scale_decoder"]["file"], *manifest["entropy"].values())),
    }
    if manifest.get("ort_format"):
        out["ORT format (all)"] = sum(p.stat().st_size for p in (onnx_dir / "ort").glob("*.ort"))
    return out
