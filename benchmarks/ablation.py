"""The seed papers' modules, measured: ``python -m benchmarks ablation``.

Every variant (the baseline and the baseline plus one module) starts from the same weights (by default
the shipped ones of the base model; keys a module adds start at its own, identity-like, initialisation)
and is fine-tuned for the same steps on the same crops with the same seed. Each is then coded through
real bitstreams on the evaluation set; BD-rate against the baseline fine-tuned the same way and against
JPEG, added kMAC/px from the profiler (768x512), added parameters. A second baseline trained with
another seed measures how far the same run moves by chance; a module pays its way when it fits the
budget and gains more than that. Writes results/ablation.{md,json}.
"""
from __future__ import annotations

import json
import math
import shutil
import sys
import time
from pathlib import Path

from codec.paths import RUNS_DIR

DEFAULT_STEPS = 400
BASELINE = "baseline"
NOISE = "baseline-seed1"     # the baseline again with another seed: the run-to-run noise
ENCODER_LIMIT = 35.0         # teacher / model, on both sides
DECODER_BUDGET_KMAC = 2.0    # the mission's decoder budget (kMAC per pixel)


def _load_matching(model, path: Path) -> tuple[int, int]:
    """Load the tensors of ``path`` whose names the model has; (loaded, model tensors). Refuses weights
    that hold tensors the model lacks (another base model)."""
    from safetensors import safe_open

    from codec.weights import WeightsError, load_weights
    try:
        load_weights(model, path, partial=True)
    except WeightsError as e:
        raise ValueError(str(e)) from None
    with safe_open(str(path), "pt") as f:
        return len(list(f.keys())), len(model.state_dict())


def _variant(base: str, module: str) -> str:
    return base if module in (BASELINE, NOISE) else f"{base}+{module}"


def train_variant(name: str, run_dir: Path, init: Path | None, steps: int, images: list, batch: int,
                  crop: int, threads: int, progress: bool, seed: int = 0) -> dict:
    """Fine-tune one variant from ``init`` and export its weights; returns a summary."""
    from codec.registry import create_model
    from training import TrainConfig, Trainer, export_trained

    if run_dir.exists():
        shutil.rmtree(run_dir)  # a fresh run every time: same start, same steps for every variant
    model = create_model(name)
    loaded = _load_matching(model, init) if init else (0, len(model.state_dict()))
    cfg = TrainConfig(steps=steps, batch=batch, crop=crop, lr=2e-4, warmup=min(20, steps), threads=threads,
                      checkpoint_every_s=1e9, log_every=max(1, min(10, steps)), seed=seed)
    trainer = Trainer(model, cfg, run_dir, images)
    start = time.monotonic()
    metrics = trainer.train(progress=progress)
    seconds = time.monotonic() - start
    weights = export_trained(model, run_dir, run_dir / f"{name}.safetensors", trainer.step)
    return {"model": name, "steps": trainer.step, "train_seconds": round(seconds, 1), "weights": str(weights),
            "loaded_tensors": loaded[0], "model_tensors": loaded[1], "train_metrics": metrics}


def cost(weights: str) -> dict:
    """Encoder and decoder kMAC/px (768x512) and parameters of trained weights."""
    from codec.weights import load_model
    from profiling import profile_model
    model = load_model(weights)
    report = profile_model(model, teacher=False, check_size=None)
    return {"encoder_kmac": report.total("encoder"), "decoder_kmac": report.total("decoder"),
            "params": sum(p.numel() for p in model.parameters())}


def run(base: str = "student-2k", modules: list[str] | None = None, steps: int = DEFAULT_STEPS,
        images: int | None = None, init: str | None = "auto", out: str | Path = "results",
        data: str | None = None, batch: int = 8, crop: int = 128, threads: int = 1,
        run_root: str | Path = RUNS_DIR / "ablation", progress: bool = True, train_data: str | None = None,
        limits: dict | None = None) -> dict:
    """Train and measure the baseline and every module; write ablation.{md,json} into ``out``.

    ``train_data``: training image folder (default data/train); ``limits``: the budget as
    {"encoder_kmac", "decoder_kmac"} (default: the 2k decoder budget and 35x below the teacher's encoder)."""
    import torch

    from photos import ensure_data, eval_images, train_images
    from codec.modules import OPTIONS, check_options
    from codec.registry import list_models
    from codec.weights import shipped_weights, weights_metadata
    from profiling import profile_model

    from evaluation.bdrate import bd_summary
    from evaluation.codecs import LearnedCodec, PillowJPEG
    from evaluation.compare import compare

    modules = list(modules if modules is not None else OPTIONS)
    try:
        for module in modules:  # each is a variant of its own
            check_options([module])
    except KeyError as e:
        raise ValueError(e.args[0]) from None
    if len(set(modules)) != len(modules) or not modules:
        raise ValueError(f"--modules wants distinct options, got {','.join(modules) or 'none'}")
    if base not in list_models():
        raise ValueError(f"--base must be a preset without options ({', '.join(list_models())}), got {base!r}")
    if steps < 1:
        raise ValueError("--steps must be at least 1")
    if images is not None and images < 1:
        raise ValueError("--images must be at least 1")
    if init == "auto":
        init = shipped_weights(base) if shipped_weights(base).is_file() else None
    init = Path(init) if init and init != "none" else None
    if init is not None and not init.is_file():
        raise ValueError(f"--init {init}: no such weights file")
    if init is not None:  # one frozen copy: a background run may rewrite the shipped file meanwhile
        frozen = Path(run_root) / base / "init.safetensors"
        frozen.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(init, frozen)
        init_step = weights_metadata(frozen).get("step")
        init, source = frozen, f"{init} (step {init_step})" if init_step else str(init)
    else:
        source = None
    if data is None:
        ensure_data()
    pictures = eval_images(data)[:images]
    crops = train_images(train_data)
    threads_before = torch.get_num_threads()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    labels = [BASELINE, NOISE] + modules
    try:
        runs = {}
        for i, label in enumerate(labels):
            name = _variant(base, label)
            print(f"[{i + 1}/{len(labels)}] {name}: {steps} steps from {source or 'fresh initialisation'}",
                  file=sys.stderr)
            runs[label] = train_variant(name, Path(run_root) / base / label, init, steps, crops,
                                        batch, crop, threads, progress, seed=int(label == NOISE))
        torch.set_num_threads(1)  # decode as the benchmark does: one thread
        rows = compare(pictures, [LearnedCodec(label, runs[label]["weights"]) for label in labels] + [PillowJPEG()],
                       progress=progress).rows
    finally:
        torch.set_num_threads(threads_before)
    costs = {label: cost(runs[label]["weights"]) for label in labels}
    if limits is None:
        teacher = profile_model("teacher", teacher=False, check_size=None)
        limits = {"encoder_kmac": teacher.total("encoder") / ENCODER_LIMIT, "decoder_kmac": DECODER_BUDGET_KMAC}
    table = []
    for label in labels:
        c, b = costs[label], costs[BASELINE]
        row = {"module": label, "model": runs[label]["model"], "steps": runs[label]["steps"],
               "train_seconds": runs[label]["train_seconds"],
               "encoder_kmac": c["encoder_kmac"], "decoder_kmac": c["decoder_kmac"], "params": c["params"],
               "added_encoder_kmac": c["encoder_kmac"] - b["encoder_kmac"],
               "added_decoder_kmac": c["decoder_kmac"] - b["decoder_kmac"], "added_params": c["params"] - b["params"],
               "vs_jpeg": bd_summary(rows, "jpeg", label, "psnr_yuv")}
        if label != BASELINE:
            row.update(vs_baseline=bd_summary(rows, BASELINE, label, "psnr_yuv"),
                       within_budget=all(c[k] <= limits[k] + 1e-9 for k in limits))
        if label in OPTIONS:
            opt = OPTIONS[label]
            row.update(title=opt.title, paper=opt.paper, claim=opt.claim, note=opt.note)
        table.append(row)
    noise = abs(table[1]["vs_baseline"]["bd_rate"])
    for row in table[2:]:
        gain = row["vs_baseline"]["bd_rate"]
        row["pays"] = bool(row["within_budget"] and math.isfinite(gain) and gain < -noise)
    result = {"base": base, "init": source, "steps": steps, "batch": batch, "crop": crop,
              "lr": 2e-4, "images": [p.stem for p in pictures], "limits": limits, "table": table,
              "command": "python -m benchmarks ablation " + " ".join(sys.argv[2:] if sys.argv[1:2] == ["ablation"] else []),
              "machine": _machine(), "date": time.strftime("%Y-%m-%d %H:%M")}
    (out / "ablation.json").write_text(json.dumps({**result, "runs": runs, "rows": rows}, indent=1))
    (out / "ablation.md").write_text(markdown(result))
    return result


def _machine() -> str:
    from evaluation.machine import machine
    return machine()


def _pct(s: dict | None) -> str:
    if not s or not math.isfinite(s["bd_rate"]):
        return "n/a (curves do not overlap)"
    return f"{s['bd_rate']:+.2f}% / {s['bd_quality_db']:+.3f} dB ({s['n_images']} img)"


def markdown(r: dict) -> str:
    """The ablation as Markdown: one row per module, the baseline first."""
    base = r["table"][0]
    lines = [
        f"# Seed-paper modules on {r['base']}: ablation", "",
        f"Made by `{r['command'].strip()}` on {r['machine']} ({r['date']}), a machine shared with background "
        "training. Every variant starts from "
        + (f"`{r['init']}`" if r["init"] else "a fresh initialisation")
        + f" (a module's own layers start at their identity-like initialisation) and is fine-tuned for "
        f"**{r['steps']} steps** (batch {r['batch']} of {r['crop']}x{r['crop']} crops, lr {r['lr']}, same seed "
        "and crops for every variant but the noise baseline below), then coded through real bitstreams on "
        f"{len(r['images'])} evaluation image{'s' if len(r['images']) != 1 else ''}. BD-rate on PSNR-YUV (Akima, per image then averaged; "
        "negative = fewer bits for the same quality) against the baseline fine-tuned the same way, and "
        "against Pillow JPEG. Costs from `profiling.profile_model` at 768x512; \"budget\": decoder at most "
        f"{r['limits']['decoder_kmac']:.3f} kMAC/px and encoder at most {r['limits']['encoder_kmac']:.3f} "
        "kMAC/px (35x below the teacher).", "",
        f"Baseline `{base['model']}`: decoder {base['decoder_kmac']:.3f} kMAC/px, encoder "
        f"{base['encoder_kmac']:.3f} kMAC/px, {base['params']:,} parameters, BD-rate vs JPEG "
        f"{_pct(base['vs_jpeg'])}.", "",
        "| module | paper | what | added decoder kMAC/px | added encoder kMAC/px | added params | steps "
        "| BD-rate vs baseline (PSNR-YUV) | BD-rate vs JPEG | within budget | paper's claimed gain | note |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|---|---|"]
    for row in r["table"][2:]:
        lines.append(
            f"| `{row['module']}` | {row['paper']} | {row['title']} | {row['added_decoder_kmac']:+.4f} | "
            f"{row['added_encoder_kmac']:+.4f} | {row['added_params']:+,} | {row['steps']} | "
            f"{_pct(row['vs_baseline'])} | {_pct(row['vs_jpeg'])} | {'yes' if row['within_budget'] else 'no'} | "
            f"{row['claim']} | {row['note']} |")
    pays = [row["module"] for row in r["table"][2:] if row["pays"]]
    noise = r["table"][1]["vs_baseline"]
    lines += ["", f"Run-to-run noise: the baseline trained again with another seed (other crops and noise draws) "
              f"lands at {_pct(noise)} against the first; a module's BD-rate within that band is not "
              "told apart from chance.", "",
              "Pays its way (within the budget and a BD-rate vs the baseline below minus that noise, at this step "
              "count): " + (", ".join(f"`{m}`" for m in pays) if pays else "none") + ".",
              "", "The teacher (about 1.7 s per step on this machine) is not run by default: "
              "`python -m benchmarks ablation --base teacher` does it. The papers' figures come from their own "
              "backbones, data (Kodak/CLIC, not this evaluation set) and full training; ours from a short "
              "fine-tuning, so small differences are within the noise of a few hundred steps.", ""]
    return "\n".join(lines)
