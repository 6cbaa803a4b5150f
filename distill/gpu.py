"""A GPU burst: a student trained on a lent GPU, on the RD loss alone or distilled from a teacher trained there.

    python -m distill.gpu pack [--out gpu/crops.npz]        here: detail-weighted training tiles (<= 18 MiB)
    python3 -m distill.gpu run --out DIR [--minutes 8]      there, under the GPU machine's own python3
    python3 -m distill.gpu run --out DIR --minutes 0 --no-kd --student student-2k-gmm --crop 512 --batch 16
                                                            the student alone, RD loss (`make gpu`'s default)
    python -m distill.gpu run --out DIR --dry               here: the same path on the CPU in a minute or two
    python -m distill.gpu unpack DIR [--into weights]       here: the returned files -> weights/*.safetensors
    python -m distill.gpu check DIR                         the return limits (8 files, 16 MiB each, 64 in all)

``run`` installs the carried wheels first (distill.gpu_env), so nothing but the standard library and torch is
imported before it. The teacher (unless --minutes 0) goes on from weights/teacher.safetensors and the step
it records (bf16 autocast, channels_last, batches of random crops of the packed tiles drawn on the GPU),
writes its weights to DIR every 2 minutes and at the end as float16 parts of at most 15 MiB; then the
student goes on from its shipped weights (their step and rate points) in the time left, distilled from that
teacher or (--no-kd) on the RD loss alone, its weights written the same way. ``unpack`` merges the parts,
rebuilds the entropy tables here and records the step and the GPU-seconds in the weights' metadata.
docs/gpu.md says how to run it in a lent window. This module is the command line; distill.gpu_pack holds
the packed tiles, distill.gpu_burst the burst and distill.gpu_parts the returned weights parts.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

STARTED = time.monotonic()  # the command's budget counts from here (before torch is imported)

from . import gpu_env  # noqa: E402
from .gpu_burst import RUN_DIR, BurstOptions, run_burst  # noqa: E402  (imports torch)
from .gpu_pack import PACK, PACK_MIB, PACK_QUALITY, TILE, make_pack  # noqa: E402
from .gpu_parts import unpack  # noqa: E402

WHEELS = Path("gpu/wheels")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m distill.gpu", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    k = sub.add_parser("pack", help="pack detail-weighted training tiles for the GPU machine")
    k.add_argument("--data", help="training images (default data/train)")
    k.add_argument("--out", default=str(PACK))
    k.add_argument("--tile", type=int, default=TILE, help="tile side (crops of up to this side are drawn from it)")
    k.add_argument("--max-mib", type=float, default=PACK_MIB, help="size limit of the pack")
    k.add_argument("--detail", type=float, default=1.0, help="detail weighting (as CropDataset's)")
    k.add_argument("--scales", default="1,0.75,0.5", help="downscalings, equal shares (as CropDataset's)")
    k.add_argument("--max-tiles", type=int)
    k.add_argument("--quality", type=int, default=PACK_QUALITY,
                   help="JPEG quality of the tiles (4:4:4), 0 = lossless (about 2.2x fewer pixels in the same MiB)")
    k.add_argument("--seed", type=int, default=0)
    r = sub.add_parser("run", help="the burst (on the GPU machine), or its CPU rehearsal (--dry)")
    r.add_argument("--out", default=os.environ.get("OUT"), help="returned files (default $OUT)")
    r.add_argument("--minutes", type=float,
                   help="teacher training minutes (default 8; dry 2, or 4 steps; 0: no teacher, needs --no-kd)")
    r.add_argument("--budget", type=float, help="minutes for the whole command (default 9.5; dry 6)")
    r.add_argument("--pack", default=str(PACK))
    r.add_argument("--wheels", default=str(WHEELS), help="carried wheels to install where missing")
    r.add_argument("--site", default=str(RUN_DIR / "site"), help="where the wheels are installed")
    r.add_argument("--run-dir", help="checkpoints and logs (default runs/gpu; dry runs/gpu-dry)")
    r.add_argument("--weights-dir", default="weights", help="the weights to go on from")
    r.add_argument("--student", default="student-2k", help="student to train afterwards ('none': no student)")
    r.add_argument("--no-kd", action="store_true", help="the student on the RD loss alone (no teacher needed)")
    r.add_argument("--batch", type=int, help="global batch (default 32; dry 2)")
    r.add_argument("--crop", type=int, help="crop side (default 256; dry 64)")
    r.add_argument("--lr", type=float, help="learning rate (default: the full profiles')")
    r.add_argument("--snapshot-minutes", type=float, help="weights to OUT this often (default 2)")
    r.add_argument("--no-bf16", action="store_true")
    r.add_argument("--no-channels-last", action="store_true")
    r.add_argument("--dry", action="store_true", help="rehearse on the CPU: a few small steps, same path")
    u = sub.add_parser("unpack", help="returned files -> weights/*.safetensors")
    u.add_argument("src")
    u.add_argument("--into", default="weights")
    u.add_argument("--verify", action="store_true", help="encode and decode a picture with each (codec CLI)")
    c = sub.add_parser("check", help="check a folder against the return limits")
    c.add_argument("src")
    a = p.parse_args(argv)
    if a.cmd == "run":
        return _cmd_run(a)
    from codec.cli_util import fail
    try:
        if a.cmd == "pack":
            from photos import train_images
            scales = tuple(float(s) for s in a.scales.split(","))
            info = make_pack(train_images(a.data), a.out, a.tile, a.max_mib, a.detail, scales, a.seed, a.max_tiles,
                             a.quality)
            print(json.dumps(info))
        elif a.cmd == "unpack":
            for row in unpack(a.src, a.into, a.verify):
                print(json.dumps(row))
        else:
            problems = gpu_env.check_return(a.src)
            if problems:
                return fail("; ".join(problems))
            print(f"{a.src}: within the return limits")
    except (ValueError, OSError, KeyError) as e:
        return fail(e)
    return 0


def _cmd_run(a) -> int:
    """``run``: make this Python fit (wheels, stand-ins) before anything of the codec is imported."""
    from codec.cli_util import fail  # the standard library only

    if not a.out:
        return fail("--out DIR is needed (or $OUT set)")
    try:
        env = gpu_env.prepare(a.wheels, a.site)
    except gpu_env.EnvError as e:
        return fail(e)
    # The lent machine runs from a copy of the tree, not an installed package: no entry points, so
    # the model packages register by being imported.
    import student.presets  # noqa: F401
    import teacher.presets  # noqa: F401
    given = {k: v for k, v in dict(minutes=a.minutes, budget_minutes=a.budget, batch=a.batch, crop=a.crop,
                                     lr=a.lr, snapshot_minutes=a.snapshot_minutes).items() if v is not None}
    given.update(pack=Path(a.pack), weights_dir=Path(a.weights_dir), env=env,
                 student=None if a.student == "none" else a.student, kd=not a.no_kd, bf16=not a.no_bf16,
                 channels_last=not a.no_channels_last, **({"run_dir": Path(a.run_dir)} if a.run_dir else {}))
    given["started"] = STARTED
    o = BurstOptions.rehearsal(Path(a.out), **given) if a.dry else BurstOptions(out=Path(a.out), **given)
    try:
        summary = run_burst(o)
    except ImportError as e:
        return fail(f"cannot import {e.name or e}: {e} (carry its wheel: make gpu-wheels GPU_WHEEL_EXTRA=...)")
    except (ValueError, OSError, KeyError, RuntimeError) as e:
        return fail(e)
    if int(os.environ.get("RANK", 0)) == 0:
        print(json.dumps({k: summary[k] for k in ("device", "wall_s", "phases", "return_check")}, default=str))
    return 0 if summary["return_check"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
