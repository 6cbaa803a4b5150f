"""Encoder effort levels measured (``python -m benchmarks effort``): what encoding time buys.

For each model, picture and rate point: the fast (amortized) encoder's file, then each effort level's
file, all real bitstreams decoded by the stock decoder. Reports the BD-rate of each level against fast
(PSNR-YUV, per picture then averaged), encode seconds per megapixel, and BD-rate against iterations from
the best latents the longest level had found after 25, 50, 100, ... iterations (each written as a real file).
Writes results/effort.{json,md,png}.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from codec import bitstream as bsf
from codec.api import decode_image, encode_image, pad_planes
from codec.color import to_tensor
from codec.images import load_rgb
from codec.metrics import psnr_rgb, psnr_yuv
from codec.refine import EFFORTS, refine_latents
from codec.weights import load_model, model_id

from evaluation.bdrate import bd_summary
from evaluation.machine import machine
from evaluation.rd import bits_per_pixel

from .report import save_figure

CHECKPOINTS = (25, 50, 100, 200, 400, 800)


def _row(codec, rgb, data: bytes, **fields) -> dict:
    h, w = rgb.shape[:2]
    decoded = decode_image(codec, data)
    return {**fields, "pixels": h * w, "bytes": len(data), "bpp": bits_per_pixel(len(data), h, w),
            "psnr_yuv": psnr_yuv(rgb, decoded), "psnr_rgb": psnr_rgb(rgb, decoded)}


def _refined_file(model, planes, q, size, latents) -> bytes:
    streams, _ = model.compress_planes(*planes, q, latents=latents)
    return bsf.pack(bsf.Bitstream(model_id(model), q, size[0], size[1], tuple(streams)))


def measure(model, name: str, image: Path, q: int, levels: list[str], bar=None) -> list[dict]:
    """Rows for one picture and rate point: fast, each level, and the longest level's checkpoints."""
    rgb = load_rgb(image)
    size = rgb.shape[:2]
    base = {"model": name, "image": image.stem, "quality": q}
    start = time.monotonic()
    with torch.inference_mode():
        data = encode_image(model, rgb, q)
    rows = [_row(model, rgb, data, **base, level="fast", iterations=0, encode_s=time.monotonic() - start)]
    planes = pad_planes(to_tensor(rgb), model.cfg.multiple)
    for i, level in enumerate(levels):
        effort = EFFORTS[level]
        keep = CHECKPOINTS if i == len(levels) - 1 else ()
        start = time.monotonic()
        found = refine_latents(model, *planes, q, effort, size=size, keep_at=keep)
        data = _refined_file(model, planes, q, size, found.latents)
        rows.append(_row(model, rgb, data, **base, level=level, iterations=found.iterations,
                         encode_s=time.monotonic() - start))
        seconds = {h["iteration"]: h["seconds"] for h in found.history}
        for it, latents in found.kept.items():
            rows.append(_row(model, rgb, _refined_file(model, planes, q, size, latents), **base,
                             level=f"{level}@{it}", iterations=it, encode_s=seconds.get(it, float("nan"))))
        if bar is not None:
            bar.set_postfix(level=level, it=found.iterations, s=f"{found.seconds:.0f}")
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """One line per model and level (and checkpoint): BD-rate/BD-PSNR vs fast, seconds per megapixel."""
    lines = []
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        keyed = [{**r, "codec": r["level"]} for r in mine]
        for level in dict.fromkeys(r["level"] for r in mine):
            if level == "fast":
                continue
            s = bd_summary(keyed, "fast", level, "psnr_yuv")
            sel = [r for r in mine if r["level"] == level]
            if "@" in level and len(sel) < sum(r["level"] == "fast" for r in mine):
                continue   # a checkpoint the time limit kept some pictures from reaching: not comparable
            sec_mp = np.nanmean([r["encode_s"] / (r["pixels"] / 1e6) for r in sel])
            lines.append({"model": model, "level": level, "iterations": float(np.mean([r["iterations"] for r in sel])),
                          "bd_rate": s["bd_rate"], "bd_psnr_db": s["bd_quality_db"], "images": s["n_images"],
                          "encode_s_per_mpixel": float(sec_mp)})
    return lines


def write(result: dict, out: Path) -> list[Path]:
    """results/effort.json, .md and .png from a result dict (meta, rows, summary)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "effort.json", out / "effort.md", out / "effort.png"]
    paths[0].write_text(json.dumps(result, indent=1))
    meta, lines = result["meta"], result["summary"]
    md = ["# Encoder effort levels", "",
          f"Made by `{meta['command']}` on {meta['machine']} ({meta['date']}, {meta['seconds']:.0f} s). Every figure "
          "comes from real bitstreams decoded by the stock decoder (`codec.api.decode_image`); the refined files "
          "have the same format and weights as the fast ones. BD-rate against the same model's fast encoder, "
          "PSNR-YUV (6:1:1), Akima, per picture then averaged. Encode time: wall seconds on one thread, "
          "including the analysis transform and the entropy coding.", "",
          "| model | level | iterations | BD-rate vs fast | BD-PSNR vs fast | images | encode s per Mpixel |",
          "|---|---|---:|---:|---:|---:|---:|"]
    for ln in lines:
        md.append(f"| {ln['model']} | {ln['level']} | {ln['iterations']:.0f} | {ln['bd_rate']:+.2f}% | "
                  f"{ln['bd_psnr_db']:+.3f} dB | {ln['images']} | {ln['encode_s_per_mpixel']:.1f} |")
    md += ["", "Rows `LEVEL@N`: the best latents that level had found after N iterations, each written as a real "
           "file (what each minute buys).", "", "![BD-rate against encode time](effort.png)", ""]
    paths[1].write_text("\n".join(md))
    _plot(lines, paths[2])
    return paths


def _plot(lines: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for model in dict.fromkeys(ln["model"] for ln in lines):
        pts = sorted((ln["encode_s_per_mpixel"], ln["bd_rate"]) for ln in lines
                     if ln["model"] == model and "@" in ln["level"])
        if pts:
            ax.plot(*zip(*pts), "o-", label=f"{model} (checkpoints)")
        for ln in lines:
            if ln["model"] == model and "@" not in ln["level"]:
                ax.plot(ln["encode_s_per_mpixel"], ln["bd_rate"], "s", label=f"{model} {ln['level']}")
    ax.set_xscale("log")
    ax.set_xlabel("encode seconds per megapixel (one thread)")
    ax.set_ylabel("BD-rate vs fast encoder (%, PSNR-YUV)")
    save_figure(fig, ax, path)


def run(models: list[str], levels: list[str], images: list[Path], qualities: list[int] | None,
        out: Path, command: str, progress: bool = True) -> dict:
    """Measure every model x picture x rate point x level; write and return the result."""
    torch.set_num_threads(1)
    start = time.monotonic()
    rows = []
    for name in models:
        model = load_model(name)
        qs = qualities if qualities is not None else list(range(model.num_qualities))
        bar = tqdm(total=len(images) * len(qs), desc=f"effort {name}", disable=not progress,
                   file=sys.stderr, dynamic_ncols=True)
        for image in images:
            for q in qs:
                bar.set_description(f"effort {name} {image.stem} q{q}")
                rows += measure(model, name, image, q, levels, bar)
                bar.update(1)
        bar.close()
    meta = {"command": command, "machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M"),
            "seconds": time.monotonic() - start, "levels": {lv: vars(EFFORTS[lv]) for lv in levels}}
    result = {"meta": meta, "rows": rows, "summary": summarise(rows)}
    write(result, out)
    return result
