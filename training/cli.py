"""The command-line flags every training command shares (``python -m teacher train``, ``python -m distill``)."""
from __future__ import annotations

import argparse

from codec.model import RATE_MODES

from .loss import DISTORTIONS


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
    o = p.add_argument_group("overrides of the profile's training settings")
    o.add_argument("--crop", type=int, help="training crop size (e.g. 256: the hyper-latent sees a 4x4 grid, not 2x2)")
    o.add_argument("--batch", type=int, help="crops per step (e.g. 2 at --crop 512 costs what 8 at 256 do)")
    o.add_argument("--lr", type=float, help="peak learning rate")
    o.add_argument("--warmup", type=int, help="warm-up steps")
    o.add_argument("--ema", type=float, help="weight-averaging decay per step (0: off)")
    o.add_argument("--rate-points", type=int,
                   help="train this many rate points (default 6; 8 adds two above, up to ~38 dB PSNR-Y on "
                        "Kodak-like photos); new ones start from the last two's gains; give it again to resume")
    o.add_argument("--scales", type=lambda t: tuple(float(x) for x in t.split(",")),
                   help="comma-separated downscaling factors of the training photos, e.g. 1.0,0.75,0.5")
    o.add_argument("--distortion", choices=DISTORTIONS,
                   help="psnr (default): the gradient of PSNR-YUV, the metric the codec is judged by (each plane's "
                        "gradient over its own MSE; chroma weighs 2.5-5x more than in mse); mse: the planes' MSE "
                        "weighted 6:1:1 (runs before 2026-12-01)")
    o.add_argument("--rate", choices=RATE_MODES,
                   help="the training forward (codec.model.YUVCodec.forward): noise (default), noise-rd (its "
                        "residuals rounded as the fast encoder's RD rounding does, straight-through), coded, coded-ste")
    o.add_argument("--rate-weights", type=_weights,
                   help="comma-separated sampling weights of the rate points, lowest rate first (default: equal), "
                        "e.g. 1,1,1,1,2,2,2,2 trains the upper half twice as often")
    o.add_argument("--seed", type=int, help="random seed of the crops, noise and rate points (default 0): two runs "
                                            "from the same weights with other seeds see other data")
    o.add_argument("--new-lr-scale", type=float,
                   help="learning-rate factor of the tensors --init lacks (a deeper preset's new blocks, which "
                        "start as identities and grow slowly at the base rate's lr), e.g. 10")


OVERRIDES = ("crop", "batch", "lr", "warmup", "ema", "scales", "bf16", "channels_last", "rate_points", "new_lr_scale",
             "distortion", "rate_weights", "seed", "rate")


def _weights(text: str) -> tuple[float, ...]:
    try:
        w = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not w or min(w) < 0 or sum(w) <= 0:
        raise argparse.ArgumentTypeError(f"weights must be >= 0 with a positive sum, got {text!r}")
    return w


def overrides(args) -> dict:
    """The TrainConfig fields the command line set (the profile keeps the others; --threads is passed apart)."""
    given = {k: getattr(args, k) for k in OVERRIDES}
    return {k: v for k, v in given.items() if v is not None and v is not False}   # 0 and 0.0 are given values


def training_images(data: str | None) -> list:
    """The images a training command trains on: ``data``'s, or the fetched corpus (fetched first if missing)."""
    from photos import ensure_data, train_images

    if not data:
        ensure_data()
    return train_images(data)
