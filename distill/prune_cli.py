r"""Command line of the pruning stage: prune, fine-tune by distillation, save, measure RD, write results.

    python -m distill.prune --student weights/student-2k.safetensors --teacher weights/teacher.safetensors \
        --target-kmac 1.5 --rounds 3 --finetune-steps 300 -o runs/prune/student-2k-pruned.safetensors

Writes the pruned weights (safetensors + replayable plan), results/prune.json and results/prune.md: per
round the decoder/encoder kMAC per pixel (768x512) and parameters, and the BD-rate (PSNR-YUV) of the
pruned model against the unpruned student, from real bitstreams on the evaluation images.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch


def _args(argv):
    p = argparse.ArgumentParser(prog="python -m distill.prune",
                                description="Prune a student's synthesis to a decoder MAC budget, with "
                                            "distillation fine-tuning between rounds.")
    p.add_argument("--student", required=True, help="student weights (.safetensors) or a preset with shipped weights")
    p.add_argument("--teacher", default="weights/teacher.safetensors", help="teacher weights for distillation")
    p.add_argument("--target-kmac", type=float, default=1.5, help="decoder budget, kMAC per pixel at 768x512")
    p.add_argument("--rounds", type=int, default=3, help="prune + fine-tune rounds (equal MAC ratio each)")
    p.add_argument("--finetune-steps", type=int, default=300, help="distillation steps after each round (0: none)")
    p.add_argument("--lr", type=float, default=2e-4, help="fine-tuning learning rate")
    p.add_argument("--ranking", choices=("uniform", "global", "per-mac"), default="uniform",
                   help="how streams share the cut: equal fraction each (uniform), by relative weight "
                        "magnitude (global), or magnitude per MAC saved (per-mac)")
    p.add_argument("--min-keep", type=float, default=0.5, help="fewest channels a stream keeps (fraction)")
    p.add_argument("--no-kd", action="store_true", help="fine-tune with the RD loss only (no teacher)")
    p.add_argument("--data", help="training images (default data/train)")
    p.add_argument("--eval-data", help="evaluation images for RD (default data/eval)")
    p.add_argument("--rd-images", type=int, default=0, help="evaluate on the first N images only (0: all)")
    p.add_argument("--no-rd", action="store_true", help="skip the RD evaluation")
    p.add_argument("-o", "--out", help="pruned weights (default runs/prune-STUDENT/STUDENT-pruned.safetensors)")
    p.add_argument("--run-dir", help="fine-tuning logs and checkpoints (default runs/prune-STUDENT)")
    p.add_argument("--results", default="results", help="folder for prune.json and prune.md")
    p.add_argument("--threads", type=int, default=0, help="0 = the idle cores")
    p.add_argument("--quiet", action="store_true")
    return p.parse_args(argv)


def _stem(spec: str) -> str:
    return Path(spec).stem if spec.endswith(".safetensors") else spec


def make_finetune(teacher, images: list, steps: int, lr: float, run_dir: Path, threads: int, progress: bool):
    """A ``finetune(model, round) -> metrics`` running the shared Trainer with the distillation terms."""
    from training import TrainConfig, Trainer

    from .losses import Distiller, KDWeights
    from . import FINETUNE_CROPS
    from .train import PROFILES

    def finetune(model, r: int) -> dict:
        if steps <= 0:
            return {}
        cfg = TrainConfig(**{**PROFILES["quick"], **FINETUNE_CROPS, "steps": steps, "lr": lr,
                             "warmup": min(50, max(1, steps // 5))}, threads=threads, seed=r)
        kd = Distiller(teacher, model, KDWeights()) if teacher is not None else None
        trainer = Trainer(model, cfg, run_dir / f"round{r}", images, extra_loss=kd, extra_modules=kd)
        return trainer.train(progress=progress)

    return finetune


def rd_eval(anchor: tuple[str, Path], test: tuple[str, Path], images: list, progress: bool) -> dict:
    """BD-rate (PSNR-YUV) of ``test`` against ``anchor`` (name, weights) from real bitstreams."""
    from evaluation.codecs import LearnedCodec
    from evaluation.compare import compare

    run = compare(images, [LearnedCodec(name, path) for name, path in (anchor, test)], progress=progress)
    summary = {m: run.bd(anchor[0], test[0], m) for m in ("psnr_yuv", "psnr_rgb", "ms_ssim")}
    return {"images": [p.stem for p in images], "bd": summary, "points": _mean_points(run.rows)}


def _mean_points(rows: list[dict]) -> dict:
    """Mean bpp and PSNR-YUV per codec and quality."""
    acc: dict = {}
    for r in rows:
        acc.setdefault(r["codec"], {}).setdefault(r["quality"], []).append(r)
    return {c: [{"quality": q, "bpp": sum(x["bpp"] for x in rs) / len(rs),
                 "psnr_yuv": sum(x["psnr_yuv"] for x in rs) / len(rs),
                 "decode_s": sum(x["decode_s"] for x in rs) / len(rs)} for q, rs in sorted(qs.items())]
            for c, qs in acc.items()}


def write_results(result: dict, folder: Path) -> tuple[Path, Path]:
    """results/prune.json and results/prune.md."""
    folder.mkdir(parents=True, exist_ok=True)
    js, md = folder / "prune.json", folder / "prune.md"
    js.write_text(json.dumps(result, indent=1))
    md.write_text(to_markdown(result))
    return js, md


def to_markdown(res: dict) -> str:
    """The human-readable report of a pruning run."""
    a = res["args"]
    lines = [f"# Structured pruning of {res['student']} to {a['target_kmac']} decoder kMAC/px", "",
             f"`{res['command']}`", "",
             f"Synthesis widths only (latent channels kept), {a['ranking']} ranking by L2 weight magnitude, "
             f"at least {a['min_keep']:.0%} of each stream kept; {a['rounds']} rounds, {a['finetune_steps']} "
             f"fine-tuning steps each ({'RD loss only' if a['no_kd'] else 'distillation from ' + a['teacher']}); "
             f"MACs per luma pixel at 768x512, element-wise ops and pixel shuffles count 0. "
             f"Written {res['date']}.", "",
             "| round | decoder kMAC/px | synthesis kMAC/px | encoder kMAC/px | params | synthesis params "
             "| fine-tune bpp / PSNR-YUV (train crops) |",
             "|---|---|---|---|---|---|---|"]
    for h in res["rounds"]:
        ft = h.get("finetune") or {}
        ftxt = f"{ft['bpp']:.3f} / {ft['psnr_yuv']:.2f} dB" if ft else "-"
        lines.append(f"| {h['round']} | {h['decoder_kmac']:.3f} | {h['synthesis_kmac']:.3f} | "
                     f"{h['encoder_kmac']:.3f} | {h['params']:,} | {h['synthesis_params']:,} | {ftxt} |")
    lines += ["", "Stream widths (PixelShuffle outputs in the synthesis), unpruned -> pruned:", ""]
    first, last = res["rounds"][0]["widths"], res["rounds"][-1]["widths"]
    lines += [f"- `{k}`: {first[k]} -> {last.get(k, first[k])}" for k in first]
    rd = res.get("rd")
    if rd:
        b = rd["bd"]["psnr_yuv"]
        lines += ["", f"## RD against the unpruned student ({len(rd['images'])} images, real bitstreams)", ""]
        if b["n_images"]:
            lines.append(f"BD-rate (PSNR-YUV): **{b['bd_rate']:+.2f}%**, BD-PSNR-YUV {b['bd_quality_db']:+.3f} dB "
                         f"over {b['n_images']} images (PSNR-RGB {rd['bd']['psnr_rgb']['bd_rate']:+.2f}%, "
                         f"MS-SSIM {rd['bd']['ms_ssim']['bd_rate']:+.2f}%; {b['n_skipped']} images skipped: "
                         "their curves do not overlap).")
        else:
            lines.append("BD-rate (PSNR-YUV) undefined: on no image do the two RD curves overlap in PSNR-YUV.")
        lines += ["",
                  "| codec | quality | bpp | PSNR-YUV dB | decode s |", "|---|---|---|---|---|"]
        for codec, pts in rd["points"].items():
            lines += [f"| {codec} | {p['quality']} | {p['bpp']:.4f} | {p['psnr_yuv']:.2f} | {p['decode_s']:.3f} |"
                      for p in pts]
    else:
        lines += ["", "RD not measured (--no-rd)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the pruning command line; returns the exit status."""
    a = _args(argv)
    from codec.cli_util import fail
    from photos import ensure_data, eval_images, train_images
    from training import auto_threads
    from codec.weights import load_model

    from codec.weights import save_weights

    from .prune_search import prune_to_target

    torch.set_num_threads(a.threads or auto_threads())
    log = (lambda *_: None) if a.quiet else (lambda msg: print(msg, file=sys.stderr))
    try:
        if not (a.data and a.eval_data):
            ensure_data()
        name = _stem(a.student)
        from codec.paths import RUNS_DIR
        out = Path(a.out or RUNS_DIR / f"prune-{name}" / f"{name}-pruned.safetensors")
        run_dir = Path(a.run_dir or RUNS_DIR / f"prune-{name}")
        student = load_model(a.student)
        teacher = None if a.no_kd else load_model(a.teacher)
        finetune = make_finetune(teacher, train_images(a.data), a.finetune_steps, a.lr, run_dir, a.threads,
                                 not a.quiet)
        pruned, history = prune_to_target(student, a.target_kmac, a.rounds, a.min_keep, finetune, log,
                                          a.ranking)
        pruned.eval()
        pruned.update(force=True)
        save_weights(pruned, out)
        log(f"wrote {out}")
        result = {"student": a.student, "out": str(out), "command": "python -m distill.prune " + " ".join(
                      argv if argv is not None else sys.argv[1:]),
                  "date": time.strftime("%Y-%m-%d %H:%M"), "args": vars(a), "rounds": history,
                  "reached": history[-1]["decoder_kmac"] <= a.target_kmac, "plan": pruned.pruned_plan}
        if not a.no_rd:
            images = eval_images(a.eval_data)[: a.rd_images or None]
            anchor = Path(a.student) if a.student.endswith(".safetensors") else None
            if anchor is None:
                from codec.weights import shipped_weights
                anchor = shipped_weights(a.student)
            test_name = out.stem if out.stem != name else f"{name}-pruned"
            result["rd"] = rd_eval((name, anchor), (test_name, out), images, not a.quiet)
        js, md = write_results(result, Path(a.results))
        log(f"wrote {js} and {md}")
    except (ValueError, OSError, KeyError, RuntimeError) as e:
        return fail(e)
    print(json.dumps({k: result[k] for k in ("out", "reached")} | {
        "decoder_kmac": history[-1]["decoder_kmac"],
        "bd_rate_psnr_yuv": result.get("rd", {}).get("bd", {}).get("psnr_yuv", {}).get("bd_rate")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
