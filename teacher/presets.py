"""Teacher transforms in the shape of JPEG AI's VMuC 1st stage, and the ``teacher`` preset.

Luma branch at full resolution, chroma branch at half resolution (4:2:0), both latents on the H/16 grid;
a hyper encoder; hyper decoders for Y and UV; the integer hyper scale decoder; checkerboard mask-conv
context models; prediction fusion; chroma synthesis conditioned on luma features (ICCI).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from compressai.layers import GDN, CheckerboardMaskedConv2d

from codec.blocks import Fusion, conv, deconv
from codec.intnet import IntScaleDecoder
from codec.model import EntropyConfig, YUVCodec
from codec.registry import register


@dataclass(frozen=True)
class TeacherConfig:
    """Channel counts of the teacher (the preset is data; one builder makes every variant)."""

    n_y: int = 128          # luma transform width
    n_uv: int = 96          # chroma transform width
    m_y: int = 192          # luma latent channels
    m_uv: int = 64          # chroma latent channels
    n_hyper: int = 128      # hyper transform width
    z: int = 128            # hyper-latent channels
    hyper_out: int = 256    # hyper decoder feature channels (each of Y and UV)
    ctx: int = 256          # context feature channels (Y); UV uses half
    fusion: int = 320       # prediction fusion width
    scale_hidden: int = 96  # integer scale decoder width
    options: tuple[str, ...] = ()   # seed-paper modules (codec.modules), spelled in the name: teacher+hda


def _analysis(cin: int, n: int, m: int, stages: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    c = cin
    for _ in range(stages - 1):
        layers += [conv(c, n, 5, 2), GDN(n)]
        c = n
    layers.append(conv(c, m, 5, 2))
    return nn.Sequential(*layers)


class SynthesisY(nn.Module):
    """Luma synthesis: 4 transposed-conv upsamplings; also returns its H/2 features for ICCI."""

    def __init__(self, m: int, n: int):
        super().__init__()
        self.body = nn.Sequential(deconv(m, n), GDN(n, inverse=True), deconv(n, n), GDN(n, inverse=True),
                                  deconv(n, n), GDN(n, inverse=True))
        self.head = deconv(n, 1)

    def forward(self, yh: torch.Tensor):
        feat = self.body(yh)
        return self.head(feat), feat


class SynthesisUV(nn.Module):
    """Chroma synthesis: 3 upsamplings to H/2, then ICCI: fuse the luma features before the output."""

    def __init__(self, m: int, n: int, luma_feat: int, icci: int = 32):
        super().__init__()
        self.body = nn.Sequential(deconv(m, n), GDN(n, inverse=True), deconv(n, n), GDN(n, inverse=True),
                                  deconv(n, n), nn.LeakyReLU(inplace=True))
        self.icci = nn.Sequential(conv(n + luma_feat, icci, 1), nn.LeakyReLU(inplace=True), conv(icci, 2, 3))

    def forward(self, uvh: torch.Tensor, luma_feat: torch.Tensor):
        return self.icci(torch.cat((self.body(uvh), luma_feat), 1))


def _hyper_decoder(z: int, n: int, out: int) -> nn.Sequential:
    return nn.Sequential(deconv(z, n), nn.LeakyReLU(inplace=True), deconv(n, n * 3 // 2),
                         nn.LeakyReLU(inplace=True), conv(n * 3 // 2, out, 3))


def build_teacher(c: TeacherConfig) -> YUVCodec:
    """Assemble the teacher codec from a TeacherConfig."""
    m = c.m_y + c.m_uv
    transforms = {
        "analysis_y": _analysis(1, c.n_y, c.m_y, 4),
        "analysis_uv": _analysis(2, c.n_uv, c.m_uv, 3),
        "hyper_analysis": nn.Sequential(conv(m, c.n_hyper, 3), nn.LeakyReLU(inplace=True),
                                        conv(c.n_hyper, c.n_hyper, 5, 2), nn.LeakyReLU(inplace=True),
                                        conv(c.n_hyper, c.z, 5, 2)),
        "hyper_decoder_y": _hyper_decoder(c.z, c.n_hyper, c.hyper_out),
        "hyper_decoder_uv": _hyper_decoder(c.z, c.n_hyper, c.hyper_out // 2),
        "scale_decoder": IntScaleDecoder(c.z, c.scale_hidden, m),
        "context_y": CheckerboardMaskedConv2d(c.m_y, c.ctx, 5, padding=2),
        "context_uv": CheckerboardMaskedConv2d(c.m_uv, c.ctx // 2, 5, padding=2),
        "fusion_y": Fusion(c.hyper_out + c.ctx, c.fusion, c.m_y),
        "fusion_uv": Fusion(c.hyper_out // 2 + c.ctx // 2 + c.m_y, c.fusion // 2, c.m_uv),
        "synthesis_y": SynthesisY(c.m_y, c.n_y),
        "synthesis_uv": SynthesisUV(c.m_uv, c.n_uv, c.n_y),
    }
    cfg = EntropyConfig(y_channels=c.m_y, uv_channels=c.m_uv, z_channels=c.z)
    return YUVCodec(transforms, cfg, options=c.options)


@register("teacher")
def teacher(options: tuple[str, ...] = ()) -> YUVCodec:
    """The VMuC-style teacher at about 69 kMAC/px decode."""
    return build_teacher(TeacherConfig(options=tuple(options)))
