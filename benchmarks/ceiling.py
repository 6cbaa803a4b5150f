"""The decoder's quality ceiling per photo, next to the model's top rate point and WebP/JPEG at its rate.

    python -m benchmarks ceiling --models student-2k-gmm --crop 256 --out results/ceiling

For a centre crop of each evaluation photo: PSNR-YUV of the model's top rate point (a real file, decoded by
the stock decoder), of the encoder's latent un-quantised (no rate at all), and of the latent that minimises
distortion alone (``codec.refine.decoder_ceiling``: a local optimum, so a lower bound on what the decoder
can draw at any rate); and what WebP and JPEG reach on the same crop at the top point's rate and at their highest
quality setting (log-rate interpolation over their quality sweep). Where a model's curve flattens at high
rates while the classical codecs keep climbing, this says whether the decoder is the limit. A crop, not
the whole photo, because the ceiling runs the decoder forward and backward hundreds of times.
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from codec.api import decode_image, encode_image, pad_planes
from codec.color import to_tensor, to_uint8, yuv420_to_rgb
from codec.images import load_rgb
from codec.metrics import psnr_yuv
from codec.refine import decode_latent, decoder_ceiling, luma_stage_ceilings
from codec.weights import load_model
from evaluation.codecs import PillowJPEG, WebP
from evaluation.machine import machine
from evaluation.rd import bits_per_pixel

from .report import save_figure

COLUMNS = (("top_psnr", "top rate point"), ("encoder_psnr", "encoder's latent, un-quantised"),
           ("ceiling_psnr", "decoder ceiling"), ("webp_psnr_at_top_bpp", "WebP at the top point's rate"),
           ("jpeg_psnr_at_top_bpp", "JPEG at the top point's rate"), ("webp_best_psnr", "WebP at its best"),
           ("webp_best_bpp", "WebP q95 bpp"))
KEYS = tuple(k for k, _ in COLUMNS)


def centre_crop(rgb: np.ndarray, side: int) -> np.ndarray:
    """The centre crop of at most side x side pixels, its corner on a 16-pixel grid."""
    h, w = rgb.shape[:2]
    ch, cw = min(side, h), min(side, w)
    y0, x0 = (h - ch) // 2 // 16 * 16, (w - cw) // 2 // 16 * 16
    return np.ascontiguousarray(rgb[y0:y0 + ch, x0:x0 + cw])


def classical_sweep(codec, rgb: np.ndarray) -> list[tuple[float, float]]:
    """(bpp, PSNR-YUV) of ``codec`` at each of its quality settings on ``rgb``, by rate."""
    points = []
    with tempfile.TemporaryDirectory() as tmp:
        for q in codec.qualities:
            path = codec.encode(rgb, q, tmp)
            bpp = bits_per_pixel(path.stat().st_size, *rgb.shape[:2])
            points.append((bpp, psnr_yuv(rgb, codec.decode(path, tmp))))
    return sorted(points)


def psnr_at(points: list[tuple[float, float]], bpp: float) -> float | None:
    """PSNR of a sweep at ``bpp``, linear in log-rate between its points; None outside its range."""
    rates = [p[0] for p in points]
    if not rates[0] <= bpp <= rates[-1]:
        return None
    return float(np.interp(np.log(bpp), np.log(rates), [p[1] for p in points]))


def measure(model, rgb: np.ndarray, iterations: int, sweeps: dict, stage_iterations: int = 0) -> dict:
    """One model on one crop: its top point, its encoder's un-quantised latent, its ceiling, the sweeps';
    with ``stage_iterations`` the luma ceiling from each stage of the synthesis too."""
    h, w = rgb.shape[:2]
    top = model.num_qualities - 1
    data = encode_image(model, rgb, top)
    row = {"top_quality": top, "top_bpp": bits_per_pixel(len(data), h, w), "top_psnr": psnr_yuv(rgb, decode_image(model, data))}
    y, uv = pad_planes(to_tensor(rgb), model.cfg.multiple)
    found = decoder_ceiling(model, y, uv, iterations, size=(h, w))

    def psnr_of(latent):
        with torch.no_grad():
            ly, luv = decode_latent(model, latent)
        return psnr_yuv(rgb, to_uint8(yuv420_to_rgb(ly[..., :h, :w], luv[..., :(h + 1) // 2, :(w + 1) // 2])))

    row.update(encoder_psnr=psnr_of(found.encoder_latent), ceiling_psnr=psnr_of(found.latent),
               ceiling_seconds=found.seconds)
    if stage_iterations:
        row["luma_stage_psnr"] = luma_stage_ceilings(model, y, uv, stage_iterations, size=(h, w))
    for name in ("webp", "jpeg"):
        points = sweeps.get(name)
        row[f"{name}_psnr_at_top_bpp"] = psnr_at(points, row["top_bpp"]) if points else None
        row[f"{name}_best_bpp"], row[f"{name}_best_psnr"] = points[-1] if points else (None, None)
    return row


def run(models: list[str], images: list[Path], crop: int, iterations: int, out: Path, command: str,
        progress: bool = True, stage_iterations: int = 0) -> dict:
    """Measure every model on the centre crop of every image; write and return the result."""
    if crop < 64 or iterations < 1 or stage_iterations < 0:
        raise ValueError("--crop must be at least 64, --iterations at least 1 and --stages at least 0")
    torch.set_num_threads(1)
    start = time.monotonic()
    loaded = {name: load_model(name) for name in models}
    classical = {"webp": WebP(), "jpeg": PillowJPEG()}
    status = {name: c.available() for name, c in classical.items()}
    skipped = {name: why for name, (ok, why) in status.items() if not ok}
    for name, why in skipped.items():
        print(f"skipped {name}: {why}", file=sys.stderr)
    rows = []
    for image in tqdm(images, desc="ceiling", disable=not progress, file=sys.stderr, dynamic_ncols=True):
        rgb = centre_crop(load_rgb(image), crop)
        sweeps = {name: classical_sweep(c, rgb) for name, c in classical.items() if name not in skipped}
        for name, model in loaded.items():
            rows.append({"image": image.stem, "model": name, "crop": list(rgb.shape[:2]),
                         **measure(model, rgb, iterations, sweeps, stage_iterations)})
    meta = {"command": command, "machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M"),
            "seconds": time.monotonic() - start, "iterations": iterations, "crop": crop, "skipped": skipped,
            "stage_iterations": stage_iterations}
    result = {"meta": meta, "rows": rows}
    write(result, out)
    return result


def _cell(v) -> str:
    return "" if v is None else f"{v:.2f}"


def _mean(rows: list[dict], key: str) -> float | None:
    vals = [r[key] for r in rows if r[key] is not None]
    return sum(vals) / len(vals) if len(vals) == len(rows) else None


def write(result: dict, out: Path) -> list[Path]:
    """ceiling.json, ceiling.md and ceiling.png under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "ceiling.json", out / "ceiling.md", out / "ceiling.png"]
    paths[0].write_text(json.dumps(result, indent=1))
    meta, rows = result["meta"], result["rows"]
    md = ["# Decoder ceiling", "",
          f"Made by `{meta['command']}` on {meta['machine']} ({meta['date']}, {meta['seconds']:.0f} s). Centre "
          f"crops of at most {meta['crop']}x{meta['crop']} pixels, PSNR-YUV (6:1:1) in dB of the decoded 8-bit "
          "pictures. `top rate point`: the model's highest rate point, a real file decoded by the stock decoder "
          "(its bpp beside it). `decoder ceiling`: the latent that minimises distortion alone, no quantisation "
          f"and no rate ({meta['iterations']} Adam iterations from the encoder's latent, every weight fixed; "
          "`codec.refine.decoder_ceiling`): a lower bound on what the decoder can draw, at any rate. WebP "
          "(`cwebp -m 6`) and Pillow JPEG (4:2:0) on the same crop: at the top point's rate "
          "(interpolated in log-rate over their quality sweeps; empty where outside it), and WebP at its "
          "highest setting (q95, its bpp beside it). " + "".join(
              f"Skipped {name}: {why}. " for name, why in meta["skipped"].items()), "",
          "| image | model | top point bpp | " + " | ".join(label for _, label in COLUMNS) + " |",
          "|---|---|---:|" + "---:|" * len(KEYS)]
    for r in rows:
        md.append(f"| {r['image']} | {r['model']} | {r['top_bpp']:.3f} | "
                  + " | ".join(_cell(r[k]) for k in KEYS) + " |")
    for model in dict.fromkeys(r["model"] for r in rows):
        sel = [r for r in rows if r["model"] == model]
        md.append(f"| **mean** | {model} | {_mean(sel, 'top_bpp'):.3f} | "
                  + " | ".join(_cell(_mean(sel, k)) for k in KEYS) + " |")
    md += ["", "![Top rate point, decoder ceiling and WebP per photo](ceiling.png)", ""] + _stage_table(meta, rows)
    paths[1].write_text("\n".join(md))
    _plot(rows, paths[2])
    return paths


def _stage_table(meta: dict, rows: list[dict]) -> list[str]:
    """The luma ceiling by synthesis stage (``--stages``), a table per model."""
    staged = [r for r in rows if r.get("luma_stage_psnr")]
    if not staged:
        return []
    md = ["## Where the decoder narrows: the luma ceiling by stage", "",
          "PSNR-Y (dB) of the luma synthesis when the features at one stage are optimised for distortion alone "
          f"({meta.get('stage_iterations')} Adam iterations from the encoder's, weights fixed; "
          "`codec.refine.luma_stage_ceilings`). The first column is the latent, as above but luma only; a large "
          "step between two columns puts the narrow place between those stages.", ""]
    for model in dict.fromkeys(r["model"] for r in staged):
        sel = [r for r in staged if r["model"] == model]
        names = list(sel[0]["luma_stage_psnr"])
        md += [f"| {model} | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
        md += [f"| {r['image']} | " + " | ".join(f"{r['luma_stage_psnr'][n]:.2f}" for n in names) + " |" for r in sel]
        md += [f"| **mean** | " + " | ".join(f"{sum(r['luma_stage_psnr'][n] for r in sel) / len(sel):.2f}"
                                            for n in names) + " |", ""]
    return md


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in rows))
    images = list(dict.fromkeys(r["image"] for r in rows))
    fig, ax = plt.subplots(figsize=(max(6.5, 0.6 * len(images) * len(models)), 4))
    x = np.arange(len(images))
    for i, model in enumerate(models):
        sel = {r["image"]: r for r in rows if r["model"] == model}
        off = (i - (len(models) - 1) / 2) * 0.8 / len(models)
        for key, marker, label in (("top_psnr", "o", "top rate point"), ("ceiling_psnr", "^", "decoder ceiling"),
                                   ("webp_psnr_at_top_bpp", "_", "WebP at the top point's rate")):
            ys = [sel[im][key] for im in images]
            if all(v is not None for v in ys):
                ax.plot(x + off, ys, marker, markersize=12 if marker == "_" else 6, label=f"{model}: {label}")
    ax.set_xticks(x, images, rotation=45, ha="right")
    ax.set_ylabel("PSNR-YUV (dB)")
    save_figure(fig, ax, path)


def add_parser(sub) -> None:
    """The ``ceiling`` subcommand's options."""
    c = sub.add_parser("ceiling", help="the decoder's quality ceiling per photo vs its top rate point and WebP")
    c.add_argument("--models", default="student-2k-gmm", help="comma-separated models (default: student-2k-gmm)")
    c.add_argument("--crop", type=int, default=256, help="centre crop side in pixels (default: 256)")
    c.add_argument("--iterations", type=int, default=600, help="Adam iterations of the ceiling (default: 600)")
    c.add_argument("--stages", type=int, default=0, metavar="ITERATIONS",
                   help="also the luma ceiling from each stage of the synthesis, this many iterations each "
                        "(default: off)")
    c.add_argument("--images", type=int, default=None, help="use only the first N evaluation images")
    c.add_argument("--data", default=None, help="evaluation image folder (default: data/eval)")
    c.add_argument("--out", default="results/ceiling", help="results folder (default: results/ceiling)")
    c.add_argument("--quiet", action="store_true", help="no progress bar")


def main_args(args) -> None:
    """Entry point of ``python -m benchmarks ceiling`` (benchmarks/__main__.py)."""
    from photos import eval_images
    argv = args.argv if args.argv is not None else sys.argv[1:]
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    run(models, eval_images(args.data)[: args.images], args.crop, args.iterations, Path(args.out),
        "python -m benchmarks " + " ".join(argv), progress=not args.quiet, stage_iterations=args.stages)
    print((Path(args.out) / "ceiling.md").read_text())
