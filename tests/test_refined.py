"""Encoder distillation toward refined latents (distill.refined): targets from real refinements, and an
encoder-only training that moves toward them while the decoder stays bit-for-bit the same."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from codec.refine import Effort
from codec.weights import load_model
from distill.refined import EncoderDistill, encoder_parameters, load_targets, make_targets, train_encoder


@pytest.fixture(scope="module")
def targets(tmp_path_factory, eval_paths):
    out = tmp_path_factory.mktemp("refined")
    torch.set_num_threads(1)
    make_targets(load_model("student-1k"), out, count=3, crop=64, seed=1,
                 effort=Effort("test", iterations=12, time_limit_s=60), progress=False, images=eval_paths[:2])
    return out


def test_targets_are_refinements_that_lower_the_exact_cost(targets):
    t = load_targets(targets)
    assert t["rgb"].shape == (3, 3, 64, 64) and t["latent"].shape[0] == 3 and t["z"].shape[0] == 3
    assert t["latent"].shape[-2:] == (4, 4)   # 64 / 16
    assert (t["saving"] >= 0).all() and (t["saving"] > 0).any()
    assert ((t["q"] >= 0) & (t["q"] < 6)).all()


def test_targets_are_not_rewritten(targets):
    before = {p.name: p.stat().st_mtime_ns for p in targets.glob("*.npz")}
    make_targets(load_model("student-1k"), targets, count=3, crop=64, seed=1,
                 effort=Effort("test", iterations=1, time_limit_s=60), progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in targets.glob("*.npz")} == before


def test_encoder_learns_the_targets_and_the_decoder_stays_the_same(targets):
    model = load_model("student-1k")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    encoder = {id(p) for p in encoder_parameters(model)}
    encoder_names = {n for n, p in model.named_parameters() if id(p) in encoder}
    t = load_targets(targets)
    metrics = train_encoder(model, t, EncoderDistill(steps=30, batch=3, lr=1e-3, latent_weight=1.0, rd_weight=0.0,
                                                     log_every=10), progress=False)
    after = model.state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed and changed <= encoder_names
    assert np.isfinite(metrics["dist"])
    with torch.no_grad():
        from codec.color import rgb_to_yuv420
        y, uv = rgb_to_yuv420(t["rgb"])
        gain = model._gain(t["q"])[0]
        dist_after = float((((model._analyse(y, uv) - t["latent"]) * gain) ** 2).mean())
        fresh = load_model("student-1k")
        dist_before = float((((fresh._analyse(y, uv) - t["latent"]) * gain) ** 2).mean())
    assert dist_after < dist_before
