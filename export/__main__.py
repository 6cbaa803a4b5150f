"""Export a model for deployment.

    python -m export --model SPEC -o DIR [--int8] [--calib N] [--no-ort] [--decoder-only]

SPEC is a preset with shipped weights (weights/PRESET.safetensors) or a .safetensors path. See
docs/deployment.md for the files written.
"""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m export", description="Export a model to ONNX + integer tables.")
    p.add_argument("--model", required=True, help="preset name (shipped weights) or .safetensors path")
    p.add_argument("-o", "--output", required=True, help="output directory")
    p.add_argument("--int8", action="store_true", help="also write INT8 (QDQ) copies of the decoder networks")
    p.add_argument("--calib", type=int, default=16, help="calibration crops for --int8 (256x256, training set)")
    p.add_argument("--no-ort", action="store_true", help="skip the .ort (mobile runtime) conversion")
    p.add_argument("--decoder-only", action="store_true", help="skip the encoder networks")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    a = p.parse_args(argv)

    from codec.cli_util import fail
    try:
        import torch

        from codec.weights import load_model

        from .exporter import export_model

        torch.set_num_threads(a.threads)
        model = load_model(a.model)
        export_model(model, a.output, int8=a.int8, calib=a.calib, ort_format=not a.no_ort,
                     encoder=not a.decoder_only)
    except (ValueError, OSError, KeyError, RuntimeError) as e:
        return fail(e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
