"""Decode a LIC1 bitstream with the exported networks, without torch.

    python -m export.decode IN.bin -o OUT.png --onnx DIR [--int8] [--threads N]

Needs only numpy, onnxruntime, Pillow and compressai's compiled rANS extension (loaded by file path
without importing compressai, whose package imports torch: see codec/entropy.py).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m export.decode", description="Torch-free ONNX decoder.")
    p.add_argument("bitstream")
    p.add_argument("-o", "--output", required=True, help="output image (PNG)")
    p.add_argument("--onnx", required=True, help="directory written by python -m export")
    p.add_argument("--int8", action="store_true", help="use the INT8 networks where exported")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    p.add_argument("--no-crc", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)

    from codec.cli_util import fail  # sys only
    try:
        from PIL import Image

        from .runtime import OnnxDecoder

        if a.threads < 1:
            raise ValueError(f"--threads must be at least 1, got {a.threads}")
        data = Path(a.bitstream).read_bytes()
        dec = OnnxDecoder(a.onnx, int8=a.int8, threads=a.threads)
        out = dec.decode(data, verify_crc=not a.no_crc)
        Image.fromarray(out.rgb).save(a.output)
    except (ValueError, OSError, KeyError) as e:
        return fail(e)
    h, w = out.rgb.shape[:2]
    print(f"{a.output}: {w}x{h} decoded with {dec.manifest['model']} ({'INT8' if a.int8 else 'FP32'} ONNX)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
