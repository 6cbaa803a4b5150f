"""Command line: ``python -m benchmarks rd`` runs the benchmark; ``python -m benchmarks report``
rebuilds the tables and plots from results/rd.json."""
from __future__ import annotations

import argparse
import datetime
import shlex
import sys
import time
from pathlib import Path

from codec.cli_util import run_command
from codec.images import ImageError
from codec.paths import RUNS_DIR
from photos import eval_images

from evaluation.codecs import CodecError


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage block
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


def _weights(pairs: list[str]) -> dict[str, str]:
    from codec.cli_util import parse_pairs
    return dict(parse_pairs(pairs, "--weights and --int8"))


def _rdoq(pairs: list[str]) -> dict[str, tuple[str, float]]:
    """--rdoq NAME=MODEL@MU pairs -> {NAME: (MODEL, MU)}; a bad MU is a ValueError."""
    from codec.rdoq import parse_mu
    out = {}
    for name, spec in _weights(pairs).items():
        model, _, mu = spec.rpartition("@")
        try:
            if not model:
                raise ValueError("no model")
            out[name] = (model, parse_mu(mu))
        except ValueError:
            raise ValueError(f"--rdoq {name}={spec}: expected MODEL@MU with MU from 0 to 1") from None
    return out


def cmd_rd(args) -> None:
    """Run the benchmark and write every results file."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread for every decoder, as the CLI tools run
    try:
        _run_and_write(args)
    finally:
        torch.set_num_threads(threads)


def _run_and_write(args) -> None:
    """Select the codecs, run them on the images, print what was skipped, write results/."""
    from evaluation.rd import run_rd
    from benchmarks.selection import select_codecs
    from evaluation.machine import machine
    from benchmarks.report import write_results

    if args.images is not None and args.images < 1:
        raise ValueError("--images must be at least 1")
    images = eval_images(args.data)[: args.images]
    names = [n.strip() for n in args.codecs.split(",") if n.strip()] if args.codecs else None
    codecs, skipped = select_codecs(names, _weights(args.weights), _weights(args.int8), onnx=not args.no_onnx,
                                    rdoq=_rdoq(args.rdoq))
    for name, why in skipped.items():
        print(f"skipped {name}: {why}", file=sys.stderr)
    print(f"running {', '.join(c.name for c in codecs)} on {len(images)} images", file=sys.stderr)
    start = time.monotonic()
    rows, failed = run_rd(images, codecs, progress=not args.quiet)
    for name, why in failed.items():
        print(f"skipped {name}: {why}", file=sys.stderr)
    skipped.update(failed)
    argv = args.argv if args.argv is not None else sys.argv[1:]
    meta = {"command": "python -m benchmarks " + shlex.join(argv),
            "date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": machine(),
            "seconds": round(time.monotonic() - start, 1), "skipped": skipped,
            "codecs": {c.name: {"kind": c.kind, "chroma": c.chroma, "settings": c.settings,
                                "decoder": getattr(c, "decoder", ""),
                                "version": c.version(), "qualities": list(c.qualities),
                                "kmac_px": c.decoder_kmac() if c.kind == "learned" else None}
                       for c in codecs if c.name not in failed}}
    for path in write_results({"meta": meta, "rows": rows}, args.out):
        print(f"wrote {path}")
    print(f"took {meta['seconds']:.0f} s", file=sys.stderr)


def cmd_report(args) -> None:
    """Rebuild bd.csv, rd.md and the plots from rd.json."""
    from benchmarks.report import load_result, write_results
    result = load_result(args.out)
    if args.anchor:
        result["meta"]["extra_anchors"] = list(args.anchor)
    for path in write_results(result, args.out):
        print(f"wrote {path}")


def cmd_train_speed(args) -> None:
    """Measure training throughput and write results/train_speed.{md,json}."""
    from codec.registry import list_models
    from training import auto_threads

    from .train_speed import run
    models = [m.strip() for m in args.models.split(",")] if args.models else list_models()
    run(models, args.steps, args.batch, args.crop, Path(args.out), args.threads or auto_threads(), args.compile)
    print((Path(args.out) / "train_speed.md").read_text())


def cmd_ablation(args) -> None:
    """Train and measure the seed papers' modules; write results/ablation.{md,json}."""
    from .ablation import run
    modules = [m.strip() for m in args.modules.split(",") if m.strip()] if args.modules else None
    run(args.base, modules, args.steps, args.images, args.init, args.out, args.data, threads=args.threads,
        progress=not args.quiet)
    print((Path(args.out) / "ablation.md").read_text())


def cmd_effort(args) -> None:
    """Measure the encoder effort levels; write results/effort.{json,md,png}."""
    from .effort import run
    levels = [lv.strip() for lv in args.levels.split(",") if lv.strip()]
    bad = [lv for lv in levels if lv not in ("slow", "max")]
    if bad or not levels:
        raise ValueError(f"--levels takes slow and/or max, not {args.levels!r}")
    qualities = [int(q) for q in args.qualities.split(",")] if args.qualities else None
    images = eval_images(args.data)[: args.images]
    argv = args.argv if args.argv is not None else sys.argv[1:]
    run([m.strip() for m in args.models.split(",")], levels, images, qualities, Path(args.out),
        "python -m benchmarks " + shlex.join(argv), progress=not args.quiet)
    print((Path(args.out) / "effort.md").read_text())


def cmd_recipe(args) -> None:
    """Fine-tune and measure the training recipe's variants; write results/recipe.{json,md}."""
    from .recipe import VARIANTS, run
    variants = [v.strip() for v in args.variants.split(",") if v.strip()] if args.variants else list(VARIANTS)
    run(variants, args.steps, args.lr, args.init, Path(args.out), Path(args.run_root), progress=not args.quiet)
    print((Path(args.out) / "recipe.md").read_text())


def cmd_rate_check(args) -> None:
    """Training rate term against the real files' bits; write results/rate_check.{json,md}."""
    import torch

    from .rate_check import measure, write
    torch.set_num_threads(1)
    argv = args.argv if args.argv is not None else sys.argv[1:]
    rows = measure(args.model, eval_images(args.data)[: args.images])
    for path in write(args.model, rows, Path(args.out), "python -m benchmarks " + shlex.join(argv)):
        print(f"wrote {path}")


def cmd_speed(args) -> None:
    """Decode speed and memory against the classical decoders; write results/speed.{md,json}."""
    from .speed import main_args
    main_args(args)


def cmd_ceiling(args) -> None:
    """The decoder's quality ceiling per photo; write results/ceiling/ceiling.{md,json,png}."""
    from .ceiling import main_args
    main_args(args)


def cmd_errors(args) -> None:
    """Where each model's error goes (planes, flat vs textured, frequencies); write results/errors/."""
    from .errors import main_args
    main_args(args)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark command line; return the exit status."""
    parser = _Parser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    rd = sub.add_parser("rd", help="run the RD benchmark and write results/")
    rd.add_argument("--data", default=None, help="image folder (default: data/eval)")
    rd.add_argument("--codecs", default=None,
                    help="comma-separated codec names (default: all; the anchors jpeg and hevc are "
                         "always added): jpeg, cjpeg, webp, jpeg2000, avif, jxl, hevc, model presets")
    rd.add_argument("--images", type=int, default=None, help="use only the first N images")
    rd.add_argument("--weights", action="append", default=[], metavar="NAME=PATH",
                    help="also benchmark a model from a .safetensors file (repeatable)")
    rd.add_argument("--int8", action="append", default=[], metavar="NAME=MODEL",
                    help="also a model (preset or .safetensors) decoded by its ONNX INT8 export (repeatable)")
    rd.add_argument("--rdoq", action="append", default=[], metavar="NAME=MODEL@MU",
                    help="also a model (preset or .safetensors) whose fast encoder rounds with RD rounding mu MU "
                         "(0: nearest integer, the encoder before codec/rdoq.py; repeatable)")
    rd.add_argument("--no-onnx", action="store_true", help="do not time the ONNX FP32 decoder of our models")
    rd.add_argument("--out", default="results", help="results folder (default: results)")
    rd.add_argument("--quiet", action="store_true", help="no progress bar")
    ts = sub.add_parser("train-speed", help="training steps/s per model: fp32 vs bf16 vs channels_last")
    ts.add_argument("--models", default=None, help="comma-separated presets (default: all)")
    ts.add_argument("--steps", type=int, default=8)
    ts.add_argument("--batch", type=int, default=8)
    ts.add_argument("--crop", type=int, default=128)
    ts.add_argument("--threads", type=int, default=0, help="0 = the idle cores")
    ts.add_argument("--compile", action="store_true", help="also time torch.compile (minutes of compilation)")
    ts.add_argument("--out", default="results")
    rep = sub.add_parser("report", help="rebuild tables and plots from results/rd.json")
    rep.add_argument("--out", default="results", help="results folder (default: results)")
    rep.add_argument("--anchor", action="append", default=[], metavar="CODEC",
                     help="also compare every codec against this one (repeatable), e.g. a model's previous weights")
    ab = sub.add_parser("ablation", help="train and measure the seed papers' modules (results/ablation.md)")
    ab.add_argument("--base", default="student-2k", help="preset the modules are added to (default: student-2k)")
    ab.add_argument("--modules", default=None, help="comma-separated options (default: all; see codec.modules)")
    ab.add_argument("--steps", type=int, default=400, help="fine-tuning steps of every variant (default: 400)")
    ab.add_argument("--images", type=int, default=None, help="use only the first N evaluation images")
    ab.add_argument("--init", default="auto", help="starting weights (default: the base's shipped weights; none: fresh)")
    ab.add_argument("--data", default=None, help="evaluation image folder (default: data/eval)")
    ab.add_argument("--threads", type=int, default=1, help="torch threads for training (default: 1)")
    ab.add_argument("--out", default="results", help="results folder (default: results)")
    ab.add_argument("--quiet", action="store_true", help="no progress bars")
    ef = sub.add_parser("effort", help="encoder effort levels: BD-rate vs the fast encoder, encode time")
    ef.add_argument("--models", default="student-2k", help="comma-separated models (default: student-2k)")
    ef.add_argument("--levels", default="slow,max", help="effort levels to measure (default: slow,max)")
    ef.add_argument("--images", type=int, default=None, help="use only the first N evaluation images")
    ef.add_argument("--qualities", default=None, help="comma-separated rate points (default: all)")
    ef.add_argument("--data", default=None, help="evaluation image folder (default: data/eval)")
    ef.add_argument("--out", default="results", help="results folder (default: results)")
    ef.add_argument("--quiet", action="store_true", help="no progress bar")
    rc = sub.add_parser("recipe", help="the training recipe's changes, one at a time (results/recipe.md)")
    rc.add_argument("--variants", default=None, help="comma-separated variants (default: all; see benchmarks.recipe)")
    rc.add_argument("--steps", type=int, default=2000, help="fine-tuning steps of every variant (default: 2000)")
    rc.add_argument("--lr", type=float, default=2e-4, help="peak learning rate, cosine decay (default: 2e-4)")
    rc.add_argument("--init", default="weights/student-2k.safetensors", help="starting weights")
    rc.add_argument("--run-root", default=str(RUNS_DIR / "recipe"), help="training runs (default: runs/recipe)")
    rc.add_argument("--out", default="results", help="results folder (default: results)")
    rc.add_argument("--quiet", action="store_true", help="no progress bars")
    rk = sub.add_parser("rate-check", help="training rate term vs the real files' bits (results/rate_check.md)")
    rk.add_argument("--model", default="student-2k", help="model (default: student-2k)")
    rk.add_argument("--images", type=int, default=None, help="use only the first N evaluation images")
    rk.add_argument("--data", default=None, help="evaluation image folder (default: data/eval)")
    rk.add_argument("--out", default="results", help="results folder (default: results)")
    from .speed import add_parser as add_speed_parser
    add_speed_parser(sub)
    from .ceiling import add_parser as add_ceiling_parser
    add_ceiling_parser(sub)
    from .errors import add_parser as add_errors_parser
    add_errors_parser(sub)
    args = parser.parse_args(argv)
    args.argv = argv
    commands = {"rd": cmd_rd, "report": cmd_report, "train-speed": cmd_train_speed, "ablation": cmd_ablation,
                "effort": cmd_effort, "recipe": cmd_recipe, "rate-check": cmd_rate_check, "speed": cmd_speed,
                "ceiling": cmd_ceiling, "errors": cmd_errors}
    return run_command(lambda: commands[args.command](args), (ImageError, ValueError, RuntimeError, CodecError, OSError))


if __name__ == "__main__":
    sys.exit(main())
