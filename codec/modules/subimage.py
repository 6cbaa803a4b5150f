"""Seed 001's sub-image front end: feature extraction over pixel-shuffled sub-images, 3-D refinement."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import HybridAttention


class SubImageRefiner(nn.Module):
    """Feature extraction (FExM) and feature refinement (FRM) modules of seed 001, in its
    "Proposed-Tiny" size, as the encoder's front end for the luma plane.

    FExM: the plane is pixel-unshuffled into split x split sub-images, stacked as frames
    (B, 1, split^2, H/split, W/split), and one 3x3 convolution shared by every frame extracts features.
    FRM: a 3-D residual block (3x3x3, PReLU, 1x1x1) and 3-D hybrid attention (channel and spatial,
    :class:`HybridAttention` with ``dims=3``) refine them across channels, within and across
    sub-images. A zero-initialised 1x1x1 convolution maps the result to a correction of each
    sub-image, so the analysis transform sees the refined plane and the module starts as the identity.
    001 feeds the refined features themselves to its encoder; here the student's analysis already opens
    with the same pixel unshuffle, so correcting its input keeps every trained weight usable."""

    def __init__(self, features: int = 4, split: int = 2):
        super().__init__()
        self.split = split
        self.extract = nn.Conv3d(1, features, (1, 3, 3), padding=(0, 1, 1))
        self.act = nn.PReLU(features)
        self.residual = nn.Sequential(nn.Conv3d(features, features, 3, padding=1), nn.PReLU(features),
                                      nn.Conv3d(features, features, 1))
        self.attention = HybridAttention(features, kernel=3, dims=3)
        self.out = nn.Conv3d(features, 1, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        frames = F.pixel_unshuffle(y, self.split).unsqueeze(1)
        f = self.act(self.extract(frames))
        f = self.attention(f + self.residual(f))
        return F.pixel_shuffle((frames + self.out(f)).squeeze(1), self.split)
