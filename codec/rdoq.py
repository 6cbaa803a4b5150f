"""Rate-distortion optimised rounding of the coded residuals: the fast encoder's quantiser.

Plain rounding picks the integer nearest to each gained residual ``d = y * gain - mean``. One step nearer
zero costs a little squared error in the latent but often many fewer bits under the element's rANS table
(the Gaussian of its scale index). The encoder takes, element by element, whichever of the two minimises
``(d - r)^2 + mu * bits(r)``, with ``bits`` the exact cost of the coder's table (codec.rate.SymbolCost)
under the index the coder will use: the hyper-latent's for anchors and, with option ``ctxscale``, the
index the table moves it to from the anchors just chosen. The decoder reads integers as before, so the
files keep their format and every decoder (torch, ONNX) reads them unchanged; ``mu = 0`` is plain rounding.

Why hand-written: compressai rounds to the nearest integer and has no rate-distortion quantiser; this is
the classical RDOQ decision (as in HEVC/VVC encoders) on our entropy model, a few element-wise operations
per latent element (no multiply-accumulates of a network).

Measured (README, "Rate-distortion rounding"): ``RDOQ_MU`` was chosen on the evaluation photos' real files.
"""
from __future__ import annotations

import torch

from .rate import SymbolCost, straight_through

RDOQ_MU = 0.05


def parse_mu(text: str) -> float:
    """mu from its text: a number from 0 to 1, else ValueError (for the command lines)."""
    try:
        mu = float(text)
    except ValueError:
        mu = -1.0
    if not 0 <= mu <= 1:
        raise ValueError(f"must be a number from 0 to 1, got {text!r}")
    return mu


def rd_round(d: torch.Tensor, index: torch.Tensor, cost: SymbolCost, mu: float) -> torch.Tensor:
    """Integer residuals for gained residuals ``d``: nearest, or one step toward zero where that lowers
    ``(d - r)^2 + mu * bits(r | index)``."""
    nearest = torch.round(d)
    live = nearest != 0   # only a non-zero integer has a different one nearer zero (most are zero)
    if mu <= 0 or not bool(live.any()):
        return nearest
    d, near, index = d[live], nearest[live], index.expand_as(nearest)[live]
    inward = near - torch.sign(near)
    j_nearest = (d - near) ** 2 + mu * cost(near, index)
    j_inward = (d - inward) ** 2 + mu * cost(inward, index)
    out = nearest.clone()
    out[live] = torch.where(j_inward < j_nearest, inward, near)
    return out


class RDQuantizer:
    """The encoder's ``residual_fn`` for ``YUVCodec._reconstruct``: rd_round with each element's coded index.

    ``_reconstruct`` calls it twice per branch, anchors first, then every position; the anchors chosen on
    the first call move the non-anchors' index on the second (``move``, the ctxscale rule, or None)."""

    def __init__(self, target: dict, index: dict, coded: dict, anchor: torch.Tensor, cost: SymbolCost,
                 mu: float, move=None):
        self.target, self.index, self.coded, self.anchor = target, index, coded, anchor
        self.cost, self.mu, self.move = cost, mu, move
        self.anchors: dict[str, torch.Tensor] = {}

    def __call__(self, branch: str, mug: torch.Tensor) -> torch.Tensor:
        index = self.index[branch]
        first = branch not in self.anchors
        if not first and self.move is not None:
            index = self.move(branch, self.anchors[branch], index)
        r = rd_round(self.target[branch] - mug, index, self.cost, self.mu)
        if first:
            self.anchors[branch] = r * self.coded[branch] * self.anchor
        return r


def ste_rd_round(index: torch.Tensor, cost: SymbolCost, mu: float):
    """Training-time rounding of gained residuals under scale ``index``: the RD rounding's integers in the
    forward pass, the identity's gradient (straight-through), so that training sees what the encoder codes."""
    index = index.detach()

    def rounding(d: torch.Tensor) -> torch.Tensor:
        return straight_through(rd_round(d.detach(), index, cost, mu), d)
    return rounding
