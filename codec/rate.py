"""The rate the coder really spends, symbol by symbol, so that training and refinement can use it.

compressai's rANS coder (``encode_with_indexes``) codes a symbol ``s`` with table ``i`` as follows:
``value = s - offset[i]``; a value inside ``[0, max_value)`` (``max_value = length[i] - 2``) costs
``16 - log2(freq)`` bits of its 16-bit table entry; any other value is coded as the escape symbol
``max_value`` (its frequency) followed by bypass nibbles: the nibble count in unary-ish chunks of 4 bits
(values of 15 continue) and the raw value ``2 * excess`` (or ``-2 * value - 1`` below the table) 4 bits
per nibble. :class:`SymbolCost` reproduces that count exactly from the same CDF tables, so the sum over a
picture's symbols matches the coded stream to within the rANS coder's own few bytes of flush overhead.

Why hand-written: compressai exposes the coder, not its cost per symbol, and a likelihood estimate is not
the coded rate (the Gaussian's tails cost at most ~24 bits in the coder but unbounded bits in a likelihood;
skipped elements cost nothing at all).
"""
from __future__ import annotations

import torch

PRECISION = 16          # compressai's CDF precision
BYPASS_BITS = 4         # compressai's bypass_precision
MAX_BYPASS = (1 << BYPASS_BITS) - 1
ESCAPE_FLOOR_BITS = PRECISION + 2 * BYPASS_BITS


class SymbolCost:
    """Exact bits per symbol for the CDF tables of one compressai entropy model."""

    def __init__(self, entropy_model):
        cdf = entropy_model._quantized_cdf.long()
        if cdf.numel() == 0:
            raise RuntimeError("entropy model has no CDF tables: call model.update() first")
        self.lengths = entropy_model._cdf_length.reshape(-1).long()
        self.offsets = entropy_model._offset.reshape(-1).long()
        freq = (cdf[:, 1:] - cdf[:, :-1]).clamp_min(1).double()
        self.table_bits = (PRECISION - torch.log2(freq)).float()      # tables x (length - 1)
        self.max_value = self.lengths - 2

    def to(self, device) -> "SymbolCost":
        """Move the tables to ``device`` (the symbols' device)."""
        for key in ("lengths", "offsets", "table_bits", "max_value"):
            setattr(self, key, getattr(self, key).to(device))
        return self

    def __call__(self, symbols: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Bits the coder spends on each symbol (integer-valued tensors of one shape) -> float tensor."""
        if self.table_bits.device != symbols.device:
            self.to(symbols.device)
        symbols, index = symbols.long(), index.long()
        value = symbols - self.offsets[index]
        top = self.max_value[index]
        escape = (value < 0) | (value >= top)
        raw = torch.where(value < 0, -2 * value - 1, 2 * (value - top)).clamp_min(0)
        nibbles = torch.where(raw > 0, torch.floor(torch.log2(raw.double().clamp_min(1))).long() // BYPASS_BITS + 1,
                              torch.zeros_like(raw))
        bypass = BYPASS_BITS * (nibbles // MAX_BYPASS + 1 + nibbles)
        coded = torch.where(escape, top, value)
        bits = self.table_bits[index, coded]
        return bits + torch.where(escape, bypass, torch.zeros_like(bypass)).float()


def proxy_bits(likelihoods: torch.Tensor) -> torch.Tensor:
    """Information content of likelihoods, floored at the coder's worst in-table cost (16 bits) plus its
    shortest escape (8 bits): no outlier is charged more than the coder could plausibly spend on it."""
    return -torch.log2(likelihoods.clamp_min(2.0 ** -ESCAPE_FLOOR_BITS))


def straight_through(exact: torch.Tensor, proxy: torch.Tensor) -> torch.Tensor:
    """A tensor whose value is ``exact`` and whose gradient is ``proxy``'s: train on the coded rate with
    the smooth gradients of a likelihood (the exact count is piecewise constant)."""
    return proxy + (exact - proxy).detach()
