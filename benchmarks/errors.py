"""Where each model's error goes: per plane, flat vs textured areas, low vs high frequencies.

    python -m benchmarks errors --models student-2k-gmm,student-2k-wide --out results/errors

Two models can have the same PSNR and rank differently in MS-SSIM. MSE does not care where its error
lies; SSIM does: it divides the error by the local contrast, so error on flat areas (sky, skin, walls) and
smooth, low-frequency error (blotches, colour shifts) cost far more than the same error in texture. For every
rate point of each model, on real files decoded by the stock decoder, this writes the mean over the photos of:
bpp, PSNR of Y, U and V (BT.709 4:2:0, as PSNR-YUV), MS-SSIM (RGB), the luma MSE on the flattest and on the most
textured 30% of the pixels (by the reference's local standard deviation in a 7x7 window) and the share of the
luma error's energy below the frequencies of an 8x8 box (the error smoothed by it, over the whole error).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from codec.api import decode_image, encode_image
from codec.color import rgb_to_yuv420, to_tensor
from codec.images import load_rgb
from codec.metrics import ms_ssim_rgb, psnr_yuv_planes
from codec.weights import load_model
from evaluation.machine import machine
from evaluation.rd import bits_per_pixel

from .report import save_figure

FLAT_SHARE = 0.3   # the flattest / most textured 30% of the luma pixels
COLUMNS = (("bpp", "bpp", 3), ("psnr_y", "PSNR-Y", 2), ("psnr_u", "PSNR-U", 2), ("psnr_v", "PSNR-V", 2),
           ("ms_ssim", "MS-SSIM", 4), ("mse_flat", "luma MSE, flat 30%", 2),
           ("mse_textured", "luma MSE, textured 30%", 2), ("low_freq_share", "low-frequency share", 2))


def _local_std(y: torch.Tensor, k: int = 7) -> torch.Tensor:
    mean = F.avg_pool2d(y, k, 1, k // 2, count_include_pad=False)
    return (F.avg_pool2d(y * y, k, 1, k // 2, count_include_pad=False) - mean * mean).clamp(min=0).sqrt()


def error_structure(rgb: np.ndarray, rec: np.ndarray) -> dict:
    """The error measures of one decoded picture against its reference (uint8 HxWx3 arrays, 8-bit scale)."""
    ref_yuv, rec_yuv = rgb_to_yuv420(to_tensor(rgb)), rgb_to_yuv420(to_tensor(rec))
    _, py, pu, pv = psnr_yuv_planes(ref_yuv, rec_yuv)
    y = ref_yuv[0].double() * 255
    err = rec_yuv[0].double() * 255 - y
    std = _local_std(y).flatten()
    order = torch.argsort(std)
    n = max(1, int(FLAT_SHARE * order.numel()))
    sq = (err * err).flatten()
    low = F.avg_pool2d(err, 8, 1, 4, count_include_pad=False)[..., :err.shape[-2], :err.shape[-1]]
    return {"psnr_y": py, "psnr_u": pu, "psnr_v": pv, "ms_ssim": ms_ssim_rgb(rgb, rec),
            "mse_flat": sq[order[:n]].mean().item(), "mse_textured": sq[order[-n:]].mean().item(),
            "low_freq_share": (low * low).sum().item() / max(sq.sum().item(), 1e-12)}


def run(models: list[str], images: list[Path], qualities: list[int] | None, out: Path, command: str,
        progress: bool = True) -> dict:
    """Code every image at every rate point of each model; write out/errors.{json,md,png}."""
    torch.set_num_threads(1)
    pictures = [(p.stem, load_rgb(p)) for p in images]
    rows = []
    for name in models:
        model = load_model(name)
        points = qualities if qualities is not None else list(range(model.num_qualities))
        for q in tqdm(points, desc=f"errors {name}", disable=not progress):
            for stem, rgb in pictures:
                data = encode_image(model, rgb, q)
                row = {"model": name, "quality": q, "image": stem, "bpp": bits_per_pixel(len(data), *rgb.shape[:2])}
                row.update(error_structure(rgb, decode_image(model, data)))
                rows.append(row)
    result = {"meta": {"command": command, "machine": machine(), "images": [s for s, _ in pictures]}, "rows": rows}
    out.mkdir(parents=True, exist_ok=True)
    (out / "errors.json").write_text(json.dumps(result, indent=1))
    write(result, out)
    return result


def means(rows: list[dict]) -> list[dict]:
    """Per (model, rate point): the mean of every column over the photos."""
    keys = list(dict.fromkeys((r["model"], r["quality"]) for r in rows))
    out = []
    for model, q in keys:
        sel = [r for r in rows if r["model"] == model and r["quality"] == q]
        out.append({"model": model, "quality": q, **{k: float(np.mean([r[k] for r in sel])) for k, _, _ in COLUMNS}})
    return out


def write(result: dict, out: Path) -> list[Path]:
    """errors.md (table of means) and errors.png (flat and textured luma MSE against rate)."""
    meta, table = result["meta"], means(result["rows"])
    md = ["# Where the error goes", "", f"Made by `{meta['command']}`, machine: {meta['machine']}. "
          f"Means over {len(meta['images'])} photos ({', '.join(meta['images'])}); real files, stock decoder. "
          "Flat / textured: the 30% of luma pixels with the lowest / highest local standard deviation of the "
          "reference (7x7); low-frequency share: energy of the luma error smoothed by an 8x8 box over the "
          "error's energy (benchmarks/errors.py).", "",
          "| model | point | " + " | ".join(label for _, label, _ in COLUMNS) + " |",
          "|---|---:|" + "---:|" * len(COLUMNS)]
    md += [f"| {r['model']} | {r['quality']} | " + " | ".join(f"{r[k]:.{d}f}" for k, _, d in COLUMNS) + " |"
           for r in table]
    (out / "errors.md").write_text("\n".join(md) + "\n")
    _plot(table, out / "errors.png")
    return [out / "errors.md", out / "errors.png", out / "errors.json"]


def _plot(table: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for model in dict.fromkeys(r["model"] for r in table):
        sel = [r for r in table if r["model"] == model]
        line, = ax.plot([r["bpp"] for r in sel], [r["mse_flat"] for r in sel], "o-", label=f"{model}: flat 30%")
        ax.plot([r["bpp"] for r in sel], [r["mse_textured"] for r in sel], "s--", color=line.get_color(),
                label=f"{model}: textured 30%")
    ax.set_xlabel("bpp (file bytes)")
    ax.set_ylabel("luma MSE (8-bit scale)")
    ax.set_yscale("log")
    save_figure(fig, ax, path)


def add_parser(sub) -> None:
    """The ``errors`` subcommand's options."""
    e = sub.add_parser("errors", help="where each model's error goes: planes, flat vs textured areas, frequencies")
    e.add_argument("--models", default="student-2k-gmm,student-2k-wide", help="comma-separated models")
    e.add_argument("--qualities", default=None, help="comma-separated rate points (default: all)")
    e.add_argument("--images", type=int, default=None, help="use only the first N evaluation images")
    e.add_argument("--data", default=None, help="evaluation image folder (default: data/eval)")
    e.add_argument("--out", default="results/errors", help="results folder (default: results/errors)")
    e.add_argument("--quiet", action="store_true", help="no progress bar")


def main_args(args) -> None:
    """Entry point of ``python -m benchmarks errors`` (benchmarks/__main__.py)."""
    from photos import eval_images
    argv = args.argv if args.argv is not None else sys.argv[1:]
    qualities = [int(q) for q in args.qualities.split(",")] if args.qualities else None
    run([m.strip() for m in args.models.split(",") if m.strip()], eval_images(args.data)[: args.images], qualities,
        Path(args.out), "python -m benchmarks " + " ".join(argv), progress=not args.quiet)
    print((Path(args.out) / "errors.md").read_text())
