"""The training distortions: `psnr` has the value of the 6:1:1 MSE and the gradient of PSNR-YUV."""
from __future__ import annotations

import pytest
import torch

from training import distortion


def planes():
    """Per-sample plane MSEs, luma's above chroma's as at every rate point of our models (results/errors)."""
    y = torch.tensor([40.0, 20.0, 9.0, 3.0])
    return [t.clone().requires_grad_() for t in (y, y / torch.tensor([4.8, 3.0, 2.5, 1.5]), y / 3.5)]


def test_psnr_distortion_keeps_the_value_of_the_weighted_mse():
    y, u, v = planes()
    assert torch.allclose(distortion(y, u, v, "psnr"), distortion(y, u, v, "mse"))


def test_psnr_distortion_follows_the_gradient_of_psnr_yuv():
    y, u, v = planes()
    distortion(y, u, v, "psnr").sum().backward()
    got = torch.stack([y.grad, u.grad, v.grad])
    y2, u2, v2 = (t.detach().clone().requires_grad_() for t in (y, u, v))
    psnr_yuv = -10 * (6 * torch.log10(y2) + torch.log10(u2) + torch.log10(v2)) / 8
    (-psnr_yuv).sum().backward()
    want = torch.stack([y2.grad, u2.grad, v2.grad])
    ratio = got / want                       # one positive factor per sample (the distortion's scale)
    assert torch.all(ratio > 0)
    assert torch.allclose(ratio, ratio[:1].expand_as(ratio), rtol=1e-5)
    # against the plain MSE, the planes with the smaller MSE (chroma here) gain weight
    y3, u3, v3 = (t.detach().clone().requires_grad_() for t in (y, u, v))
    distortion(y3, u3, v3, "mse").sum().backward()
    assert torch.all(u.grad / y.grad > u3.grad / y3.grad)


def test_unknown_distortion_is_refused():
    with pytest.raises(ValueError, match="unknown distortion"):
        distortion(*planes(), "ssim")


def test_training_defaults_to_the_metric_and_the_command_line_can_choose_mse():
    from argparse import Namespace

    from training import TrainConfig
    from training.cli import OVERRIDES, overrides

    assert TrainConfig().distortion == "psnr"
    args = Namespace(**{k: None for k in OVERRIDES})
    args.distortion = "mse"
    assert overrides(args) == {"distortion": "mse"}
