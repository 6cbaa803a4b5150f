"""The float networks that become ONNX files: small wrappers with named inputs and outputs.

Every tensor is 1 x C x H/g x W/g, where H x W is the padded luma size (a multiple of 64) and g the
tensor's grid: 1 luma, 2 chroma, 16 latent, 64 hyper-latent; or 1 x C x 1 x 1 for one value per picture
(grid 0: the global context's offsets).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from codec.model import checkerboard

from .synthesis import deploy_synthesis

DECODER_NETS = ("hyper_decoder_y", "hyper_decoder_uv", "context_y", "context_uv", "fusion_y", "fusion_uv",
                "synthesis")
ENCODER_NETS = ("analysis", "hyper_analysis")
# The options whose modules export/ builds (codec.modules): gmm's mixture is only CDF tables, written like the
# Gaussian ones; its global context is one more decoder network (OPTION_NETS). ctxscale is an integer table
# (scale_context.npz, export/tables.py), run by the same numpy code as the torch coder (codec/scale_context.py).
EXPORTABLE_OPTIONS = ("gmm", "ctxscale")
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
