"""Decode a LIC1 bitstream with the exported networks, without torch.

    python -m export.decode IN.bin -o OUT.png --onnx DIR [--int8] [--threads N] [--tile PIXELS]

Needs only numpy, onnxruntime, threadpoolctl, Pillow and compressai's compiled rANS extension (loaded by file path
without importing compressai, whose package imports torch: see codec/entropy.py).

Memory is bounded for any picture size: the synthesis runs in --tile x --tile-pixel tiles (default 256,
a phone's budget; 0: the whole picture at once; the picture is the same either way) and PNG and PPM
outputs are written strip by strip as the rows are decoded (other formats through Pillow, whole).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from codec.entropy import DECODER, DECODERS, RANS_HELP
    from codec.tiling import ONNX_TILE

    p = argparse.ArgumentParser(prog="python -m export.decode", description="Torch-free ONNX decoder.")
    p.add_argument("bitstream")
    p.add_argument("-o", "--output", required=True, help="output image (.png and .ppm are streamed; others via Pillow)")
    p.add_argument("--onnx", required=True, help="directory written by python -m export")
    p.add_argument("--int8", action="store_true", help="use the INT8 networks where exported")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    p.add_argument("--tile", type=int, default=ONNX_TILE,
                   help=f"synthesis tile side in pixels (default {ONNX_TILE}; 0: whole picture)")
    p.add_argument("--png-level", type=int, default=1, help="zlib level of PNG output, 0-9 (default 1: fast)")
    p.add_argument("--rans", choices=DECODERS, default=DECODER, help=RANS_HELP)
    p.add_argument("--no-crc", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)

    from codec.cli_util import fail  # sys only
    writer = None
    try:
        from codec import entropy
        from codec.bitstream import MAX_FILE_BYTES, unpack
        from codec.memory import limit_heap
        from codec.writers import RowWriter

        from .runtime import OnnxDecoder

        limit_heap()

        if a.threads < 1:
            raise ValueError(f"--threads must be at least 1, got {a.threads}")
        if a.tile < 0:
            raise ValueError(f"--tile must be 0 (whole picture) or positive, got {a.tile}")
        if not 0 <= a.png_level <= 9:
            raise ValueError(f"--png-level must be 0..9, got {a.png_level}")
        size = Path(a.bitstream).stat().st_size
        if size > MAX_FILE_BYTES:
            raise ValueError(f"{a.bitstream} is {size} bytes, larger than any LIC bitstream ({MAX_FILE_BYTES})")
        data = Path(a.bitstream).read_bytes()
        entropy.DECODER = a.rans
        dec = OnnxDecoder(a.onnx, int8=a.int8, threads=a.threads, tile=a.tile)
        bs = unpack(data, verify_crc=not a.no_crc)       # size known before anything large is allocated
        writer = RowWriter(a.output, bs.height, bs.width, png_level=a.png_level)
        dec.decode(data, verify_crc=not a.no_crc, sink=writer.write)
        writer.close()
        writer = None
    except (ValueError, OSError, KeyError) as e:
        if writer is not None:
            writer.abort()
        return fail(e)
    print(f"{a.output}: {bs.width}x{bs.height} decoded with {dec.manifest['model']} ({'INT8' if a.int8 else 'FP32'} ONNX)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
