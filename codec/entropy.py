"""Entropy coding: compressai's rANS coder driven by CDF tables and per-element table indexes."""
from __future__ import annotations

import numpy as np
import torch
from compressai.ans import RansDecoder, RansEncoder


class CdfTables:
    """Quantised CDF tables of a compressai entropy model (EntropyBottleneck or GaussianConditional)."""

    def __init__(self, entropy_model):
        self.cdfs = entropy_model._quantized_cdf.tolist()
        self.lengths = entropy_model._cdf_length.reshape(-1).int().tolist()
        self.offsets = entropy_model._offset.reshape(-1).int().tolist()
        if not self.cdfs or not self.cdfs[0]:
            raise RuntimeError("entropy model has no CDF tables: call model.update() after training")

    def __len__(self) -> int:
        return len(self.lengths)


def encode_symbols(symbols: torch.Tensor, indexes: torch.Tensor, tables: CdfTables) -> bytes:
    """rANS-encode integer symbols, each with the table chosen by its index (flattened, same length)."""
    s = symbols.reshape(-1).int().tolist()
    i = indexes.reshape(-1).int().tolist()
    if not s:
        return b""  # compressai's coder crashes on an empty symbol list
    return RansEncoder().encode_with_indexes(s, i, tables.cdfs, tables.lengths, tables.offsets)


def decode_symbols(data: bytes, indexes: torch.Tensor, tables: CdfTables) -> torch.Tensor:
    """Decode as many symbols as ``indexes`` holds from an rANS stream; returns an int64 tensor."""
    i = indexes.reshape(-1).int().tolist()
    if not i:
        return torch.zeros(0, dtype=torch.long)
    out = RansDecoder().decode_with_indexes(data, i, tables.cdfs, tables.lengths, tables.offsets)
    return torch.from_numpy(np.asarray(out, dtype=np.int64))


def estimated_bits(likelihoods: torch.Tensor) -> float:
    """Information content in bits of a tensor of likelihoods."""
    return float(-torch.log2(likelihoods.double().clamp_min(1e-12)).sum())
