"""Attention blocks: hybrid-domain (channel + spatial) attention and global channel self-attention."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class HybridAttention(nn.Module):
    """Hybrid-domain attention (seed 000, the thesis' first mechanism): a channel gate (squeeze and
    excitation on the features averaged over every position) then a spatial gate (a k x k convolution
    over the channel mean and maximum), each multiplying the features.

    Gates are ``2 * sigmoid`` of zero-initialised layers, so the block starts as the identity and a
    trained codec can take it on without losing its starting point. ``dims=3`` gives the 3-D version
    (pooling also over the sub-image axis) that seed 001's feature refinement uses."""

    def __init__(self, channels: int, reduction: int = 4, kernel: int = 7, dims: int = 2):
        super().__init__()
        hidden = max(4, channels // reduction)
        self.squeeze = nn.Linear(channels, hidden)
        self.excite = nn.Linear(hidden, channels)
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        self.spatial = conv(2, 1, kernel, padding=kernel // 2)
        for layer in (self.excite, self.spatial):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        axes = tuple(range(2, x.dim()))
        gate = self.excite(F.relu(self.squeeze(x.mean(axes))))
        x = x * (2 * torch.sigmoid(gate)).reshape(*gate.shape, *(1,) * len(axes))
        pooled = torch.cat((x.mean(1, keepdim=True), x.amax(1, keepdim=True)), 1)
        return x * (2 * torch.sigmoid(self.spatial(pooled)))


class ChannelSelfAttention(nn.Module):
    """Self-attention for long-range dependencies in the latent (seed 004), in the transposed form of
    Restormer's MDTA: queries, keys and values come from a 1x1 then a depthwise 3x3 convolution (the
    3x3 carries the positional information 004 asks for), and each head's attention map relates
    channels, computed over every position of the picture. Every position thus sees the whole picture
    while the cost per position stays fixed (d^2/heads per product), unlike spatial attention whose
    cost grows with the picture. 004 uses graph attention over positions; this is the channel-level
    reading of its self-attention. The output projection starts at zero: the block starts as identity."""

    def __init__(self, channels: int, dim: int = 32, heads: int = 2):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Conv2d(channels, 3 * dim, 1)
        self.position = nn.Conv2d(3 * dim, 3 * dim, 3, padding=1, groups=3 * dim)
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.project = nn.Conv2d(dim, channels, 1)
        nn.init.zeros_(self.project.weight)
        nn.init.zeros_(self.project.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        q, k, v = (t.reshape(b, self.heads, -1, h * w) for t in self.position(self.qkv(x)).chunk(3, 1))
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        attn = torch.softmax(torch.matmul(q, k.transpose(-2, -1)) * self.temperature, -1)
        return x + self.project(torch.matmul(attn, v).reshape(b, -1, h, w))
