"""The command-line flags every training command shares (``python -m teacher train``, ``python -m distill``)."""
from __future__ import annotations

import argparse


def add_run_flags(p: argparse.ArgumentParser, profiles, run_dir_help: str, out_help: str) -> None:
    """Add --profile, --data, --run-dir, --out, --steps, --init, --threads, --bf16, --channels-last, --fresh,
    --quiet to ``p``."""
    p.add_argument("--profile", choices=sorted(profiles), default="quick")
    p.add_argument("--data", help="folder of training images (default: the fetched corpus, data/train)")
    p.add_argument("--run-dir", help=run_dir_help)
    p.add_argument("--out", help=out_help)
    p.add_argument("--steps", type=int, help="override the profile's step count")
    p.add_argument("--init", help="start from these weights (.safetensors) instead of random")
    p.add_argument("--threads", type=int, default=0, help="0 = the idle cores")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast for the transforms (entropy models stay fp32)")
    p.add_argument("--channels-last", action="store_true", help="channels_last memory format")
    p.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def training_images(data: str | None) -> list:
    """The images a training command trains on: ``data``'s, or the fetched corpus (fetched first if missing)."""
    from photos import ensure_data, train_images

    if not data:
        ensure_data()
    return train_images(data)
