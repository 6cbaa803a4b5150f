"""The coded rate (codec.rate): the bits of the real coder, symbol by symbol, and the training rate term."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from codec.api import encode_image, pad_planes
from codec.bitstream import overhead_bytes
from codec.color import to_tensor
from codec.images import load_rgb
from codec.rate import SymbolCost, straight_through
from codec.weights import load_model


@pytest.fixture(scope="module")
def model():
    return load_model("student-1k")


@pytest.fixture(scope="module")
def pictures(eval_paths):
    return [np.ascontiguousarray(load_rgb(p)[:192, :256]) for p in eval_paths[:2]]


def test_symbol_cost_is_the_coded_stream(model, pictures):
    """Summed over a picture's residuals, the count equals the rANS stream to its flush overhead."""
    for rgb in pictures:
        y, uv = pad_planes(to_tensor(rgb), model.cfg.multiple)
        for q in (0, 3, 5):
            streams, st = model.compress_planes(y, uv, q)
            coded = ~st["skip"]
            bits = float(SymbolCost(model.gaussian_conditional)(st["residual"][coded], st["index"][coded]).sum())
            assert 0 <= 8 * len(streams[1]) - bits <= 96, (q, 8 * len(streams[1]), bits)


def test_escape_symbols_cost_their_bypass_nibbles(model):
    cost = SymbolCost(model.gaussian_conditional)
    index = torch.zeros(4, dtype=torch.long)   # the narrowest table: a few symbols, then the escape
    far = cost(torch.tensor([0, 5, 40, 5000]), index)
    assert far[0] < 0.01 and far[1] < far[2] < far[3]
    # 16 bits of the escape symbol's entry at most, plus 4 bits of nibble count and 4 per nibble
    assert far[3] <= 16 + 4 + 4 * 4


def test_training_rate_term_matches_the_file(model, eval_paths):
    """In training mode, the loss's rate term plus the file's fixed overhead (header, stream lengths, CRC)
    is within 5% of the real file on evaluation photos."""
    model.train()
    try:
        for rgb in (load_rgb(p) for p in eval_paths[:2]):
            y, uv = pad_planes(to_tensor(rgb), model.cfg.multiple)
            for q in range(model.num_qualities):
                file_bits = 8 * len(encode_image(model.eval(), rgb, q))
                model.train()
                for rate in ("noise", "coded"):
                    with torch.no_grad():
                        out = model(y, uv, q, rate=rate)
                    bits = float(sum(b.sum() for b in out["bits"].values())) + 8 * overhead_bytes()
                    assert abs(bits / file_bits - 1) < 0.05, (rate, q, bits, file_bits)
    finally:
        model.eval()


def test_straight_through_takes_the_value_of_one_and_the_gradient_of_the_other():
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    out = straight_through(torch.tensor([10.0, 20.0]), x ** 2)
    out.sum().backward()
    assert out.tolist() == [10.0, 20.0] and x.grad.tolist() == [2.0, 4.0]
