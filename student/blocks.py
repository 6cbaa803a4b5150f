"""Cheap building blocks for students: depthwise-separable, grouped 1x1 with channel shuffle,
asymmetric (1xk + kx1) depthwise convolutions, and PixelShuffle / PixelUnshuffle resampling."""
from __future__ import annotations

import torch
import torch.nn as nn


class ChannelShuffle(nn.Module):
    """ShuffleNet channel shuffle: interleave the channels of ``groups`` groups (0 MACs)."""

    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        return x.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def pointwise(cin: int, cout: int, groups: int = 1) -> nn.Module:
    """1x1 convolution; grouped ones are followed by a channel shuffle so groups exchange information."""
    if groups == 1:
        return nn.Conv2d(cin, cout, 1)
    return nn.Sequential(nn.Conv2d(cin, cout, 1, groups=groups), ChannelShuffle(groups))


def depthwise(c: int, k: int = 3, asymmetric: bool = False) -> nn.Module:
    """k x k depthwise convolution, or the asymmetric pair 1 x k then k x 1 (cheaper for k >= 5)."""
    if not asymmetric:
        return nn.Conv2d(c, c, k, padding=k // 2, groups=c)
    return nn.Sequential(nn.Conv2d(c, c, (1, k), padding=(0, k // 2), groups=c),
                         nn.Conv2d(c, c, (k, 1), padding=(k // 2, 0), groups=c))


class DSBlock(nn.Module):
    """Residual depthwise-separable block: depthwise conv, activation, (grouped) 1x1 conv."""

    def __init__(self, c: int, k: int = 3, groups: int = 1, asymmetric: bool = False):
        super().__init__()
        self.body = nn.Sequential(depthwise(c, k, asymmetric), nn.Hardswish(), pointwise(c, c, groups))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)

    def start_as_identity(self) -> None:
        """Zero the last 1x1 convolution: the block passes its input through until it is trained."""
        last = self.body[-1]
        conv = last[0] if isinstance(last, nn.Sequential) else last
        nn.init.zeros_(conv.weight)
        nn.init.zeros_(conv.bias)


def up_stage(cin: int, cout: int, blocks: int, k: int = 3, groups: int = 1, asymmetric: bool = False) -> nn.Sequential:
    """Upsample 2x: 1x1 conv to 4*cout then PixelShuffle, followed by ``blocks`` DSBlocks."""
    layers: list[nn.Module] = [nn.Conv2d(cin, 4 * cout, 1), nn.PixelShuffle(2)]
    layers += [DSBlock(cout, k, groups, asymmetric) for _ in range(blocks)]
    return nn.Sequential(*layers)


def down_stage(cin: int, cout: int, blocks: int, k: int = 3, groups: int = 1, asymmetric: bool = False) -> nn.Sequential:
    """Downsample 2x: PixelUnshuffle then a 1x1 conv from 4*cin to cout, followed by ``blocks`` DSBlocks."""
    layers: list[nn.Module] = [nn.PixelUnshuffle(2), nn.Conv2d(4 * cin, cout, 1)]
    layers += [DSBlock(cout, k, groups, asymmetric) for _ in range(blocks)]
    return nn.Sequential(*layers)
