"""Weight averaging ("model soup"): the mean of several fine-tunes of one weights file, written as one file.

    python -m distill.average A.safetensors B.safetensors [...] -o OUT.safetensors

Fine-tunes that start from the same weights stay in one basin of the loss, and the mean of their weights is
often better than each of them (Wortsman et al., 2022, "Model soups"). Floating-point tensors are averaged, the
entropy tables are rebuilt from the averaged entropy models, and the metadata adds the runs up: the start's
step and training time plus every run's own.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def average_weights(paths: list[str | Path], out: str | Path) -> Path:
    """Average the weights files ``paths`` (fine-tunes of one start file, one preset) into ``out``."""
    from codec.weights import load_model, save_weights, weights_metadata
    from training.checkpoints import CARRIED_META, lineage_meta

    if len(paths) < 2:
        raise ValueError("give at least two weights files to average")
    metas = [weights_metadata(p) for p in paths]
    starts = {(int(m.get("step", 0)) - int(m.get("run_step", 0)), m.get("preset")) for m in metas}
    if len(starts) != 1 or any("run_step" not in m for m in metas):
        raise ValueError("the files are not fine-tunes of one start file (their step - run_step or presets differ)")
    models = [load_model(str(p)) for p in paths]
    states = [m.state_dict() for m in models]
    mean = {k: (sum(s[k].float() for s in states) / len(states)).to(v.dtype) if v.is_floating_point() else v
            for k, v in states[0].items()}
    model = models[0]
    model.load_state_dict(mean)
    model.eval()
    model.update(force=True)
    (start_step, _), = starts
    base = {k: v for k, v in metas[0].items() if k in CARRIED_META}
    base.update(step=start_step, train_s=float(metas[0]["train_s"]) - float(metas[0]["run_train_s"]),
                history=metas[0].get("history", "").rsplit("; then ", 1)[0])
    runs = "; ".join(m.get("history", "").rsplit("; then ", 1)[-1] for m in metas)
    meta = lineage_meta(base, sum(int(m["run_step"]) for m in metas), sum(float(m["run_train_s"]) for m in metas),
                        f"the mean of {len(paths)} fine-tunes of that file (python -m distill.average): {runs}")
    return save_weights(model, out, meta=meta)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m distill.average", description=__doc__.split("\n\n")[0])
    p.add_argument("weights", nargs="+", help="weights files (.safetensors), fine-tunes of one start file")
    p.add_argument("-o", "--out", required=True, help="output .safetensors")
    a = p.parse_args(argv)
    from codec.cli_util import fail
    try:
        path = average_weights(a.weights, a.out)
    except (ValueError, OSError, KeyError) as e:
        return fail(e)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
