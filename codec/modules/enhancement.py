"""Decoder-side enhancement: a dense block on the decoded latent and a post-filter on the planes."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _zero(layer: nn.Conv2d) -> nn.Conv2d:
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class DenseEnhance(nn.Module):
    """Feature enhancement module (seed 001's FEnM, in its "Proposed-Tiny" size of one dense block):
    two 3x3 dense layers and a 1x1 fusion on the decoded latent, added back. Its feature loss, the
    distance between the enhanced latent and the analysis output (001's Eq. 16), is added by
    YUVCodec.forward as ``aux_loss``. Starts as the identity (zero fusion)."""

    def __init__(self, channels: int, growth: int = 8):
        super().__init__()
        self.first = nn.Conv2d(channels, growth, 3, padding=1)
        self.second = nn.Conv2d(channels + growth, growth, 3, padding=1)
        self.fuse = _zero(nn.Conv2d(channels + 2 * growth, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.hardswish(self.first(x))
        b = F.hardswish(self.second(torch.cat((x, a), 1)))
        return x + self.fuse(torch.cat((x, a, b), 1))


class PostFilter(nn.Module):
    """Post-processing enhancement of the decoded planes, run at half resolution (luma unshuffled to 4
    channels beside the 2 chroma channels): 1x1, depthwise 3x3, 1x1 residual correction.

    ``use_mean=True`` is seed 000's mean-aided enhancement: the predicted mean of the latent (H/16
    grid), which the decoder has anyway, is mapped by a 1x1 conv and pixel-shuffled up to H/2 as side
    information. ``use_mean=False`` is seed 002's JointIQ-Net reading: a quality-enhancement network
    after the decoder trained jointly with the codec (its GRDN is far larger; this is sized for the
    2k budget). Starts as the identity (zero last layer)."""

    def __init__(self, latent_channels: int, hidden: int = 16, guide: int = 2, use_mean: bool = True):
        super().__init__()
        self.uses_mean = use_mean
        self.guide = nn.Sequential(nn.Conv2d(latent_channels, 64 * guide, 1), nn.PixelShuffle(8)) if use_mean else None
        cin = 6 + (guide if use_mean else 0)
        self.body = nn.Sequential(nn.Conv2d(cin, hidden, 1), nn.Hardswish(),
                                  nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden), nn.Hardswish(),
                                  _zero(nn.Conv2d(hidden, 6, 1)))

    def forward(self, y: torch.Tensor, uv: torch.Tensor, mean: torch.Tensor | None = None):
        feats = [F.pixel_unshuffle(y, 2), uv]
        if self.guide is not None:
            feats.append(self.guide(mean))
        d = self.body(torch.cat(feats, 1))
        return y + F.pixel_shuffle(d[:, :4], 2), uv + d[:, 4:]


class LatentChain(nn.ModuleDict):
    """Option modules applied in turn to the concatenated (Y, UV) latent; those marked ``uses_mean``
    also get the predicted mean."""

    def forward(self, x: torch.Tensor, mean: torch.Tensor | None = None) -> torch.Tensor:
        for module in self.values():
            x = module(x, mean) if getattr(module, "uses_mean", False) else module(x)
        return x
