"""Quantisation-side options: learned inverse quantisation, Fourier-series rounding in training, and
asymmetric convolution blocks that fold into one kernel."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class LearnedDequant(nn.Module):
    """Learned inverse quantisation (seed 000, second mechanism): the decoded latent plus a correction
    predicted from (decoded value, predicted mean) pairs, which learns what rounding took away.

    The mixed quantisation that 000 pairs it with (straight-through rounding for the synthesis path,
    additive uniform noise for the rate) is how every model here already trains (YUVCodec._quantize).
    Grouped 1x1 convolutions over interleaved (value, mean) channels keep it cheap; the last one starts
    at zero, so the module starts as the identity."""

    uses_mean = True

    def __init__(self, channels: int, groups: int = 8):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(2 * channels, channels, 1, groups=groups), nn.Hardswish(),
                                 nn.Conv2d(channels, channels, 1, groups=groups))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, x: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
        return x + self.net(torch.stack((x, mean), 2).flatten(1, 2))


class FourierRounding(nn.Module):
    """Quantisation error compensation (seed 001's QECM, after Jiang et al., ICIP 2023): in training the
    coded residual is rounded by ``x - sum_k a_k sin(2 pi k x)``, the Fourier series of the sawtooth
    rounding error cut at 5 harmonics, with the a_k learnable from their series values (-1)^(k+1)/(pi k),
    instead of straight-through rounding. Inference rounds exactly, so it costs nothing and leaves the
    bitstream alone. The paper's Laplacian noise added to the quantised latent at test time is left
    out: it would make the decoder's output random, and here the decoder already sees rounded values
    in training, which is the mismatch that noise was meant to cover."""

    def __init__(self, harmonics: int = 5):
        super().__init__()
        k = torch.arange(1, harmonics + 1, dtype=torch.float32)
        self.register_buffer("k", k, persistent=False)
        self.coef = nn.Parameter((-1.0) ** (k + 1) / (math.pi * k))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - (self.coef * torch.sin(2 * math.pi * self.k * x.unsqueeze(-1))).sum(-1)


class AsymmetricConv2d(nn.Conv2d):
    """Asymmetric convolution block (seed 004's ACNN, in ACNet's form): a k x k convolution trained
    together with a 1 x k and a k x 1 kernel on the same centre. Without normalisation between them
    the three sum to one k x k kernel, which is what runs (in training too), so inference costs
    exactly the plain convolution. The extra kernels start at zero; ``weight`` and ``bias`` keep their
    names, so trained plain weights load into it unchanged."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        k = self.kernel_size[0]
        shape = (self.out_channels, self.in_channels // self.groups)
        self.horizontal = nn.Parameter(torch.zeros(*shape, 1, k))
        self.vertical = nn.Parameter(torch.zeros(*shape, k, 1))

    def fused_weight(self) -> torch.Tensor:
        """The single k x k kernel the three branches add up to."""
        c = self.kernel_size[0] // 2
        return self.weight + F.pad(self.horizontal, (0, 0, c, c)) + F.pad(self.vertical, (c, c, 0, 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.fused_weight(), self.bias)


def make_asymmetric(module: nn.Module) -> int:
    """Turn every plain square k x k convolution (odd k >= 3, not a subclass such as a masked or an
    integer conv) inside ``module`` into an AsymmetricConv2d with the same weights; returns how many."""
    done = 0
    for name, child in list(module.named_children()):
        k = getattr(child, "kernel_size", None)
        if type(child) is nn.Conv2d and k[0] == k[1] >= 3 and k[0] % 2 and child.padding == (k[0] // 2,) * 2:
            new = AsymmetricConv2d(child.in_channels, child.out_channels, k, stride=child.stride,
                                   padding=child.padding, groups=child.groups, bias=child.bias is not None)
            new.load_state_dict(child.state_dict(), strict=False)
            setattr(module, name, new)
            done += 1
        else:
            done += make_asymmetric(child)
    return done
