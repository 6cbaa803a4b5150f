"""Checkpoints and weights of a training run: safe loading (tensors and numbers only), atomic writes,
exporting weights with their step and training time (added up over the runs a file descends from), continuing
from shipped weights, the run's plot."""
from __future__ import annotations

import csv
import os
import pickle
import warnings
from pathlib import Path

import torch

from codec.registry import create_model
from codec.weights import load_weights, save_weights, weights_metadata


class CheckpointError(ValueError):
    """A checkpoint that is unsafe to unpickle, unreadable, or written by another kind of run."""


def first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def load_checkpoint(path: Path) -> dict:
    """Load a checkpoint with ``torch.load(weights_only=True)``: tensors and numbers only, never code.
    Raises CheckpointError (one line) for a file that holds anything else or cannot be read."""
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols
            warnings.simplefilter("ignore")
            return torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as e:
        # torch's message advises weights_only=False, i.e. running the file's code: keep only its reason.
        lines = [ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()]
        why = next((ln for ln in lines if not ln.startswith(("Please file", "Check the doc"))), "not a pickle")
        raise CheckpointError(f"refused checkpoint {path}: not tensors and numbers only ({why.rstrip('.')}); "
                              "nothing in it was run; delete it or start afresh") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {first_line(e)}") from None


def atomic_save(obj, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def log_train_seconds(log_path: Path, until_step: int | None = None) -> float | None:
    """Training wall seconds a log.csv records (its clock restarts at each resume), in all or up to the
    first row at or past ``until_step``; None when there is no such log or row."""
    if not log_path.is_file():
        return None
    total, last = 0.0, 0.0
    for row in csv.DictReader(open(log_path)):
        t = float(row["time_s"])
        if t < last:
            total += last
        last = t
        if until_step is not None and int(row["step"]) >= until_step:
            return total + t
    return None if until_step is not None else total + last


def checkpoint_train_seconds(state: dict, run_dir: str | Path) -> float:
    """Training seconds of a checkpoint (summed over processes): stored in it, or (older checkpoints) read
    from the run's log."""
    return float(state.get("train_s") or log_train_seconds(Path(run_dir) / "log.csv") or 0.0)


def plot_log(run_dir: str | Path) -> Path:
    """Draw loss, bpp and PSNR-YUV against steps from a run's log.csv into training.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    rows = list(csv.DictReader(open(run_dir / "log.csv")))
    steps = [int(r["step"]) for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
    for ax, key in zip(axes, ("loss", "bpp", "psnr_yuv")):
        ax.plot(steps, [float(r[key]) for r in rows])
        ax.set_xlabel("step")
        ax.set_title(key + (" (training crops, estimated)" if key != "loss" else ""))
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out = run_dir / "training.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def export_trained(model, run_dir: str | Path, out_path: str | Path, step: int | None = None,
                   **meta) -> Path:
    """Build the CDF tables and write the run's weights as safetensors (recording the training step and
    any extra ``meta``, so that a long run can go on from shipped weights on another machine); returns the path."""
    model.eval()
    model.update(force=True)
    meta = {k: v for k, v in {"step": step, **meta}.items() if v is not None}
    return save_weights(model, out_path, meta=meta or None)


# what a GPU burst's weights record of it, carried into every file trained from them
CARRIED_META = ("gpu_s", "gpu_steps", "gpu", "gpu_world", "gpu_batch", "gpu_crop")


def lineage_meta(base: dict | None, step: int, train_s: float, what: str) -> dict:
    """Metadata of weights trained ``step`` steps (``train_s`` seconds) from a start file whose metadata is
    ``base`` (None: from random weights): step and train_s count the whole lineage, so that a long run split
    over sessions, machines and ``--init`` restarts reads as one; this run's share is kept in run_step and
    run_train_s, and ``history`` says what each stage was (``what``: this one)."""
    if not base:
        return {"step": step, "train_s": train_s}
    base_step, base_s = int(base.get("step", 0)), float(base.get("train_s", 0.0))
    before = base.get("history") or f"step {base_step:,} ({base_s / 3600:.2f} CPU-h)"
    meta = {k: base[k] for k in CARRIED_META if k in base}
    meta.update(step=base_step + step, train_s=round(base_s + train_s, 1), run_step=step,
                run_train_s=round(train_s, 1), history=f"{before}; then {step:,} steps ({train_s:,.0f} s): {what}")
    return meta


def export_checkpoint(name: str, run_dir: str | Path, out_path: str | Path) -> int:
    """Write weights from a run's latest checkpoint (also while it trains); returns its step."""
    ckpt = Path(run_dir) / "checkpoint.pt"
    if not ckpt.is_file():
        raise ValueError(f"no checkpoint at {ckpt}")
    state = load_checkpoint(ckpt)
    model = create_model(name)
    if "gain_steps" in state["model"]:
        model.set_rate_points(state["model"]["gain_steps"].shape[0])
    model.load_state_dict(state["model"])
    export_trained(model, run_dir, out_path, int(state["step"]),
                   train_s=round(checkpoint_train_seconds(state, run_dir), 1))
    return int(state["step"])


def continue_from(trainer, weights: str | Path) -> bool:
    """Start a run from shipped weights and the step they record (no checkpoint on this machine):
    the learning-rate schedule goes on where it stopped (after ``cfg.rewarm`` steps of warm-up); the optimiser
    state starts afresh."""
    weights = Path(weights)
    if trainer.step or not weights.is_file():
        return False
    load_weights(trainer.model, weights)
    if trainer.ema is not None:
        trainer.ema = trainer._fresh_ema()
    meta = weights_metadata(weights)
    trainer.step = trainer.fresh_optimiser_at = int(meta.get("step", 0))
    trainer.train_s = float(meta.get("train_s", 0.0))
    return True
