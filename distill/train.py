"""Distil a student preset from a frozen teacher with the shared training loop."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from training import TrainConfig, Trainer, continue_from, dist_info, export_trained, plot_log
from codec.weights import (load_weights, model_for_weights, parameters_missing_from, shipped_weights,
                           weights_metadata)

from .losses import Distiller, KDWeights
from .teachers import load_teacher

PROFILES = {
    # minutes on 2 CPU cores: `make distill` and tests
    "quick": dict(steps=600, batch=8, crop=128, lr=1e-3, warmup=50, crops_per_epoch=2000, log_every=10),
    # hours in the background: the shipped student weights
    "full": dict(steps=120_000, batch=8, crop=128, lr=5e-4, warmup=500, crops_per_epoch=20_000, log_every=50,
                 checkpoint_every_s=300, snapshot_every_s=1800, detail=1.0, scales=(1.0, 0.75, 0.5), ema=0.999),
}


def distill(student_name: str, teacher_weights: str | Path | None, run_dir: str | Path, images: list,
            profile: str = "quick", kd: KDWeights | None = None, steps: int | None = None,
            threads: int = 0, out: str | Path | None = None, init: str | Path | None = None,
            resume: bool = True, progress: bool = True, **overrides) -> dict:
    """Train ``student_name`` (RD loss + distillation terms unless ``kd`` is all zero or no teacher).

    ``overrides`` set any other TrainConfig field (bf16, channels_last, rate, lr, ...) over the profile's.
    Returns a summary with the final metrics and the path of the exported weights."""
    cfg = TrainConfig(**{**PROFILES[profile], **overrides}, threads=threads)
    if steps:
        cfg.steps = steps
    kd = kd or KDWeights()
    # a pruned student trains (and is exported) with its pruned shapes; its rate points are set before the
    # weights load (a file with fewer is extended, one with as many kept) and before the distiller copies the lambdas
    student = model_for_weights(student_name, init, cfg.rate_points)
    new_names, lineage = frozenset(), None
    if init:
        load_weights(student, init, partial=True)  # an option model may start from its base's weights
        new_names = parameters_missing_from(student, init)
        lineage = weights_metadata(init)
    distiller = None
    if kd.enabled():
        if not teacher_weights:
            raise ValueError("distillation needs --teacher weights (or switch every term off with --no-kd)")
        distiller = Distiller(load_teacher(teacher_weights), student, kd)
    trainer = Trainer(student, cfg, run_dir, images, extra_loss=distiller, extra_modules=distiller,
                      new_names=new_names, lineage=lineage)
    resumed = resume and trainer.resume()
    if not resumed and resume and profile == "full" and not init:
        resumed = continue_from(trainer, shipped_weights(student_name))
    metrics = trainer.train(progress=progress)
    summary = {"student": student_name, "profile": profile, "steps": trainer.step, "resumed": resumed,
               "kd": asdict(kd) if distiller else None, "teacher": str(teacher_weights) if distiller else None,
               "train_metrics": metrics}
    summary["interrupted"] = trainer.interrupted
    if dist_info()[0] == 0 and not trainer.interrupted:
        out = Path(out) if out else Path(run_dir) / f"{student_name}.safetensors"
        with trainer.averaged():
            export_trained(student, run_dir, out, **trainer.weights_meta())
        plot_log(run_dir)
        summary["weights"] = str(out)
    return summary
