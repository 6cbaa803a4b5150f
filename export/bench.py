"""Decode latency of the ONNX decoder: FP32 vs INT8, 1 and 2 threads, entropy and networks apart.

    python -m export.bench --model SPEC [--int8] [--onnx DIR] [-n N] [--quality Q]
    python -m export.bench --row NAME=MODEL[:int8] [--row ...] --anchor NAME [--images N]   (export/table.py)

Encodes one 768x512 picture with torch, decodes it N times per configuration (after one warm-up)
and reports median times; writes results/deployment.md and results/deployment.json. With ``--row``:
the deployment table of several models (accuracy on the evaluation set, size on disk, decode time),
written to results/deployment_table.{md,json}.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from .timing import bench_picture, file_sizes, time_decoder, time_torch

ROOT = Path(__file__).resolve().parent.parent


def to_markdown(res: dict) -> str:
    """The results as a Markdown report."""
    lines = [f"# Deployment benchmark: {res['model']}", "",
             f"Decode of one {res['width']}x{res['height']} picture ({res['image']}, quality {res['quality']}, "
             f"{res['bytes']} bytes, {res['bpp']:.3f} bpp) with the torch-free ONNX decoder "
             f"(`python -m export.decode`), median of {res['n']} runs after one warm-up, in milliseconds. "
             f"Machine: {res['machine']}. Load average at start: {res['loadavg']:.2f} "
             "(other jobs were running: absolute times are pessimistic, compare rows with each other).", "",
             "| runtime | threads | total | entropy (rANS) | integer scale decoder | networks (ORT) | colour | other "
             "| PSNR-RGB dB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in res["runs"]:
        m = r["ms"]
        lines.append(f"| ONNX {r['precision']} | {r['threads']} | {m['total']:.1f} | {m.get('entropy', 0):.1f} | "
                     f"{m.get('scale_decoder', 0):.1f} | {m.get('networks', 0):.1f} | {m.get('colour', 0):.1f} | "
                     f"{m['other']:.1f} | {r['psnr_rgb']:.3f} |")
    for t, ms in res["torch_ms"].items():
        lines.append(f"| torch (reference) | {t} | {ms:.1f} | | | | | | {res['torch_psnr_rgb']:.3f} |")
    nets = sorted({k[4:] for r in res["runs"] for k in r["ms"] if k.startswith("net:")})
    lines += ["", "Networks, ms (median):", "",
              "| runtime | threads | " + " | ".join(nets) + " |", "|---|---|" + "---|" * len(nets)]
    for r in res["runs"]:
        lines.append(f"| {r['precision']} | {r['threads']} | "
                     + " | ".join(f"{r['ms'].get('net:' + n, 0):.1f}" for n in nets) + " |")
    lines += ["", "Files on disk:", "", "| files | KiB |", "|---|---|"]
    lines += [f"| {k} | {v / 1024:.1f} |" for k, v in res["sizes"].items() if v]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m export.bench", description=__doc__.splitlines()[0])
    p.add_argument("--model", help="preset name or .safetensors path")
    p.add_argument("--row", action="append", default=[], metavar="NAME=MODEL[:int8]",
                   help="table mode: a model of the deployment table (repeatable)")
    p.add_argument("--anchor", help="table mode: the row BD figures are measured against (default: the first)")
    p.add_argument("--images", type=int, help="table mode: first N evaluation images only")
    p.add_argument("--int8", action="store_true", help="also time the INT8 networks")
    p.add_argument("--onnx", help="an existing export of the model (default: export to a temporary dir)")
    p.add_argument("-n", type=int, default=3, help="timed decodes per configuration")
    p.add_argument("--quality", "-q", type=int, default=3)
    p.add_argument("--threads", default="1,2", help="thread counts to time")
    p.add_argument("--out", help="output path without suffix (default results/deployment, or "
                                 "results/deployment_table with --row)")
    a = p.parse_args(argv)

    from codec.cli_util import fail
    if a.row:
        return _table(a, argv)
    if not a.model:
        return fail("give --model SPEC (one model) or --row NAME=MODEL (the table)")
    a.out = a.out or str(ROOT / "results" / "deployment")
    try:
        import torch

        from codec.api import encode_image
        from codec.weights import load_model, model_id

        from .exporter import export_model

        torch.set_num_threads(1)
        model = load_model(a.model)
        img = bench_picture()
        data = encode_image(model, img, a.quality)
        with tempfile.TemporaryDirectory() as tmp:
            onnx_dir = Path(a.onnx) if a.onnx else Path(tmp)
            if not a.onnx:
                export_model(model, onnx_dir, int8=a.int8, ort_format=False, log=lambda *_: None)
            manifest = json.loads((onnx_dir / "manifest.json").read_text())
            if manifest["model_id"] != model_id(model).hex():
                raise ValueError(f"{onnx_dir} holds another model ({manifest['model']}, id {manifest['model_id']})")
            threads = [int(t) for t in a.threads.split(",")]
            load = os.getloadavg()[0]
            runs = [time_decoder(onnx_dir, data, img, i8, t, a.n) for i8 in ([False, True] if a.int8 else [False])
                    for t in threads]
            res = {"model": model.name, "model_id": manifest["model_id"], "image": "768x512 evaluation photo",
                   "height": img.shape[0], "width": img.shape[1], "quality": a.quality, "bytes": len(data),
                   "bpp": len(data) * 8 / (img.shape[0] * img.shape[1]), "n": a.n, "loadavg": load,
                   "machine": f"{os.cpu_count()} CPU cores, onnxruntime CPUExecutionProvider", "runs": runs,
                   "torch_ms": {t: time_torch(model, data, t, a.n) for t in threads},
                   "sizes": file_sizes(onnx_dir, manifest)}
        from codec.api import decode_image
        from codec.metrics import psnr_rgb
        res["torch_psnr_rgb"] = psnr_rgb(img, decode_image(model, data))
        out = Path(a.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(res, indent=1))
        md = to_markdown(res)
        out.with_suffix(".md").write_text(md)
        print(md)
    except (ValueError, OSError, KeyError, RuntimeError) as e:
        return fail(e)
    return 0


def _table(a, argv) -> int:
    """The --row mode: measure the deployment table and write it."""
    import shlex

    import torch

    from codec.cli_util import fail
    from codec.images import ImageError
    from photos import eval_images

    from .table import parse_rows, run, write

    try:
        torch.set_num_threads(1)
        rows = parse_rows(a.row)
        images = eval_images()[: a.images]
        res = run(rows, a.anchor or rows[0].name, images, a.quality, a.n)
        command = "python -m export.bench " + shlex.join(argv if argv is not None else sys.argv[1:])
        print(write(res, Path(a.out or ROOT / "results" / "deployment_table"), command))
    except (ValueError, OSError, KeyError, RuntimeError, ImageError) as e:
        return fail(e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
