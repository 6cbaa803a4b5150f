"""INT8 sensitivity: the BD-rate cost of quantising one decoder network, or one layer, alone.

    python -m export.sensitivity --model SPEC [--images 4] [--qualities 0,2,3,5] [--calib 16]
        [--layer-nets 2] [--layers NET,..] [--layer-recipe LABEL] [--candidates [LABEL|..]]
        [--out results/int8_sensitivity]

The evaluation pictures are encoded once by torch; the same bitstreams are then decoded by the ONNX
decoder (export.runtime, 1 thread, whole picture) with every network FP32 (the anchor) and with one piece
quantised (export.int8, the network's recipe), everything else FP32. Only the float networks change, so
the bytes, hence the rates, are the same for every decode and the BD-rate (PSNR-YUV, evaluation.bdrate)
measures the reconstruction loss alone. Phases: each network alone, all networks together, then each
quantisable node alone within the ``--layer-nets`` worst networks, and with ``--candidates`` the
alternative recipes of export.int8.CANDIDATES per network. Writes OUT.md and OUT.json.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m export.sensitivity",
                                description="INT8 sensitivity per network and layer.")
    p.add_argument("--model", required=True, help="preset name (shipped weights) or .safetensors path")
    p.add_argument("--images", type=int, default=4,
                   help="evaluation images, evenly spaced over the sorted set (0: all)")
    p.add_argument("--qualities", default="0,2,3,5", help="rate points, comma separated (default 0,2,3,5)")
    p.add_argument("--calib", type=int, default=16, help="calibration crops (256x256, training set)")
    p.add_argument("--layer-nets", type=int, default=2, help="per-layer phase on this many worst networks (0: skip)")
    p.add_argument("--layers", default="", help="per-layer phase on these networks too (comma separated)")
    p.add_argument("--layer-recipe", default="", help="per-layer phase with this candidate of export.int8.CANDIDATES "
                   "applied to the network's recipe (default: the recipe itself)")
    p.add_argument("--candidates", nargs="?", const="all", default="",
                   help="also these candidate recipes of export.int8.CANDIDATES ('|' separated labels; bare: all)")
    p.add_argument("--out", default="results/int8_sensitivity", help="output path without suffix (.md and .json)")
    p.add_argument("--data", default=None, help="evaluation image folder (default data/eval)")
    p.add_argument("--work", default=None, help="keep the FP32 export and calibration caches here "
                   "(default: runs/onnx-cache and a temporary folder)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    a = p.parse_args(argv)

    from codec.cli_util import fail
    try:
        import torch

        from codec.weights import load_model

        from .sensitivity_run import run_sensitivity, write_report

        torch.set_num_threads(1)
        qualities = [int(q) for q in a.qualities.split(",") if q.strip()]
        layers = [n for n in a.layers.split(",") if n]
        cands = [] if not a.candidates else None if a.candidates == "all" else a.candidates.split("|")
        res = run_sensitivity(load_model(a.model), a.images, qualities, a.calib, a.layer_nets, cands,
                              layers=layers, layer_recipe=a.layer_recipe, data=a.data, progress=not a.quiet,
                              work=Path(a.work) if a.work else None)
        res["command"] = "python -m export.sensitivity " + shlex.join(sys.argv[1:] if argv is None else argv)
        md = write_report(res, a.out)
        print(f"{md} written")
    except (ValueError, OSError, KeyError, RuntimeError) as e:
        return fail(e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
