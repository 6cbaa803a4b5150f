"""The synthesis as exported: the same function as ``codec.blocks.Synthesis``, rewritten for ONNX Runtime.

Pixel shuffles become transposed convolutions (ShuffleUp), channel shuffles gathers (ChannelPermute), and a
luma tail that is linear (no blocks at H/2) two small transposed convolutions (LinearTail). Each is measured
in results/decode_profile*.md and docs/deployment.md; export/crops.py crops inside the graph before them.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn

from codec.blocks import Synthesis


class ShuffleUp(nn.Module):
    """A 1x1 convolution to 4c channels followed by PixelShuffle(2), as one 2x2 stride-2 transposed
    convolution: the same function (up to float rounding; the exporter measures ORT against torch).

    ONNX Runtime's CPU provider runs PixelShuffle (DepthToSpace) element by element, and outside its
    blocked NCHWc layout, so every pixel shuffle also cost two layout conversions: a fifth of the
    synthesis time went there (results/decode_profile.md). The convolution's bias differs per sub-pixel
    phase, which ConvTranspose's per-channel bias cannot express, so it rides on an extra all-ones input
    channel whose weights are those biases."""

    def __init__(self, conv: nn.Conv2d, r: int = 2):
        super().__init__()
        cin, c = conv.in_channels, conv.out_channels // (r * r)
        self.up = nn.ConvTranspose2d(cin + 1, c, r, stride=r, bias=False)
        with torch.no_grad():
            w = conv.weight[:, :, 0, 0].reshape(c, r, r, cin).permute(3, 0, 1, 2)   # cin x c x r x r
            self.up.weight[:cin].copy_(w)
            bias = conv.bias if conv.bias is not None else torch.zeros(c * r * r)
            self.up.weight[cin].copy_(bias.reshape(c, r, r))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(torch.cat((x, torch.ones_like(x[:, :1])), 1))


class ChannelPermute(nn.Module):
    """A fixed channel permutation as one gather on the channel axis (the ShuffleNet channel shuffle, exported
    without the reshapes whose target sizes the exporter computes from the graph inputs' sizes, which
    would break on tensors cropped inside the graph, export/crops.py)."""

    def __init__(self, groups: int, channels: int):
        super().__init__()
        self.register_buffer("index", torch.arange(channels).view(groups, channels // groups).t().reshape(-1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.index_select(x, 1, self.index)


def _fold_shuffles(seq: nn.Sequential) -> nn.Sequential:
    """``seq`` with every (1x1 Conv2d, PixelShuffle) pair replaced by a ShuffleUp, recursively."""
    items, out, i = list(seq), [], 0
    while i < len(items):
        a = items[i]
        b = items[i + 1] if i + 1 < len(items) else None
        if (isinstance(a, nn.Conv2d) and a.kernel_size == (1, 1) and a.groups == 1 and a.stride == (1, 1)
                and isinstance(b, nn.PixelShuffle)):
            out.append(ShuffleUp(a, b.upscale_factor))
            i += 2
            continue
        out.append(_fold(a))
        i += 1
    return nn.Sequential(*out)


def _fold(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.Sequential):
        return _fold_shuffles(module)
    if type(module).__name__ == "ChannelShuffle" and hasattr(module, "groups"):
        return _ShuffleProbe(module)
    return _fold_children(module)


class _ShuffleProbe(nn.Module):
    """A ChannelShuffle whose channel count is known only at the first call; replaced by ChannelPermute."""

    def __init__(self, shuffle: nn.Module):
        super().__init__()
        self.shuffle = shuffle

    def forward(self, x):
        return self.shuffle(x)


def _fold_children(module: nn.Module) -> nn.Module:
    for name, child in list(module.named_children()):
        setattr(module, name, _fold(child))
    return module


def _resolve_shuffles(module: nn.Module, *example: torch.Tensor) -> nn.Module:
    """Replace every _ShuffleProbe by a ChannelPermute of the channel count it sees on ``example``."""
    seen: dict[str, int] = {}
    probes = [(n, m) for n, m in module.named_modules() if isinstance(m, _ShuffleProbe)]
    handles = [m.register_forward_pre_hook(lambda mod, args, n=n: seen.__setitem__(n, args[0].shape[1]))
               for n, m in probes]
    try:
        with torch.no_grad():
            module(*example)
    finally:
        for h in handles:
            h.remove()
    for n, m in probes:
        parent, _, leaf = n.rpartition(".")
        setattr(module.get_submodule(parent) if parent else module, leaf, ChannelPermute(m.shuffle.groups, seen[n]))
    return module


class LinearTail(nn.Module):
    """A linear tail of the luma synthesis folded into two transposed convolutions of its H/4 features x.

    When the H/2 stage has no blocks (student-2k-wide), the H/2 features are f = shuffle(up(x)), the luma
    is shuffle(head(f)) and the chroma branch reads f through one 1x1 convolution (ICCI): all linear in x.
    So the luma is one 4x4 stride-4 transposed convolution of x (16 phases, 1 channel) and the chroma's luma
    term one 2x2 stride-2 transposed convolution (4 phases, 2 channels): the same function (up to float
    rounding), without the 20-channel H/2 features, their layout conversions and two of the all-ones
    channels (the biases differ per phase and ride on one all-ones input channel, as in ShuffleUp)."""

    def __init__(self, up: nn.Conv2d, head: nn.Conv2d, chroma_weight: torch.Tensor):
        super().__init__()
        c, f = up.in_channels, up.out_channels // 4
        w = up.weight[:, :, 0, 0].reshape(f, 2, 2, c)                       # f, a, b, c: PixelShuffle order
        b = (up.bias if up.bias is not None else torch.zeros(4 * f)).reshape(f, 2, 2)
        wh = head.weight[:, :, 0, 0].reshape(2, 2, f)                       # a', b', f
        bh = (head.bias if head.bias is not None else torch.zeros(4)).reshape(2, 2)
        self.luma = nn.ConvTranspose2d(c + 1, 1, 4, stride=4, bias=False)    # tap (2a + a', 2b + b')
        self.chroma = nn.ConvTranspose2d(c + 1, chroma_weight.shape[0], 2, stride=2, bias=False)
        with torch.no_grad():
            self.luma.weight[:c, 0] = torch.einsum("pqf,fabk->kapbq", wh, w).reshape(c, 4, 4)
            self.luma.weight[c, 0] = (torch.einsum("pqf,fab->apbq", wh, b) + bh[None, :, None, :]).reshape(4, 4)
            self.chroma.weight[:c] = torch.einsum("of,fabk->koab", chroma_weight, w)
            self.chroma.weight[c] = torch.einsum("of,fab->oab", chroma_weight, b)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat((x, torch.ones_like(x[:, :1])), 1)
        return self.luma(x), self.chroma(x)


class FoldedSynthesis(nn.Module):
    """A synthesis whose luma tail is linear, with that tail as a LinearTail: (y_hat, uv_hat) -> (luma,
    chroma), as ``codec.blocks.Synthesis``."""

    def __init__(self, front: nn.Module, tail: LinearTail, chroma: nn.Module):
        super().__init__()
        self.front, self.tail, self.chroma = front, tail, chroma

    @classmethod
    def of(cls, synthesis: nn.Module) -> "FoldedSynthesis | None":
        """The folded form of a ``codec.blocks.Synthesis`` (its modules are reused), or None where its
        transforms do not offer a linear tail (``linear_tail``, ``luma_split``: student/presets.py)."""
        sy, suv = synthesis.synthesis_y, synthesis.synthesis_uv
        parts = getattr(sy, "linear_tail", lambda: None)()
        if parts is None or not hasattr(suv, "luma_split"):
            return None
        front, up, head = parts
        own, weight = suv.luma_split()
        return cls(front, LinearTail(up, head, weight), own)

    def forward(self, y_hat: torch.Tensor, uv_hat: torch.Tensor):
        luma, luma_term = self.tail(self.front(y_hat))
        return luma, self.chroma(uv_hat) + luma_term


def deploy_synthesis(model) -> nn.Module:
    """The synthesis as exported: ``codec.blocks.Synthesis`` (a copy) with a linear luma tail folded
    (FoldedSynthesis), its pixel shuffles folded into transposed convolutions (ShuffleUp) and its channel
    shuffles as gathers (ChannelPermute); the same function, faster in ONNX Runtime and croppable inside
    the graph."""
    syn = copy.deepcopy(Synthesis(model))
    syn = _fold_children(FoldedSynthesis.of(syn) or syn).eval()
    cfg = model.cfg
    return _resolve_shuffles(syn, torch.zeros(1, cfg.y_channels, 2, 2), torch.zeros(1, cfg.uv_channels, 2, 2)).eval()
