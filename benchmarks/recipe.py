"""The training recipe's changes, measured one at a time: ``python -m benchmarks recipe``.

Every variant fine-tunes the same starting weights (by default the shipped student-2k) for the same
steps with the same seed, changing one thing of the recipe (the rate term, what is trained, the training
crops); each is then coded through real bitstreams on the evaluation set. BD-rate (PSNR-YUV) against the
starting weights (the direct measure: same rate range) and against JPEG and WebP. Results accumulate in
results/recipe.json (a variant already measured with the same settings is reused); results/recipe.md is
rewritten each time.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

# The old recipe's crops (uniform positions, full scale); every variant but the data ones keeps them, so
# that each changes one thing against "noise" (the full profile itself now trains on textured crops).
_OLD_DATA = {"detail": 0.0, "scales": (1.0,)}
_NEW_DATA = {"detail": 1.0, "scales": (1.0, 0.75, 0.5)}

# name -> (what changes, TrainConfig overrides)
VARIANTS = {
    "noise": ("baseline: the classic rate gradient (uniform noise, every element coded), old crops",
              {"rate": "noise", **_OLD_DATA}),
    "coded": ("coded rate: skip, decoded-anchor context, exact bits; noise gradients", {"rate": "coded", **_OLD_DATA}),
    "coded-ste": ("coded rate with straight-through gradients at the coded values", {"rate": "coded-ste", **_OLD_DATA}),
    "encoder-coded": ("coded rate, only the encoder trained (decoder and entropy models fixed)",
                      {"rate": "coded", "trainable": "encoder", **_OLD_DATA}),
    "encoder-noise": ("classic rate, only the encoder trained", {"rate": "noise", "trainable": "encoder", **_OLD_DATA}),
    "data": ("classic rate, textured crops: detail=1, scales 1/0.75/0.5", {"rate": "noise", **_NEW_DATA}),
    "coded+data": ("coded rate and textured crops", {"rate": "coded", **_NEW_DATA}),
    "gain-lr": ("classic rate, the rate points' gain vectors at 50x the learning rate",
                {"rate": "noise", "gain_lr_scale": 50.0, **_OLD_DATA}),
}


def _settings(steps: int, lr: float, init: Path) -> dict:
    return {"steps": steps, "lr": lr, "warmup": min(100, steps // 10), "init": str(init), "seed": 0}


def train(variant: str, settings: dict, run_dir: Path, images: list, progress: bool) -> Path:
    """Fine-tune one variant; returns its weights."""
    from distill.losses import KDWeights
    from distill.train import distill

    overrides = dict(VARIANTS[variant][1], lr=settings["lr"], warmup=settings["warmup"], seed=settings["seed"],
                     snapshot_every_s=0.0, checkpoint_every_s=1e9)
    out = run_dir / "final.safetensors"
    distill("student-2k", None, run_dir, images, "full", KDWeights(0, 0, 0), settings["steps"], 1, out,
            settings["init"], resume=False, progress=progress, **overrides)
    return out


def evaluate(weights: dict[str, Path], images: list[Path], anchors: list[str]) -> list[dict]:
    """RD rows of every weights file and of the anchor codecs on the evaluation images."""
    from evaluation.codecs import LearnedCodec, PillowJPEG, classical_codecs
    from evaluation.rd import run_rd

    codecs = [PillowJPEG()] + [classical_codecs()[a] for a in anchors if a != "jpeg" and a in classical_codecs()]
    for name, path in weights.items():
        codecs.append(LearnedCodec(name, path))
    ready = []
    for c in codecs:
        ok, _ = c.available()
        if ok:
            ready.append(c)
    rows, failed = run_rd(images, ready, progress=False)
    if any(name in failed for name in weights):
        raise RuntimeError(f"coding failed: {failed}")
    return rows


def run(variants: list[str], steps: int, lr: float, init: str | Path, out: Path, run_root: Path,
        progress: bool = True) -> dict:
    """Train and measure the variants; write recipe.{json,md}."""
    import torch

    from photos import ensure_data, eval_images, train_images
    from codec.weights import weights_metadata

    from evaluation.bdrate import bd_summary
    from evaluation.machine import machine

    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    torch.set_num_threads(1)
    ensure_data()
    init = Path(init)
    settings = _settings(steps, lr, init)
    path = out / "recipe.json"
    result = json.loads(path.read_text()) if path.is_file() else {"variants": {}}
    result["init"] = {"weights": str(init), "step": weights_metadata(init).get("step")}
    images = eval_images()
    for variant in variants:
        done = result["variants"].get(variant)
        if done and done["settings"] == settings:
            continue
        start = time.monotonic()
        weights = train(variant, settings, run_root / variant, train_images(), progress)
        seconds = time.monotonic() - start
        rows = evaluate({"start": init, variant: weights}, images, ["jpeg", "webp"])
        line = {"what": VARIANTS[variant][0], "settings": settings, "train_seconds": round(seconds, 1),
                "date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine()}
        for anchor in ("start", "jpeg", "webp"):
            s = bd_summary(rows, anchor, variant, "psnr_yuv")
            line[f"vs_{anchor}"] = {"bd_rate": s["bd_rate"], "bd_psnr_db": s["bd_quality_db"], "images": s["n_images"]}
        start_vs_jpeg = bd_summary(rows, "jpeg", "start", "psnr_yuv")
        result["start_vs_jpeg"] = {"bd_rate": start_vs_jpeg["bd_rate"], "images": start_vs_jpeg["n_images"]}
        line["mean_bpp"] = sum(r["bpp"] for r in rows if r["codec"] == variant) / max(
            1, sum(r["codec"] == variant for r in rows))
        result["variants"][variant] = line
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1))
        (out / "recipe.md").write_text(markdown(result))
    return result


def markdown(result: dict) -> str:
    """results/recipe.md from the accumulated result."""
    init = result["init"]
    lines = ["# Training recipe: each change measured alone", "",
             f"Made by `python -m benchmarks recipe` (see `benchmarks/recipe.py`). Every variant fine-tunes "
             f"`{init['weights']}` (step {init['step']}) with the same seed, then codes the 14 evaluation photos "
             "through real bitstreams. BD-rate on PSNR-YUV (Akima, per picture then averaged; negative = fewer "
             "bits for the same quality). `vs start` compares with the starting weights over the same rate range "
             "(the direct measure); `vs JPEG`/`vs WebP` move with the rate range too. Run-to-run noise of such "
             "fine-tunes: about 0.8% (results/ablation.md).", "",
             "| variant | what changes | steps | lr | train s | BD-rate vs start | BD-PSNR vs start | vs JPEG | vs WebP | mean bpp |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, v in result["variants"].items():
        s = v["settings"]
        lines.append(f"| {name} | {v['what']} | {s['steps']} | {s['lr']:g} | {v['train_seconds']:.0f} | "
                     f"{v['vs_start']['bd_rate']:+.2f}% | {v['vs_start']['bd_psnr_db']:+.3f} dB | "
                     f"{v['vs_jpeg']['bd_rate']:+.2f}% | {v['vs_webp']['bd_rate']:+.2f}% | {v['mean_bpp']:.3f} |")
    if "start_vs_jpeg" in result:
        lines += ["", f"The starting weights: {result['start_vs_jpeg']['bd_rate']:+.2f}% vs JPEG on the same photos."]
    return "\n".join(lines) + "\n"
