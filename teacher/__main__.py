"""Teacher command line: ``python -m teacher train --profile quick|full`` (a thin layer over
``training.teacher.train_teacher``)."""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    from codec.cli_util import fail
    from codec.paths import RUNS_DIR
    from training.cli import add_run_flags, overrides, training_images
    from training.teacher import PROFILES, train_teacher

    p = argparse.ArgumentParser(prog="python -m teacher", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train the teacher with the rate-distortion loss on YUV 4:2:0")
    add_run_flags(t, PROFILES, "checkpoints and logs (default runs/teacher-PROFILE)",
                  "weights to write (default: runs/.../teacher.safetensors; the full profile writes "
                  "weights/teacher.safetensors)")
    x = sub.add_parser("export", help="write weights from a run's latest checkpoint (e.g. while it trains)")
    x.add_argument("--run-dir", default=str(RUNS_DIR / "teacher-full"))
    x.add_argument("--out", default="weights/teacher.safetensors")
    a = p.parse_args(argv)
    try:
        if a.cmd == "export":
            from training import export_checkpoint
            print(f"teacher at step {export_checkpoint('teacher', a.run_dir, a.out)} -> {a.out}")
            return 0
        r = train_teacher(training_images(a.data), a.profile, a.run_dir, a.out, a.steps, a.init, a.fresh,
                          progress=not a.quiet, threads=a.threads, **overrides(a))
    except (ValueError, OSError) as e:
        return fail(e)
    if r["weights"] is None:
        print(f"stopped at step {r['step']}; checkpoint saved in {r['run_dir']} (run again to resume)")
    else:
        print(f"teacher trained to step {r['step']}: {r['metrics']}; weights -> {r['weights']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
