"""The fast encoder's rate-distortion rounding (codec/rdoq.py)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from codec.api import decode_image, encode_image, pad_planes, reconstruct
from codec.color import to_tensor
from codec.images import load_rgb
from codec.rate import SymbolCost
from codec.rdoq import RDOQ_MU, rd_round
from codec.weights import load_model


@pytest.fixture(scope="module")
def picture(eval_paths):
    return np.ascontiguousarray(load_rgb(eval_paths[0])[:128, :192])


def _costs(d, r, index, cost, mu):
    return (d - r) ** 2 + mu * cost(r, index)


def test_rd_round_is_nearest_or_one_step_inward_and_never_costs_more():
    cost = SymbolCost(load_model("student-1k").gaussian_conditional)
    gen = torch.Generator().manual_seed(0)
    d = torch.randn(20000, generator=gen) * 6
    index = torch.randint(0, len(cost.lengths), (20000,), generator=gen)
    nearest = torch.round(d)
    assert torch.equal(rd_round(d, index, cost, 0.0), nearest)
    r = rd_round(d, index, cost, RDOQ_MU)
    inward = r != nearest
    assert torch.equal(r[inward], (nearest - torch.sign(nearest))[inward])
    assert 0 < inward.float().mean() < 0.5
    assert torch.all(_costs(d, r, index, cost, RDOQ_MU) <= _costs(d, nearest, index, cost, RDOQ_MU))


@pytest.mark.parametrize("name", ["student-1k", "student-2k-wide+ctxscale"])
def test_each_coded_residual_is_the_cheaper_choice_under_the_coded_index(name, picture):
    """Checked on the encoder's final state: every coded integer is the nearest or one step inward of its
    gained residual, whichever costs less under the index it is coded with; with ctxscale that index is
    the one the anchors moved, so the non-anchors were decided under the table the decoder will use."""
    model = load_model(name)
    y, uv = pad_planes(to_tensor(picture), model.cfg.multiple)
    for q in (0, model.num_qualities // 2, model.num_qualities - 1):
        st = model.encode_latents(y, uv, q)
        _, _, gain = model._index(st["z"].float(), q)
        latent = model._analyse(y, uv)
        d = (latent * gain - st["mean"] * gain)[~st["skip"]]
        r, index = st["residual"][~st["skip"]].float(), st["index"][~st["skip"]]
        nearest = torch.round(d)
        other = torch.where(r == nearest, nearest - torch.sign(nearest), nearest)
        assert torch.all((r == nearest) | (r == nearest - torch.sign(nearest)))
        cost = model._symbol_cost("gaussian_conditional")
        assert torch.all(_costs(d, r, index, cost, RDOQ_MU) <= _costs(d, other, index, cost, RDOQ_MU) + 1e-3)
        assert (r != nearest).any()


def test_rd_rounding_files_are_smaller_and_decode_to_the_encoders_reconstruction(picture):
    model = load_model("student-1k")
    with torch.inference_mode():
        for q in (0, 3, model.num_qualities - 1):
            rd_file, plain = encode_image(model, picture, q), encode_image(model, picture, q, rdoq=0.0)
            assert len(rd_file) < len(plain)
            assert np.array_equal(decode_image(model, rd_file), reconstruct(model, picture, q))


def test_codec_cli_refuses_a_bad_rdoq(tmp_path, eval_paths):
    import subprocess
    import sys
    res = subprocess.run([sys.executable, "-m", "codec", "encode", str(eval_paths[0]), "-o", str(tmp_path / "x.bin"),
                          "--model", "student-1k", "--rdoq", "2"], capture_output=True, text=True)
    assert res.returncode == 2 and "--rdoq: must be a number from 0 to 1" in res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "x.bin").exists()


def test_training_rate_mode_noise_rd_rounds_as_the_encoder_and_passes_gradients(picture):
    """``rate="noise-rd"``: the training forward's residuals are the RD rounding's (nearest or one step inward,
    some inward) under the hyper-latent's index, and the loss still reaches the analysis (straight-through)."""
    model = load_model("student-1k").train().requires_grad_(True)
    y, uv = pad_planes(to_tensor(picture), model.cfg.multiple)
    q = torch.tensor([1])
    torch.manual_seed(0)
    out = model(y, uv, q, rate="noise-rd")
    gain = model._gain(q)[0]
    d = (out["latent"] - out["mean"]) * gain
    r = (out["latent_hat"] - out["mean"]) * gain
    nearest = torch.round(d)
    assert torch.allclose(r, torch.round(r), atol=1e-3)
    r = torch.round(r)
    assert torch.all((r == nearest) | (r == nearest - torch.sign(nearest)))
    assert (r != nearest).any()
    # the rate term's value: the coder's bits of exactly these integers (read back from the forward), as the
    # encoder's own rounding of the same latents around the same means decides them
    coded = model._rounded(out["latent"].detach() * gain, out["mean"].detach() * gain, out["scale_index"].detach(),
                           RDOQ_MU)
    assert torch.equal(coded, r)
    out["y"].square().mean().backward()
    assert next(model.analysis_y.parameters()).grad.abs().sum() > 0
    with pytest.raises(ValueError, match="rate must be one of"):
        model(y, uv, q, rate="bogus")
