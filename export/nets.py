"""The float networks that become ONNX files: small wrappers with named inputs and outputs.

Every tensor is 1 x C x H/g x W/g, where H x W is the padded luma size (a multiple of 64) and g the
tensor's grid: 1 luma, 2 chroma, 16 latent, 64 hyper-latent; or 1 x C x 1 x 1 for one value per picture
(grid 0: the global context's offsets).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from codec.model import Synthesis, checkerboard

DECODER_NETS = ("hyper_decoder_y", "hyper_decoder_uv", "context_y", "context_uv", "fusion_y", "fusion_uv",
                "synthesis")
ENCODER_NETS = ("analysis", "hyper_analysis")
# The options whose modules export/ builds (codec.modules): gmm's mixture is only CDF tables, written like the
# Gaussian ones; its global context is one more decoder network (OPTION_NETS).
EXPORTABLE_OPTIONS = ("gmm",)
OPTION_NETS = {"gmm": ("global_context",)}


@dataclass(frozen=True)
class Port:
    """One named input or output of a network."""

    name: str
    channels: int
    grid: int

    def shape(self) -> list:
        """Manifest shape: batch 1, channels, then height and width as divisions of the padded luma size
        (1 x 1 for grid 0, one value per picture)."""
        if self.grid == 0:
            return [1, self.channels, 1, 1]
        return [1, self.channels] + ([f"H/{self.grid}", f"W/{self.grid}"] if self.grid > 1 else ["H", "W"])


@dataclass
class NetSpec:
    """A network to export: the module, its ports and which side of the codec runs it."""

    name: str
    module: nn.Module
    inputs: list[Port]
    outputs: list[Port]
    side: str


class Analysis(nn.Module):
    """Luma and chroma planes -> both latents."""

    def __init__(self, model):
        super().__init__()
        self.y, self.uv = model.analysis_y, model.analysis_uv

    def forward(self, y, uv):
        return self.y(y), self.uv(uv)


class HyperAnalysis(nn.Module):
    """Both latents -> the (unrounded) hyper-latent z."""

    def __init__(self, model):
        super().__init__()
        self.net = model.hyper_analysis

    def forward(self, latent_y, latent_uv):
        return self.net(torch.cat((latent_y, latent_uv), 1))


def decoder_nets(model) -> tuple[str, ...]:
    """The decoder networks of ``model``: the base ones, then its options' (``OPTION_NETS``)."""
    return DECODER_NETS + tuple(n for o in model.options for n in OPTION_NETS.get(o, ()))


class Fusion(nn.Module):
    """Prediction fusion with explicit inputs (the chroma one also reads the decoded luma latent).

    The first 1x1 convolution over the concatenated inputs is split into one convolution per input,
    summed: the same function, but an INT8 quantiser then gives each input its own activation scale
    (hyper features, context features and latents have very different ranges, and a single scale for
    their concatenation cost about 0.1 dB per fusion network on student-2k)."""

    def __init__(self, fusion, channels: list[int]):
        super().__init__()
        net = getattr(fusion, "net", None)
        first = net[0] if isinstance(net, nn.Sequential) else None
        if not (isinstance(first, nn.Conv2d) and first.kernel_size == (1, 1) and first.groups == 1
                and first.in_channels == sum(channels)):
            self.heads, self.net = None, fusion
            return
        self.heads = nn.ModuleList()
        start = 0
        for i, c in enumerate(channels):
            head = nn.Conv2d(c, first.out_channels, 1, bias=i == 0)
            with torch.no_grad():
                head.weight.copy_(first.weight[:, start: start + c])
                if i == 0 and first.bias is not None:
                    head.bias.copy_(first.bias)
                elif i == 0:
                    head.bias.zero_()
            self.heads.append(head)
            start += c
        self.net = net[1:]

    def forward(self, hyper, ctx, y_hat=None):
        xs = (hyper, ctx) if y_hat is None else (hyper, ctx, y_hat)
        if self.heads is None:
            return self.net(*xs)
        acc = self.heads[0](xs[0])
        for head, x in zip(self.heads[1:], xs[1:]):
            acc = acc + head(x)
        return self.net(acc)


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
    chroma), as ``codec.model.Synthesis``."""

    def __init__(self, front: nn.Module, tail: LinearTail, chroma: nn.Module):
        super().__init__()
        self.front, self.tail, self.chroma = front, tail, chroma

    @classmethod
    def of(cls, synthesis: nn.Module) -> "FoldedSynthesis | None":
        """The folded form of a ``codec.model.Synthesis`` (its modules are reused), or None where its
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
    """The synthesis as exported: ``codec.model.Synthesis`` (a copy) with a linear luma tail folded
    (FoldedSynthesis), its pixel shuffles folded into transposed convolutions (ShuffleUp) and its channel
    shuffles as gathers (ChannelPermute); the same function, faster in ONNX Runtime and croppable inside
    the graph."""
    syn = copy.deepcopy(Synthesis(model))
    syn = _fold_children(FoldedSynthesis.of(syn) or syn).eval()
    cfg = model.cfg
    return _resolve_shuffles(syn, torch.zeros(1, cfg.y_channels, 2, 2), torch.zeros(1, cfg.uv_channels, 2, 2)).eval()


def masked_conv(ctx: nn.Conv2d) -> nn.Conv2d:
    """A plain Conv2d with the checkerboard mask folded into its weights.

    compressai's CheckerboardMaskedConv2d multiplies ``weight.data`` by its mask inside forward, an
    in-place mutation that the exporter cannot trace; the masked weights give the same function."""
    conv = nn.Conv2d(ctx.in_channels, ctx.out_channels, ctx.kernel_size, ctx.stride, ctx.padding,
                     ctx.dilation, ctx.groups, ctx.bias is not None)
    mask = getattr(ctx, "mask", None)
    with torch.no_grad():
        conv.weight.copy_(ctx.weight * mask if mask is not None else ctx.weight)
        if ctx.bias is not None:
            conv.bias.copy_(ctx.bias)
    return conv.eval()


class PackedContext(nn.Module):
    """The checkerboard context computed on the half-resolution phase grid: 2.8x fewer MACs.

    The masked k x k convolution reads only anchors ((row + col) even) and its output is used only at the
    other positions. With the latent split into its four 2x2 phases, anchors are phases (0,0) and (1,1)
    and the outputs needed are phases (0,1) and (1,0); every unmasked tap maps to one anchor phase at an
    offset of at most ceil(k/4) half-resolution cells. So one plain convolution from the two anchor phases
    (2C channels) to the two output phases (2Cc channels) computes exactly the masked convolution's needed
    outputs (zero padding agrees because the latent sides are even). For k = 5: 2C x 2Cc x 3 x 3 per 2x2
    block instead of C x Cc x 25 per position.

    Same interface as the masked convolution (the anchor-masked latent in, the context out), with zeros at
    the anchors, where the decoder does not use the context."""

    def __init__(self, ctx: nn.Conv2d):
        super().__init__()
        w = ctx.weight.detach() * (ctx.mask if getattr(ctx, "mask", None) is not None else 1)
        cc, c, kh, kw = w.shape
        if kh != kw or kh % 2 == 0 or ctx.padding != (kh // 2, kw // 2) or ctx.stride != (1, 1) or ctx.groups != 1:
            raise ValueError("PackedContext needs an odd square 'same' convolution")
        p = kh // 2
        taps = {}
        for ky in range(kh):
            for kx in range(kw):
                if not bool(w[:, :, ky, kx].any()):
                    continue
                dy, dx = ky - p, kx - p
                if (dy + dx) % 2 == 0:
                    raise ValueError("context kernel is not a checkerboard mask (anchor-to-anchor tap)")
                for o, (py, px) in enumerate(((0, 1), (1, 0))):
                    qy = (py + dy) % 2
                    taps[(o, qy, (py + dy) // 2, (px + dx) // 2, ky, kx)] = None
        half = max([max(abs(t[2]), abs(t[3])) for t in taps] + [0])
        self.conv = nn.Conv2d(2 * c, 2 * cc, 2 * half + 1, padding=half, bias=ctx.bias is not None)
        with torch.no_grad():
            self.conv.weight.zero_()
            for o, q, oy, ox, ky, kx in taps:
                self.conv.weight[o * cc:(o + 1) * cc, q * c:(q + 1) * c, oy + half, ox + half] += w[:, :, ky, kx]
            if ctx.bias is not None:
                self.conv.bias.copy_(torch.cat((ctx.bias, ctx.bias)))
        self.cc = cc
        self.in_channels, self.out_channels = c, cc

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        h, w = latent.shape[-2:]
        # (sides are even; "0:h-1:2" has the same symbolic length as "1::2", which the exporter needs)
        out = self.conv(torch.cat((latent[:, :, 0:h - 1:2, 0:w - 1:2], latent[:, :, 1::2, 1::2]), 1))
        o01, o10 = out[:, : self.cc], out[:, self.cc:]
        z = torch.zeros_like(o01)
        n, c, h, w = o01.shape
        return F.pixel_shuffle(torch.stack((z, o01, o10, z), 2).reshape(n, 4 * c, h, w), 2)


def _channels(module: nn.Module, *xs: torch.Tensor) -> list[int]:
    with torch.no_grad():
        out = module(*xs)
    return [t.shape[1] for t in (out if isinstance(out, tuple) else (out,))]


def build_specs(model) -> dict[str, NetSpec]:
    """Every network of ``model`` to export, by file name (without .onnx)."""
    cfg = model.cfg
    my, muv, cz = cfg.y_channels, cfg.uv_channels, cfg.z_channels
    z = torch.zeros(1, cz, 2, 3)
    hy, hu = _channels(model.hyper_decoder_y, z)[0], _channels(model.hyper_decoder_uv, z)[0]
    cy, cu = model.context_y.out_channels, model.context_uv.out_channels
    pcy, pcu = PackedContext(model.context_y), PackedContext(model.context_uv)
    specs = [
        NetSpec("analysis", Analysis(model), [Port("y", 1, 1), Port("uv", 2, 2)],
                [Port("latent_y", my, 16), Port("latent_uv", muv, 16)], "encoder"),
        NetSpec("hyper_analysis", HyperAnalysis(model), [Port("latent_y", my, 16), Port("latent_uv", muv, 16)],
                [Port("z", cz, 64)], "encoder"),
        NetSpec("hyper_decoder_y", model.hyper_decoder_y, [Port("z", cz, 64)], [Port("hyper", hy, 16)], "decoder"),
        NetSpec("hyper_decoder_uv", model.hyper_decoder_uv, [Port("z", cz, 64)], [Port("hyper", hu, 16)],
                "decoder"),
        NetSpec("context_y", pcy, [Port("latent", my, 16)], [Port("ctx", cy, 16)], "decoder"),
        NetSpec("context_uv", pcu, [Port("latent", muv, 16)], [Port("ctx", cu, 16)], "decoder"),
        NetSpec("fusion_y", Fusion(model.fusion_y, [hy, cy]), [Port("hyper", hy, 16), Port("ctx", cy, 16)],
                [Port("mu", my, 16)], "decoder"),
        NetSpec("fusion_uv", Fusion(model.fusion_uv, [hu, cu, my]),
                [Port("hyper", hu, 16), Port("ctx", cu, 16), Port("y_hat", my, 16)], [Port("mu", muv, 16)],
                "decoder"),
        NetSpec("synthesis", deploy_synthesis(model), [Port("y_hat", my, 16), Port("uv_hat", muv, 16)],
                [Port("y", 1, 1), Port("uv", 2, 2)], "decoder"),
    ]
    if getattr(model, "global_context", None) is not None:
        # gmm (codec.modules.mixture.GlobalContext): z_hat -> per-channel offsets of the predicted means of
        # both latents (Y then UV), the spatial mean inside the graph; run once per picture on the whole z_hat.
        specs.append(NetSpec("global_context", model.global_context, [Port("z", cz, 64)],
                             [Port("offset", my + muv, 0)], "decoder"))
    for s in specs:
        s.module.eval()
    return {s.name: s for s in specs}


@torch.no_grad()
def net_inputs(model, y_plane: torch.Tensor, uv_plane: torch.Tensor, q: int) -> dict[str, list[dict]]:
    """Real inputs of every network for one padded picture, as the codec feeds them (numpy float32).

    The fusion networks get both checkerboard passes: zero context (anchors) and the anchor context, on
    every position (they are pointwise; the decoder feeds each pass only its own positions)."""
    st = model.encode_latents(y_plane, uv_plane, q)
    ly, luv = model.analysis_y(y_plane), model.analysis_uv(uv_plane)
    z = st["z"].float()
    yh, uvh = st["y_hat"], st["uv_hat"]
    anchor = checkerboard(*yh.shape[-2:])
    hy, hu = model.hyper_decoder_y(z), model.hyper_decoder_uv(z)
    cy = model.context_y(yh * anchor) * (1 - anchor)
    cu = model.context_uv(uvh * anchor) * (1 - anchor)
    samples = {
        "analysis": [{"y": y_plane, "uv": uv_plane}],
        "hyper_analysis": [{"latent_y": ly, "latent_uv": luv}],
        "hyper_decoder_y": [{"z": z}],
        "hyper_decoder_uv": [{"z": z}],
        "context_y": [{"latent": yh * anchor}],
        "context_uv": [{"latent": uvh * anchor}],
        "fusion_y": [{"hyper": hy, "ctx": torch.zeros_like(cy)}, {"hyper": hy, "ctx": cy}],
        "fusion_uv": [{"hyper": hu, "ctx": torch.zeros_like(cu), "y_hat": yh}, {"hyper": hu, "ctx": cu, "y_hat": yh}],
        "synthesis": [{"y_hat": yh, "uv_hat": uvh}],
    }
    if getattr(model, "global_context", None) is not None:
        samples["global_context"] = [{"z": z}]
    return {k: [{n: t.float().contiguous().numpy() for n, t in d.items()} for d in v] for k, v in samples.items()}
