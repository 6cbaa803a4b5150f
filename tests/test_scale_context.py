"""The ctxscale rule (codec/scale_context.py) and its fit (distill/scale_context.py)."""
from __future__ import annotations

import numpy as np
import pytest

from codec.scale_context import (S_EDGES, anchor_mask, context_features, context_index, identity_table,
                                 neighbour_sums, table_keys, t_buckets)
from tests.test_export import TEST_STUDENT, student  # noqa: F401  (the 30-step student-1k fixture)


def _reference(residual, index, y_channels, lut, t_edges):
    """The rule written out without chunks."""
    anchor, out, c0 = anchor_mask(*index.shape[-2:]), index.copy(), 0
    for b, (s, t) in enumerate(context_features(residual, anchor, y_channels)):
        c1 = c0 + s.shape[0]
        part = index[c0:c1]
        s_bucket = np.searchsorted(S_EDGES, s, side="right") - 1   # the buckets by search, not by lookup
        delta = lut[b].reshape(-1)[table_keys(part, s_bucket, t_buckets(t, t_edges[b])[None])]
        out[c0:c1] = np.where(anchor, part, np.clip(part.astype(int) + delta, 0, lut.shape[1] - 1))
        c0 = c1
    return out


@pytest.mark.parametrize("chunk", [1, 5, 64])
def test_context_index_is_the_rule_in_any_chunking_and_keeps_anchors(chunk):
    rng = np.random.default_rng(chunk)
    residual = rng.integers(-300, 300, (21, 7, 10))
    index = rng.integers(0, 64, residual.shape).astype(np.uint8)
    lut = rng.integers(-6, 7, (2, 64, 8, 8)).astype(np.int8)
    t_edges = np.sort(rng.integers(0, 5000, (2, 8)), 1)
    got = context_index(residual, index, 15, lut, t_edges, chunk=chunk)
    assert got.dtype == np.uint8 and np.array_equal(got, _reference(residual, index, 15, lut, t_edges))
    anchor = anchor_mask(7, 10)
    assert np.array_equal(got[:, anchor], index[:, anchor]) and (got[:, ~anchor] != index[:, ~anchor]).any()
    assert np.array_equal(context_index(residual, index, 15, *identity_table(64)), index)


def test_neighbour_sums_read_only_anchors_clipped():
    residual = np.zeros((1, 3, 3), np.int64)
    residual[0, 0, 1] = 1000          # a non-anchor ((row + col) odd): never read
    residual[0, 0, 0] = -1000         # an anchor: clipped to 255
    s = neighbour_sums(residual, anchor_mask(3, 3))
    assert s[0, 0, 1] == 255 and s[0, 1, 0] == 255
    assert s[0, 0, 2] == 0 and s[0, 1, 1] == 0   # their only non-zero neighbour is the non-anchor


def test_fitted_table_never_costs_bits_on_its_own_data(student):
    """The fit picks, per cell, the move with the fewest exact bits (no move among them), so on the states
    it was fitted on the non-anchor bits can only fall; here, on real crops, they do."""
    import torch
    from codec.color import rgb_to_yuv420
    from codec.registry import create_model
    from codec.weights import load_weights, rate_points_of
    from distill.scale_context import fit_table, residual_states, table_bits
    from photos import train_images
    from training import CropDataset

    model = create_model("student-1k+ctxscale").set_rate_points(rate_points_of(TEST_STUDENT))
    load_weights(model, TEST_STUDENT, partial=True)
    model.eval()
    crops = CropDataset(train_images(), 128, 4, seed=0, small="skip")
    with torch.no_grad():
        states = residual_states(model, [rgb_to_yuv420(crops[i][None]) for i in range(4)], progress=False)
    lut, t_edges = fit_table(model, states, progress=False)
    assert lut.shape == tuple(model.scale_context.lut.shape) and np.all(np.diff(t_edges, axis=1) >= 0)
    bits = table_bits(model, states, lut, t_edges)
    assert all(after <= before for _, before, after in bits.values())
    assert sum(after for _, _, after in bits.values()) < sum(before for _, before, _ in bits.values())
