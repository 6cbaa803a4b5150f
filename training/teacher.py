"""Training the VMuC-style teacher: its two profiles and one library call (``python -m teacher train``
and the main job's pipeline both use it)."""
from __future__ import annotations

import sys
from pathlib import Path

from codec.paths import RUNS_DIR
from codec.weights import load_weights, model_for_weights, shipped_weights

from .checkpoints import continue_from, export_trained, plot_log
from .loop import TrainConfig, Trainer

PROFILES = {
    # minutes on 2 CPU cores: used by tests and `make distill`
    "quick": dict(steps=200, batch=4, crop=128, lr=2e-4, warmup=20, crops_per_epoch=800, log_every=5),
    # hours, in the background: the shipped weights (resumable)
    "full": dict(steps=200_000, batch=8, crop=128, lr=2e-4, warmup=200, crops_per_epoch=20_000,
                 log_every=25, checkpoint_every_s=300, snapshot_every_s=1800),
}


def train_teacher(images: list, profile: str = "quick", run_dir: str | Path | None = None,
                  out: str | Path | None = None, steps: int | None = None, init: str | Path | None = None,
                  fresh: bool = False, progress: bool = True, **overrides) -> dict:
    """Train the teacher on ``images`` with the rate-distortion loss; resumes RUN_DIR's checkpoint unless
    ``fresh``; the full profile goes on from the shipped weights' step. ``overrides`` set TrainConfig fields
    (threads, bf16, ...). Returns the step, the last metrics, the weights written (None when interrupted)."""
    if not images:
        raise ValueError("no training images found")
    cfg = TrainConfig(**{**PROFILES[profile], **overrides})
    if steps:
        cfg.steps = steps
    run_dir = Path(run_dir or RUNS_DIR / f"teacher-{profile}")
    model = model_for_weights("teacher", init, cfg.rate_points)
    if init:
        load_weights(model, init)
    trainer = Trainer(model, cfg, run_dir, images)
    if not fresh and trainer.resume():
        print(f"resumed {run_dir} at step {trainer.step}", file=sys.stderr)
    elif profile == "full" and not init and continue_from(trainer, shipped_weights("teacher")):
        print(f"continuing the shipped teacher from step {trainer.step}", file=sys.stderr)
    metrics = trainer.train(progress=progress)
    if trainer.interrupted:
        return {"step": trainer.step, "metrics": metrics, "weights": None, "run_dir": str(run_dir)}
    out = Path(out) if out else (shipped_weights("teacher") if profile == "full" else run_dir / "teacher.safetensors")
    with trainer.averaged():
        export_trained(model, run_dir, out, trainer.step, train_s=round(trainer.train_s, 1))
    plot_log(run_dir)
    return {"step": trainer.step, "metrics": metrics, "weights": str(out), "run_dir": str(run_dir)}
