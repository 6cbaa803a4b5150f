"""Distillation command line.

    python -m distill --teacher weights/teacher.safetensors --student student-2k [--profile quick|full]
    torchrun --nproc_per_node=2 -m distill ...      (DistributedDataParallel, gloo on CPU)
    python -m distill --teacher compressai:mbt2018-mean:6[:PATH] ...   (a CompressAI model as the teacher)
"""
from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    from training.cli import add_run_flags, overrides, training_images

    p = argparse.ArgumentParser(prog="python -m distill", description="Distil a student codec from the teacher.")
    p.add_argument("--student", default="student-2k", help="student preset")
    p.add_argument("--teacher", default="weights/teacher.safetensors",
                   help="teacher weights (.safetensors), or a CompressAI model: compressai:NAME:QUALITY[:PATH] "
                        "(zoo weights, or a local state dict; output and latent KD only)")
    add_run_flags(p, ("quick", "full"), "checkpoints and logs (default runs/distill-STUDENT-PROFILE)",
                  "weights to write (default RUN_DIR/STUDENT.safetensors)")
    p.add_argument("--kd-output", type=float, default=0.5, help="weight of reconstruction KD (0 = off)")
    p.add_argument("--kd-latent", type=float, default=0.1, help="weight of latent KD (0 = off)")
    p.add_argument("--kd-entropy", type=float, default=0.1, help="weight of mean/scale KD (0 = off)")
    p.add_argument("--no-kd", action="store_true", help="switch every distillation term off (RD loss only)")
    p.add_argument("--export-checkpoint", action="store_true",
                   help="only write --out weights from RUN_DIR's latest checkpoint (e.g. while it trains)")
    a = p.parse_args(argv)

    from codec.cli_util import fail
    from codec.paths import RUNS_DIR

    from .losses import KDWeights
    from .train import distill

    run_dir = a.run_dir or RUNS_DIR / f"distill-{a.student}-{a.profile}{'-nokd' if a.no_kd else ''}"
    try:
        if a.export_checkpoint:
            from training import export_checkpoint
            out = a.out or f"weights/{a.student}.safetensors"
            print(f"{a.student} at step {export_checkpoint(a.student, run_dir, out)} -> {out}")
            return 0
        kd = KDWeights(0, 0, 0) if a.no_kd else KDWeights(a.kd_output, a.kd_latent, a.kd_entropy)
        images = training_images(a.data)
        summary = distill(a.student, a.teacher, run_dir, images, a.profile, kd, a.steps, a.threads, a.out,
                          a.init, resume=not a.fresh, progress=not a.quiet,
                          **overrides(a))
    except (ValueError, OSError, KeyError) as e:
        return fail(e)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
