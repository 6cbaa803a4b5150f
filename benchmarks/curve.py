"""Rate-distortion against training time: BD-rate vs JPEG on the evaluation set, from real bitstreams, for
every weights snapshot a long run kept (``RUN_DIR/snapshots/step-N.safetensors``, see
``training.Trainer.snapshot``) plus any weights files named on the command line.

    python -m benchmarks.curve --run teacher=runs/teacher-full --run student-2k=runs/student-2k-full-nokd \
        [--extra teacher=weights/teacher.safetensors] [--images N] [--out results]

Training time is the wall time the run's trainer measured (stored with each snapshot; for older weights,
read from the run's log.csv at that step) times the torch threads it used, i.e. CPU-hours on this
machine's cores. Points already evaluated (same file content) are reused from ``training_curve.json``,
so the command can be re-run as a run goes on. Writes ``training_curve.{json,md,png}``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

METRIC = "psnr_yuv"


def point_of(label: str, weights: Path, run_dir: Path | None) -> dict:
    """Describe one weights file: label, step, CPU-hours (measured by its trainer), file and model id."""
    from training import log_train_seconds
    from codec.weights import load_model, model_id, weights_metadata

    meta = weights_metadata(weights)
    step = int(meta.get("step", 0))
    seconds = float(meta["train_s"]) if "train_s" in meta else None
    if seconds is None and run_dir is not None:
        seconds = log_train_seconds(run_dir / "log.csv", step)
    if seconds is None:
        raise ValueError(f"{weights}: no training time recorded (metadata train_s) and no run log to read it from")
    threads = int(meta.get("threads", 1))
    return {"label": label, "step": step, "cpu_hours": round(seconds * threads / 3600, 6),
            "weights": str(weights), "model_id": model_id(load_model(str(weights))).hex()}


def collect(runs: list[tuple[str, Path]], extra: list[tuple[str, Path]]) -> list[dict]:
    """Every snapshot of every run, plus the extra weights files, as points to evaluate."""
    points = []
    for label, run_dir in runs:
        snaps = sorted((run_dir / "snapshots").glob("step-*.safetensors"))
        if not snaps:
            print(f"note: {run_dir} has no snapshots yet", file=sys.stderr)
        points += [point_of(label, s, run_dir) for s in snaps]
    for label, weights in extra:
        points.append(point_of(label, weights, dict(runs).get(label)))
    return points


def evaluate(points: list[dict], images: list[Path], cache: dict) -> tuple[list[dict], list[dict]]:
    """BD-rate vs JPEG for each point (new ones benchmarked, known model ids reused); returns
    (points with results, the JPEG rows)."""
    from evaluation.bdrate import bd_summary
    from evaluation.codecs import LearnedCodec, PillowJPEG
    from evaluation.compare import compare
    from evaluation.rd import run_rd

    names = [p.name for p in images]
    jpeg_rows = [r for r in cache.get("jpeg_rows", []) if r["image"] in names]
    if {r["image"] for r in jpeg_rows} != set(names):
        jpeg_rows, failed = run_rd(images, [PillowJPEG()])
        if failed:
            raise RuntimeError(f"JPEG failed: {failed}")
    known = {(p["model_id"], tuple(p["images"])): p for p in cache.get("points", [])}
    done = []
    for p in points:
        hit = known.get((p["model_id"], tuple(names)))
        if hit is None:
            codec = LearnedCodec(f"{p['label']}@{p['step']}", p["weights"])
            rows = compare(images, [codec]).rows
            s = bd_summary(rows + jpeg_rows, "jpeg", codec.name, METRIC)
            # None where no image's curve overlaps JPEG's (an untrained model): JSON has no NaN.
            bd = {k: (s[k] if s["n_images"] else None) for k in ("bd_rate", "bd_quality_db")}
            hit = {"images": names, "bd_rate_vs_jpeg": bd["bd_rate"], "bd_psnr_vs_jpeg": bd["bd_quality_db"],
                   "n_images": s["n_images"],
                   "mean_bpp": sum(r["bpp"] for r in rows) / len(rows)}
        done.append({**p, **{k: hit[k] for k in ("images", "bd_rate_vs_jpeg", "bd_psnr_vs_jpeg", "n_images",
                                                    "mean_bpp")}})
    return done, jpeg_rows


def markdown(points: list[dict], command: str) -> str:
    """The curve as a Markdown table, one row per snapshot."""
    lines = ["# Rate-distortion against training CPU-hours", "",
             f"Made by `{command}` on the 14-photo evaluation set (or the first N), PSNR-YUV (6:1:1), BD-rate "
             "vs Pillow JPEG 4:2:0 from real bitstream bytes (bjontegaard, per image then averaged). CPU-hours: "
             "wall time measured by the trainer x its torch threads, 2-core AMD EPYC shared with other jobs.",
             "", "| model | step | CPU-hours | BD-rate vs JPEG | BD-PSNR vs JPEG | images |",
             "|---|---:|---:|---:|---:|---:|"]
    for p in sorted(points, key=lambda p: (p["label"], p["step"])):
        rate, psnr = p["bd_rate_vs_jpeg"], p["bd_psnr_vs_jpeg"]
        rate = "n/a (no overlap)" if rate is None else f"{rate:+.1f}%"
        psnr = "n/a" if psnr is None else f"{psnr:+.2f} dB"
        lines.append(f"| {p['label']} | {p['step']} | {p['cpu_hours']:.2f} | {rate} | {psnr} | {p['n_images']} |")
    return "\n".join(lines) + "\n"


def plot(points: list[dict], path: Path) -> Path:
    """BD-rate vs JPEG against CPU-hours, one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .report import save_figure

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for label in sorted({p["label"] for p in points}):
        pts = sorted((p["cpu_hours"], p["bd_rate_vs_jpeg"]) for p in points
                     if p["label"] == label and p["bd_rate_vs_jpeg"] is not None)
        if pts:
            ax.plot(*zip(*pts), marker="o", label=label)
    ax.axhline(0, color="k", lw=0.8)
    ax.axhline(-25, color="tab:red", ls="--", lw=0.8, label="teacher target (-25%)")
    ax.axhline(-20, color="tab:purple", ls=":", lw=0.8, label="2k student target (-20%)")
    ax.set_xlabel("training CPU-hours (2-core AMD EPYC)")
    ax.set_ylabel("BD-rate vs JPEG, PSNR-YUV (%)")
    save_figure(fig, ax, path)
    return path


def _pairs(items: list[str], flag: str) -> list[tuple[str, Path]]:
    from codec.cli_util import parse_pairs
    return [(label, Path(path)) for label, path in parse_pairs(items, flag, "LABEL=PATH")]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.curve", description=__doc__.splitlines()[0])
    p.add_argument("--run", action="append", default=[], help="LABEL=RUN_DIR with snapshots/ (repeatable)")
    p.add_argument("--extra", action="append", default=[], help="LABEL=WEIGHTS.safetensors (repeatable)")
    p.add_argument("--images", type=int, help="first N evaluation images only")
    p.add_argument("--data", help="evaluation images folder (default: the fetched evaluation set)")
    p.add_argument("--out", default="results")
    a = p.parse_args(argv)

    from codec.cli_util import fail
    try:
        import torch

        from photos import eval_images
        torch.set_num_threads(1)
        runs, extra = _pairs(a.run, "--run"), _pairs(a.extra, "--extra")
        if not runs and not extra:
            raise ValueError("name at least one --run or --extra")
        out = Path(a.out)
        cache_path = out / "training_curve.json"
        cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
        images = eval_images(a.data)[: a.images]
        points, jpeg_rows = evaluate(collect(runs, extra), images, cache)
        # Keep earlier points of runs not named this time (a curve is built over several sessions).
        kept = [q for q in cache.get("points", []) if q["model_id"] not in {p["model_id"] for p in points}
                and q["images"] == [i.name for i in images]]
        points += kept
        command = "python -m benchmarks.curve " + " ".join(argv if argv is not None else sys.argv[1:])
        out.mkdir(parents=True, exist_ok=True)
        cache_path.write_text(json.dumps({"command": command, "points": points, "jpeg_rows": jpeg_rows}, indent=1))
        (out / "training_curve.md").write_text(markdown(points, command))
        plot(points, out / "training_curve.png")
    except (ValueError, OSError, KeyError, RuntimeError) as e:
        return fail(e)
    print(markdown(points, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
