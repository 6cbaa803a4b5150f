"""The ``ctxscale`` option's table as model state (codec/scale_context.py has the rule and says why)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from ..entropy import SCALE_LEVELS
from ..scale_context import context_index, identity_table


class ScaleContextTable(nn.Module):
    """Integer buffers ``lut`` (2 x levels x S buckets x T buckets, int8) and ``t_edges`` (2 x T buckets,
    int64), saved with the weights; the identity (all zero) until ``distill.scale_context`` fits them."""

    def __init__(self, levels: int = SCALE_LEVELS):
        super().__init__()
        lut, edges = identity_table(levels)
        self.register_buffer("lut", torch.from_numpy(lut))
        self.register_buffer("t_edges", torch.from_numpy(edges))

    def set_table(self, lut: np.ndarray, t_edges: np.ndarray) -> None:
        """Install a fitted table (shapes as the identity's)."""
        self.lut.copy_(torch.from_numpy(np.asarray(lut, np.int8)))
        self.t_edges.copy_(torch.from_numpy(np.asarray(t_edges, np.int64)))

    def table(self) -> tuple[np.ndarray, np.ndarray]:
        """(lut, t_edges) as numpy, as codec.scale_context takes them."""
        return self.lut.cpu().numpy(), self.t_edges.cpu().numpy()

    def forward(self, residual: torch.Tensor, index: torch.Tensor, y_channels: int) -> torch.Tensor:
        """Coded index of every element (B x C x h x w; only the anchors' residuals are read, zero where
        skipped): the table's move, carrying ``index``'s gradient (training), dtype and device."""
        lut, edges = self.table()
        # int32 residuals and no copies beyond the result: a 12-Mpixel latent has 10 million elements
        r, idx = residual.detach().to(torch.int32).cpu().numpy(), index.detach().cpu().numpy()
        moved = [context_index(r[b], idx[b], y_channels, lut, edges) for b in range(idx.shape[0])]
        moved = torch.from_numpy(moved[0][None] if len(moved) == 1 else np.stack(moved)).to(index.device, index.dtype)
        return index + (moved - index.detach()) if index.requires_grad else moved
