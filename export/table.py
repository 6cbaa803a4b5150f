"""The deployment table: accuracy, size on disk and decode latency of several models side by side.

    python -m export.bench --row NAME=MODEL[:int8] [--row ...] [--anchor NAME] [--images N] [-n N]

MODEL is a preset (shipped weights) or a .safetensors file (pruned and QAT weights included); ``:int8``
decodes with the model's INT8 ONNX networks. Per row, from real bitstreams (torch encoder) on the
evaluation set: BD-rate (PSNR-YUV) against Pillow JPEG and BD-rate / BD-PSNR against the anchor row
(decoded by torch for FP32 rows, by the ONNX INT8 decoder for INT8 rows); the weights file and the
decoder files (ONNX networks + integer tables) on disk; the median decode time of one 768x512 photo
with the ONNX decoder and with torch, at 1 and 2 threads. Writes OUT.md and OUT.json.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

THREADS = (1, 2)


@dataclass
class Row:
    """One model of the table: its label, model spec and whether it decodes with INT8 networks."""

    name: str
    spec: str
    int8: bool


def parse_rows(pairs: list[str]) -> list[Row]:
    """``NAME=MODEL[:int8]`` strings -> rows (ValueError on a malformed one or a repeated name)."""
    rows = []
    for pair in pairs:
        name, sep, spec = pair.partition("=")
        int8 = spec.endswith(":int8")
        spec = spec[: -len(":int8")] if int8 else spec
        if not sep or not name or not spec:
            raise ValueError(f"--row wants NAME=MODEL or NAME=MODEL:int8, got {pair!r}")
        rows.append(Row(name, spec, int8))
    if len({r.name for r in rows}) != len(rows):
        raise ValueError("--row names must differ")
    return rows


def weights_path(spec: str) -> Path:
    """The weights file of a model spec (a .safetensors path, or a preset's shipped weights)."""
    from codec.weights import shipped_weights

    return Path(spec) if spec.endswith(".safetensors") else shipped_weights(spec)


def _codec(row: Row):
    """The benchmark codec of a row, model loaded ((False, reason) of ``available`` raises)."""
    from evaluation.codecs import LearnedCodec
    from export.codecs import OnnxInt8Codec

    from evaluation.compare import ready

    codec = OnnxInt8Codec(row.name, row.spec) if row.int8 else LearnedCodec(row.name, weights_path(row.spec))
    return ready([codec])[0]


def accuracy(codecs: list, anchor: str, images: list[Path], progress: bool) -> dict[str, dict]:
    """Per codec: BD figures (PSNR-YUV) against JPEG and against ``anchor``, bpp range, from real files."""
    from evaluation.codecs import PillowJPEG
    from evaluation.compare import compare

    run = compare(images, [PillowJPEG(), *codecs], progress=progress, check=False)
    out = {}
    for c in codecs:
        mine = run.of(c.name)
        out[c.name] = {"vs_jpeg": run.bd("jpeg", c.name), "vs_anchor": run.bd(anchor, c.name),
                       "bpp": [min(r["bpp"] for r in mine), max(r["bpp"] for r in mine)]}
    return out


def latency_and_size(row: Row, codec, quality: int, n: int) -> dict:
    """Median decode ms of the 768x512 photo (ONNX, and torch for FP32 rows) and the bytes on disk."""
    from codec.api import encode_image

    from .timing import bench_picture, file_sizes, time_decoder, time_torch
    from .cache import cached_export

    img = bench_picture()
    data = encode_image(codec.model, img, quality)
    onnx_dir = cached_export(codec.model, row.int8)
    manifest = json.loads((onnx_dir / "manifest.json").read_text())
    sizes = file_sizes(onnx_dir, manifest)
    onnx = {t: time_decoder(onnx_dir, data, img, row.int8, t, n) for t in THREADS}
    weights = weights_path(row.spec)
    return {"bytes": len(data), "bpp": len(data) * 8 / (img.shape[0] * img.shape[1]),
            "onnx_ms": {t: r["ms"]["total"] for t, r in onnx.items()},
            "onnx_psnr_rgb": onnx[THREADS[0]]["psnr_rgb"],
            "torch_ms": {} if row.int8 else {t: time_torch(codec.model, data, t, n) for t in THREADS},
            "weights_bytes": weights.stat().st_size if weights.is_file() else None,
            "decoder_bytes": sizes["decoder INT8 ONNX" if row.int8 else "decoder FP32 ONNX"]
            + sizes["integer tables (scale decoder, CDFs, rates)"]}


def run(rows: list[Row], anchor: str, images: list[Path], quality: int, n: int, progress: bool = True) -> dict:
    """Measure every row; returns the JSON-ready result."""
    from evaluation.machine import machine

    if anchor not in {r.name for r in rows}:
        raise ValueError(f"--anchor {anchor!r} is not one of the rows")
    codecs = [_codec(r) for r in rows]
    acc = accuracy(codecs, anchor, images, progress)
    load = os.getloadavg()[0]
    out = []
    for r, c in zip(rows, codecs):
        out.append({"name": r.name, "model": r.spec, "int8": r.int8, "decoder_kmac": c.decoder_kmac(),
                    **acc[r.name], **latency_and_size(r, c, quality, n)})
    return {"anchor": anchor, "images": [p.stem for p in images], "quality": quality, "n": n,
            "machine": machine(), "loadavg": load, "rows": out}


def _bd(s: dict) -> str:
    if s["anchor"] == s["codec"]:
        return "anchor"
    if s["n_images"] == 0:
        return "no overlap"
    return f"{s['bd_rate']:+.1f}% / {s['bd_quality_db']:+.2f} dB" + (
        f" ({s['n_images']}/{s['n_images'] + s['n_skipped']})" if s["n_skipped"] else "")


def to_markdown(res: dict, command: str) -> str:
    """The table as Markdown, with the command that made it."""
    ms = lambda d: " / ".join(f"{d[t]:.0f}" for t in sorted(d, key=int)) if d else ""  # noqa: E731
    lines = [f"Made by `{command}` on {len(res['images'])} evaluation images (rates from the bytes of real "
             f"bitstreams); decode times: one 768x512 photo at quality {res['quality']}, median of {res['n']} "
             f"after a warm-up; machine: {res['machine']}, load average {res['loadavg']:.1f} at the start.", "",
             f"| model | decoder | decoder kMAC/px | BD-rate / BD-PSNR vs JPEG (PSNR-YUV) | vs {res['anchor']} "
             "| weights file KiB | decoder files KiB | ONNX decode ms (1 / 2 threads) | torch decode ms (1 / 2 threads) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in res["rows"]:
        kmac = f"{r['decoder_kmac']:.3f}" if r["decoder_kmac"] is not None else ""
        wkib = f"{r['weights_bytes'] / 1024:.0f}" if r["weights_bytes"] else ""
        lines.append(f"| {r['name']} | {'ONNX INT8' if r['int8'] else 'FP32'} | {kmac} | {_bd(r['vs_jpeg'])} | "
                     f"{_bd(r['vs_anchor'])} | {wkib} | {r['decoder_bytes'] / 1024:.0f} | {ms(r['onnx_ms'])} | "
                     f"{ms(r['torch_ms'])} |")
    return "\n".join(lines) + "\n"


def write(res: dict, out: Path, command: str) -> str:
    """Write OUT.json and OUT.md; returns the Markdown."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({**res, "command": command}, indent=1))
    md = "# Deployment: models side by side\n\n" + to_markdown(res, command)
    out.with_suffix(".md").write_text(md)
    return md
