"""Positive float64 copies of networks, the tool that measures how far a network's influence reaches.

With every weight and bias positive (and positive inputs), every activation the models use (Hardswish
above -1.5, LeakyReLU, GDN, pixel shuffles, channel shuffles) is strictly increasing, so raising one
input raises every output that structurally depends on it and leaves every other output bit-identical:
the synthesis's footprint (codec/tiling.py) and the latent networks' band halo (codec/bands.py).
"""
from __future__ import annotations

import copy


def positive_copy(module, seed: int):
    """A float64 copy of ``module`` with every parameter set to a positive value (weights scaled by
    their fan-in so that activations stay near 1 through any depth)."""
    import torch

    m = copy.deepcopy(module).double().eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            fan = p[0].numel() if p.ndim > 1 else 1
            p.copy_((torch.rand(p.shape, generator=g, dtype=torch.float64) * 0.5 + 0.5) / fan)
        for b in m.buffers():
            if b.is_floating_point():
                b.copy_(b.abs())
    return m
