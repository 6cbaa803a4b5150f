"""Teacher command line: ``python -m teacher train --profile quick|full``."""
from __future__ import annotations

import argparse
import sys

PROFILES = {
    # minutes on 2 CPU cores: used by tests and `make distill`
    "quick": dict(steps=200, batch=4, crop=128, lr=2e-4, warmup=20, crops_per_epoch=800, log_every=5),
    # hours, in the background: the shipped weights (resumable)
    "full": dict(steps=200_000, batch=8, crop=128, lr=2e-4, warmup=200, crops_per_epoch=20_000,
                 log_every=25, checkpoint_every_s=300, snapshot_every_s=1800),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m teacher", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train the teacher with the rate-distortion loss on YUV 4:2:0")
    t.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    t.add_argument("--data", help="folder of training images (default: the fetched corpus, data/train)")
    t.add_argument("--run-dir", help="checkpoints and logs (default runs/teacher-PROFILE)")
    t.add_argument("--out", help="weights to write (default: runs/.../teacher.safetensors; "
                                 "the full profile writes weights/teacher.safetensors)")
    t.add_argument("--steps", type=int, help="override the profile's step count")
    t.add_argument("--threads", type=int, default=0, help="0 = the idle cores")
    t.add_argument("--bf16", action="store_true", help="bf16 autocast for the transforms (entropy models stay fp32)")
    t.add_argument("--channels-last", action="store_true", help="channels_last memory format")
    t.add_argument("--init", help="start from these weights (.safetensors) instead of random")
    t.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    x = sub.add_parser("export", help="write weights from a run's latest checkpoint (e.g. while it trains)")
    x.add_argument("--run-dir", default="runs/teacher-full")
    x.add_argument("--out", default="weights/teacher.safetensors")
    a = p.parse_args(argv)

    from codec.cli_util import fail
    try:
        return _export(a) if a.cmd == "export" else _train(a)
    except (ValueError, OSError) as e:
        return fail(e)


def _export(a) -> int:
    from training import export_checkpoint

    step = export_checkpoint("teacher", a.run_dir, a.out)
    print(f"teacher at step {step} -> {a.out}")
    return 0


def _train(a) -> int:
    from pathlib import Path

    from photos import ensure_data, train_images
    from codec.registry import create_model
    from training import TrainConfig, Trainer, continue_from, export_trained, plot_log
    from codec.weights import load_weights, shipped_weights

    cfg = TrainConfig(**PROFILES[a.profile], threads=a.threads, bf16=a.bf16, channels_last=a.channels_last)
    if a.steps:
        cfg.steps = a.steps
    if a.data:
        images = train_images(a.data)
    else:
        ensure_data()
        images = train_images()
    if not images:
        raise ValueError("no training images found")
    run_dir = Path(a.run_dir or f"runs/teacher-{a.profile}")
    model = create_model("teacher")
    if a.init:
        load_weights(model, a.init)
    trainer = Trainer(model, cfg, run_dir, images)
    if not a.fresh and trainer.resume():
        print(f"resumed {run_dir} at step {trainer.step}", file=sys.stderr)
    elif a.profile == "full" and not a.init and continue_from(trainer, shipped_weights("teacher")):
        print(f"continuing the shipped teacher from step {trainer.step}", file=sys.stderr)
    metrics = trainer.train(progress=not a.quiet)
    if trainer.interrupted:
        print(f"stopped at step {trainer.step}; checkpoint saved in {run_dir} (run again to resume)")
        return 0
    out = Path(a.out) if a.out else (shipped_weights("teacher") if a.profile == "full"
                                     else run_dir / "teacher.safetensors")
    with trainer.averaged():
        export_trained(model, run_dir, out, trainer.step, train_s=round(trainer.train_s, 1))
    plot_log(run_dir)
    print(f"teacher trained to step {trainer.step}: {metrics}; weights -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
