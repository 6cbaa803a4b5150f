"""Codec command line.

    python -m codec encode IMAGE -o OUT.bin --model teacher --quality Q [--weights W.safetensors]
    python -m codec decode IN.bin -o OUT.png [--weights W.safetensors ...]
    python -m codec info IN.bin

The decoder finds the model from the bitstream's model id among the shipped weights (and any
--weights given) and refuses a bitstream made by any other model.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    from .entropy import DECODER, DECODERS, RANS_HELP
    from .tiling import DEFAULT_TILE

    p = argparse.ArgumentParser(prog="python -m codec", description="Learned image codec (YUV 4:2:0).")
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("encode", help="image -> bitstream")
    e.add_argument("image")
    e.add_argument("-o", "--output", required=True)
    e.add_argument("--model", default="teacher", help="preset name or .safetensors path")
    e.add_argument("--weights", help="weights for the preset (default: weights/PRESET.safetensors)")
    e.add_argument("--quality", "-q", type=int, default=3, help="rate point index (0 = lowest rate)")
    e.add_argument("--effort", default="fast", help="encoder effort: fast (default, the amortized encoder), "
                   "slow (~1 min per 768x512 picture) or max (~10 min): same decoder and format, fewer bits")
    e.add_argument("--rdoq", type=_rdoq_mu, default=None, metavar="MU",
                   help="rate-distortion rounding of the fast encoder, 0-1 (default 0.05; 0: nearest integer)")
    d = sub.add_parser("decode", help="bitstream -> PNG image")
    d.add_argument("bitstream")
    d.add_argument("-o", "--output", required=True)
    d.add_argument("--weights", action="append", default=[], help="extra candidate weights (repeatable)")
    d.add_argument("--tile", type=int, default=DEFAULT_TILE, help="synthesis tile side in pixels, for bounded "
                   f"memory on large pictures; the same picture as a whole decode (default {DEFAULT_TILE}; 0: whole "
                   "picture)")
    d.add_argument("--png-level", type=int, default=1, help="zlib level of PNG output, 0-9 (default 1: fast); "
                   "PNG and PPM are written as the rows are decoded, other formats through Pillow")
    d.add_argument("--rans", choices=DECODERS, default=DECODER, help=RANS_HELP)
    d.add_argument("--no-crc", action="store_true", help=argparse.SUPPRESS)
    i = sub.add_parser("info", help="print a bitstream's header")
    i.add_argument("bitstream")
    return p


def _read_bitstream(path: str, verify_crc: bool = True):
    from .bitstream import MAX_FILE_BYTES, BitstreamError, unpack
    size = Path(path).stat().st_size
    if size > MAX_FILE_BYTES:  # refused before reading it into memory
        raise BitstreamError(f"{path} is {size} bytes, larger than any LIC bitstream ({MAX_FILE_BYTES})")
    data = Path(path).read_bytes()
    return data, unpack(data, verify_crc=verify_crc)


def _has_alpha(path: str) -> bool:
    from PIL import Image
    with Image.open(path) as im:
        return im.mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in im.info


def _rdoq_mu(text: str) -> float:
    from .rdoq import parse_mu
    try:
        return parse_mu(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def cmd_encode(a) -> int:
    _lean_process(a, huge_pages=False)
    from .api import encode_image
    from .images import load_rgb
    from .refine import effort_level
    from .weights import load_model

    effort_level(a.effort)  # refuse a bad --effort before any work
    image = load_rgb(a.image)
    model = load_model(a.model, a.weights)
    data = encode_image(model, image, a.quality, effort=a.effort, progress=a.effort != "fast", rdoq=a.rdoq)
    Path(a.output).write_bytes(data)
    if _has_alpha(a.image):
        print(f"note: {a.image} has an alpha channel; it was dropped (the codec codes RGB)", file=sys.stderr)
    h, w = image.shape[:2]
    print(f"{a.output}: {len(data)} bytes, {len(data) * 8 / (h * w):.4f} bpp ({w}x{h}, {model.name} q{a.quality})")
    return 0


def _lean_process(a, huge_pages: bool) -> None:
    """Allocator settings and compressai's core only, for a process that codes one picture (not for a
    caller's, e.g. the tests', process): docs/deployment.md, "Memory". Huge pages paid in the decoder
    (its tiles' fresh mappings) but not in the encoder (12 Mpixel: 6.6 s of system time against 3.6)."""
    if a.own_process:
        from .lean_import import import_compressai_core
        from .memory import limit_heap, prefer_huge_pages

        if huge_pages:
            prefer_huge_pages()  # before torch is imported
        limit_heap()
        import_compressai_core()


def cmd_decode(a) -> int:
    _lean_process(a, huge_pages=True)

    from . import entropy
    from .api import decode_planes
    from .bitstream import BitstreamError
    from .color import to_uint8, yuv420_to_rgb
    from .weights import find_model_for, shipped_models
    from .writers import RowWriter

    if not 0 <= a.png_level <= 9:
        raise ValueError(f"--png-level must be 0..9, got {a.png_level}")
    entropy.DECODER = a.rans
    _, bs = _read_bitstream(a.bitstream, verify_crc=not a.no_crc)
    candidates = list(a.weights) + shipped_models()
    model = find_model_for(bs.model_id, candidates)
    if model is None:
        raise BitstreamError(f"no known model has id {bs.model_id.hex()}: the bitstream was made by "
                             "other weights (pass them with --weights)")
    writer = RowWriter(a.output, bs.height, bs.width, png_level=a.png_level)
    try:
        if a.tile:
            from .tiling import decode_rgb
            decode_rgb(model, bs, a.tile, sink=writer.write)
        else:
            (y, uv), _ = decode_planes(model, bs)
            writer.write(to_uint8(yuv420_to_rgb(y, uv)))
        writer.close()
    except BaseException:
        writer.abort()
        raise
    print(f"{a.output}: {bs.width}x{bs.height} decoded with {model.name} q{bs.quality}")
    return 0


def cmd_info(a) -> int:
    data, bs = _read_bitstream(a.bitstream)
    print(f"model id {bs.model_id.hex()}  quality {bs.quality}  size {bs.width}x{bs.height}  "
          f"streams {[len(s) for s in bs.streams]}  total {len(data)} bytes  "
          f"{len(data) * 8 / (bs.width * bs.height):.4f} bpp")
    return 0


def main(argv: list[str] | None = None, own_process: bool = False) -> int:
    """The command line; ``own_process``: this process runs nothing else (``python -m codec``)."""
    a = _parser().parse_args(argv)
    a.own_process = own_process
    from .cli_util import fail
    try:
        return {"encode": cmd_encode, "decode": cmd_decode, "info": cmd_info}[a.cmd](a)
    except (ValueError, OSError, KeyError, RuntimeError, MemoryError) as e:  # RuntimeError: torch, e.g. out of memory
        return fail(e)


if __name__ == "__main__":
    code = main(own_process=True)
    # End without the native libraries' exit handlers: once torch is imported they touch about 125 MiB of
    # new memory on the way out (measured: `import torch` then exit peaks at 650 MiB, 524 MiB without
    # them), more than a 12-Mpixel decode's own working set. Everything is written and flushed by now.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
