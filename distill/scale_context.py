"""Fit the ``ctxscale`` table of a trained model (codec/scale_context.py says what it is and why).

Every weight stays fixed: the latents, means, residuals and skip decisions of the model do not change,
only the probability table each non-anchor residual is coded with. For each branch (Y, UV), each cell
(hyper-latent index, S bucket, T bucket) gets the move in [-MAX_DELTA, MAX_DELTA] that minimises the exact
bits the rANS tables spend on the training crops' residuals (all rate points); T's bucket edges are the
octiles of T there. The report gives those bits before and after, on the training crops and on the
evaluation photos, which the fit never sees; the BD-rate from real files comes from `benchmarks rd`.

    python -m distill.scale_context --weights weights/student-2k-wide256.safetensors \
        --out weights/student-2k-wide256+ctxscale.safetensors --report results/scale_context.md
"""
from __future__ import annotations

import argparse
import datetime
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from codec import create_model
from codec.api import pad_planes
from codec.cli_util import run_command
from codec.color import rgb_to_yuv420, to_tensor
from codec.images import ImageError, load_rgb
from codec.rate import SymbolCost
from codec.rdoq import RDOQ_MU
from codec.scale_context import (MAX_DELTA, S_EDGES, T_BUCKETS, anchor_mask, context_features, s_buckets,
                                 t_buckets, table_keys)
from codec.weights import WeightsError, load_model, load_weights, save_weights, weights_metadata
from photos import eval_images, train_images
from training import CropDataset

DELTAS = np.arange(-MAX_DELTA, MAX_DELTA + 1)
BRANCHES = ("Y", "UV")


def residual_states(model, planes, progress: bool = True) -> list[dict]:
    """Integer state (residual, index, skip; int32 / uint8 / bool numpy, C x h x w) of every picture at
    every rate point, as the model's fast encoder codes it (RD rounding; the hyper-latent's index while its
    table is the identity)."""
    states = []
    for y, uv in tqdm(planes, desc="residuals", disable=not progress):
        for q in range(model.num_qualities):
            st = model.encode_latents(y, uv, q)
            states.append({"residual": st["residual"][0].numpy().astype(np.int32),
                           "index": st["index"][0].numpy().astype(np.uint8), "skip": st["skip"][0].numpy()})
    return states


def _branch_rows(st: dict, y_channels: int):
    """Per branch: (hyper-latent index, S, T) of the coded non-anchor elements, and their residuals."""
    anchor = anchor_mask(*st["index"].shape[-2:])
    coded = ~st["skip"]
    residual = np.where(coded, st["residual"], 0)
    rows, c0 = [], 0
    for s, t in context_features(residual, anchor, y_channels):
        c1 = c0 + s.shape[0]
        sel = coded[c0:c1] & ~anchor
        rows.append((st["index"][c0:c1][sel], s[sel], np.broadcast_to(t, s.shape)[sel], residual[c0:c1][sel]))
        c0 = c1
    return rows


def _delta_bits(cost: SymbolCost, index: np.ndarray, residual: np.ndarray, levels: int) -> np.ndarray:
    """N x len(DELTAS): exact bits of each residual coded with its index moved by each delta."""
    r, idx = torch.from_numpy(residual.astype(np.int64)), torch.from_numpy(index.astype(np.int64))
    return torch.stack([cost(r, (idx + int(d)).clamp(0, levels - 1)) for d in DELTAS], 1).double().numpy()


def fit_table(model, states: list[dict], progress: bool = True):
    """(lut, t_edges) minimising the exact bits of the coded non-anchor residuals of ``states``."""
    cost, levels = SymbolCost(model.gaussian_conditional), model.scale_context.lut.shape[1]
    y = model.cfg.y_channels
    t_all = [[], []]
    for st in states:
        for b, (_, _, t, _) in enumerate(_branch_rows(st, y)):
            t_all[b].append(t[:: max(1, len(t) // 20000)])
    t_edges = np.zeros((2, T_BUCKETS), np.int64)
    for b in range(2):
        t_edges[b] = np.quantile(np.concatenate(t_all[b]), np.linspace(0, 1, T_BUCKETS + 1)[:-1]).astype(np.int64)
    cells = levels * len(S_EDGES) * T_BUCKETS
    total = np.zeros((2, cells, len(DELTAS)))
    for st in tqdm(states, desc="fit", disable=not progress):
        for b, (idx, s, t, r) in enumerate(_branch_rows(st, y)):
            keys = table_keys(idx, s_buckets(s), t_buckets(t, t_edges[b]))
            bits = _delta_bits(cost, idx, r, levels)
            for j in range(len(DELTAS)):
                total[b, :, j] += np.bincount(keys, weights=bits[:, j], minlength=cells)
    lut = DELTAS[total.argmin(2)].astype(np.int8)
    lut[total.sum(2) == 0] = 0   # cells the crops never reached keep the hyper-latent's index
    return lut.reshape(2, levels, len(S_EDGES), T_BUCKETS), t_edges


def table_bits(model, states: list[dict], lut, t_edges) -> dict[str, tuple[float, float, float]]:
    """Per branch: (all coded bits, non-anchor bits before, non-anchor bits with the table) of ``states``."""
    cost, levels = SymbolCost(model.gaussian_conditional), lut.shape[1]
    out = {b: [0.0, 0.0, 0.0] for b in BRANCHES}
    for st in states:
        coded = ~st["skip"]
        y = model.cfg.y_channels
        for b, (idx, s, t, r) in enumerate(_branch_rows(st, y)):
            sl = slice(0, y) if b == 0 else slice(y, None)
            all_bits = cost(torch.from_numpy(st["residual"][sl][coded[sl]].astype(np.int64)),
                            torch.from_numpy(st["index"][sl][coded[sl]].astype(np.int64))).sum().item()
            key = table_keys(idx, s_buckets(s), t_buckets(t, t_edges[b]))
            moved = np.clip(idx.astype(np.int64) + lut[b].reshape(-1)[key], 0, levels - 1)
            before = cost(torch.from_numpy(r.astype(np.int64)), torch.from_numpy(idx.astype(np.int64))).sum().item()
            after = cost(torch.from_numpy(r.astype(np.int64)), torch.from_numpy(moved)).sum().item()
            for k, v in enumerate((all_bits, before, after)):
                out[BRANCHES[b]][k] += v
    return {k: tuple(v) for k, v in out.items()}


def _report(path: Path, command: str, weights: str, n_train: int, crop: int, results: dict) -> None:
    lines = ["# Context-adaptive scale index (option ctxscale): the fitted table's bits", "",
             f"Made by `{command}` ({datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC). "
             f"Weights fixed ({weights}); table fitted on {n_train} training crops of {crop}x{crop} at every "
             "rate point; bits are the exact costs in the rANS tables of the coded residuals (the streams "
             f"add a few bytes of flush). The residuals are the fast encoder's (RD rounding, mu {RDOQ_MU}, "
             "codec/rdoq.py) with the identity table; skip decisions, residuals and pictures are held fixed, "
             "so these are savings at equal distortion. With the table the encoder re-decides its RD rounding "
             "of the non-anchors under their moved index, so real files differ a little: the BD-rate from "
             "real files comes from `benchmarks rd`.", "",
             "| pictures | branch | all residual bits | non-anchor bits | with the table | non-anchors | branch |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for name, per_branch in results.items():
        for b, (total, before, after) in per_branch.items():
            lines.append(f"| {name} | {b} | {total:,.0f} | {before:,.0f} | {after:,.0f} | "
                         f"{100 * (after / before - 1):+.1f}% | {100 * (after - before) / total:+.2f}% |")
        tot = sum(v[0] for v in per_branch.values())
        gain = sum(v[2] - v[1] for v in per_branch.values())
        lines.append(f"| {name} | both | {tot:,.0f} | | | | **{100 * gain / tot:+.2f}%** |")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def run(weights: str, out: str, crops: int, crop: int, report: str | None, command: str) -> None:
    torch.set_num_threads(1)
    base = load_model(weights)
    name = base.name if "ctxscale" in base.options else f"{base.name}+ctxscale"
    model = create_model(name).set_rate_points(base.num_qualities)
    load_weights(model, weights, partial=True)
    model.eval()
    data = CropDataset(train_images(), crop, crops, seed=0, detail=1.0, small="skip")
    train = residual_states(model, [rgb_to_yuv420(data[i][None]) for i in range(crops)])
    # collected while the table is still the identity: the states hold the hyper-latent's index
    evaluation = residual_states(model, [pad_planes(to_tensor(load_rgb(p)), model.cfg.multiple)
                                         for p in eval_images()]) if report else None
    start = time.time()
    lut, t_edges = fit_table(model, train)
    model.scale_context.set_table(lut, t_edges)
    meta = weights_metadata(weights)
    note = (f" + ctxscale table fitted ({crops} crops of {crop}, residuals of the RD-rounding encoder, mu {RDOQ_MU},"
            f" {time.time() - start:.0f} s)")
    save_weights(model, out, meta={k: v for k, v in meta.items() if k != "preset"}
                 | {"history": meta.get("history", "") + note})
    print(f"{out}: {name}, table fitted on {crops} crops")
    if report:
        results = {"training crops": table_bits(model, train, lut, t_edges),
                   "evaluation photos": table_bits(model, evaluation, lut, t_edges)}
        _report(Path(report), command, weights, crops, crop, results)
        print(Path(report).read_text())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m distill.scale_context", description=__doc__.split("\n")[0])
    ap.add_argument("--weights", required=True, help="trained weights (.safetensors)")
    ap.add_argument("--out", required=True, help="weights with the fitted table (model name + ctxscale)")
    ap.add_argument("--crops", type=int, default=100, help="training crops to fit on")
    ap.add_argument("--crop", type=int, default=384, help="crop side, a multiple of 64")
    ap.add_argument("--report", help="write the bits table here (markdown)")
    args = ap.parse_args(argv)
    if args.crops < 1 or args.crop < 64 or args.crop % 64:
        ap.error("--crops must be >= 1 and --crop a multiple of 64")
    command = "python -m distill.scale_context " + shlex.join(sys.argv[1:] if argv is None else argv)
    return run_command(lambda: run(args.weights, args.out, args.crops, args.crop, args.report, command),
                       (WeightsError, ImageError, ValueError, OSError))


if __name__ == "__main__":
    raise SystemExit(main())
