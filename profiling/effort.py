"""What an encoder effort level costs (codec.refine): MACs per pixel of the refinement, next to the budget.

One refinement iteration is a forward pass of the coder's decoder side (``YUVCodec.coded_pass``: hyper
decoders, integer scale decoder in its training form, context, fusion, synthesis) plus the colour
conversion, and a backward pass to the latents only (weights are frozen, so no weight gradients). It is
counted by running one real iteration at the report's picture size under torch's FlopCounterMode, forward
and backward together; masked convolutions are counted dense here (an upper bound: the forward-only
reports count their unmasked taps). A level's encoder cost is the amortized encoder's plus its iteration
cap times one iteration, plus the extra exact evaluations of the noise phase (forward only).
"""
from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from codec.api import pad_planes
from codec.refine import EFFORTS, rd_cost


def iteration_macs(model, height: int, width: int) -> tuple[float, float]:
    """(MACs of one refinement iteration, forward + backward; MACs of its forward alone) for an
    HxW picture, measured on random content (the count does not depend on it)."""
    rgb = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0))
    y, uv = pad_planes(rgb, model.cfg.multiple)
    q = torch.tensor([model.num_qualities // 2])
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            latent = model._analyse(y, uv)
            z = model.hyper_analysis(latent)
        latent.requires_grad_(True)
        z.requires_grad_(True)
        counts = []
        for backward in (True, False):
            fc = FlopCounterMode(display=False)
            with fc, torch.set_grad_enabled(backward):
                cost = rd_cost(model, model.coded_pass(latent, z, q, noisy=False), y, uv, int(q), (height, width))[0]
                if backward:
                    cost.backward()
            counts.append(fc.get_total_flops() / 2)
    finally:
        model.train(was_training)
    return counts[0], counts[1]


def effort_rows(model, report) -> list[dict]:
    """One row per effort level: iterations, kMAC/px per iteration and in all, ratio to the teacher's
    encoder (``report``: the model's profiler Report, for its fast encoder and the teacher's)."""
    pixels = report.height * report.width
    frozen = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in frozen:
        p.requires_grad_(False)
    try:
        step, forward = iteration_macs(model, report.height, report.width)
    finally:
        for p, flag in frozen:
            p.requires_grad_(flag)
    fast = report.total("encoder")
    teacher = (report.teacher_kmac or {}).get("encoder")
    rows = []
    for name, effort in EFFORTS.items():
        if effort is None:
            total, iters, per_it = fast, 0, 0.0
        else:
            iters = effort.iterations
            exact = round(effort.noise_fraction * iters) // effort.exact_every + 2
            per_it = step / pixels / 1000
            total = fast + iters * per_it + exact * forward / pixels / 1000
        rows.append({"level": name, "iterations": iters, "kmac_per_iteration": per_it, "encoder_kmac": total,
                     "ratio_vs_teacher": teacher / total if teacher else None})
    return rows
