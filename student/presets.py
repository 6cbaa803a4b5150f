"""Student presets: data (widths, blocks, groups) turned into codecs by one builder.

Resolution ladder of the luma path: H -> H/2 -> H/4 -> H/8 -> H/16 (latent); chroma starts at H/2.
Each stage is a PixelUnshuffle/PixelShuffle resampler with a 1x1 conv, plus depthwise-separable blocks.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn as nn
from compressai.layers import CheckerboardMaskedConv2d

from codec.blocks import Fusion
from codec.intnet import IntScaleDecoder
from codec.model import EntropyConfig, YUVCodec
from codec.registry import register

from .blocks import DSBlock, down_stage, pointwise, up_stage


@dataclass(frozen=True)
class StudentConfig:
    """A student preset. ``widths_y`` are channel counts at H/2, H/4, H/8 (luma), ``widths_uv`` at
    H/4, H/8 (chroma); ``blocks`` the synthesis DSBlocks per stage (same ladder); ``latent_blocks`` run at
    H/16. The analysis side is kept lighter (``analysis_blocks``) because the encoder must also be 35x
    cheaper than the teacher's while it runs the entropy networks too."""

    m_y: int = 64
    m_uv: int = 24
    widths_y: tuple[int, int, int] = (16, 32, 64)
    widths_uv: tuple[int, int] = (16, 32)
    blocks: tuple[int, int, int] = (1, 1, 1)
    latent_blocks: int = 1
    analysis_blocks: tuple[int, int, int] = (0, 1, 1)
    analysis_widths: tuple[int, int, int] | None = None   # default: widths_y
    groups: int = 1
    kernel: int = 3
    asymmetric: bool = False
    z: int = 32
    hyper: int = 64
    ctx: int = 64
    fusion: int = 96
    scale_hidden: int = 32
    icci: int = 8
    options: tuple[str, ...] = ()   # seed-paper modules (codec.modules), spelled in the name: student-2k+hda


def _ladder_down(cin: int, widths, blocks, m: int, c: StudentConfig) -> nn.Sequential:
    stages, prev = [], cin
    for w, b in zip(widths, blocks):
        stages.append(down_stage(prev, w, b, 3, 1 if w < 32 else c.groups))
        prev = w
    stages.append(down_stage(prev, m, 0, 3, c.groups))
    return nn.Sequential(*stages)


class StudentSynthesisY(nn.Module):
    """Latent -> luma; also returns the H/2 features for the chroma branch (ICCI)."""

    def __init__(self, c: StudentConfig):
        super().__init__()
        w2, w4, w8 = c.widths_y
        b2, b4, b8 = c.blocks
        self.latent = nn.Sequential(*[DSBlock(c.m_y, c.kernel, c.groups, c.asymmetric) for _ in range(c.latent_blocks)])
        self.body = nn.Sequential(up_stage(c.m_y, w8, b8, c.kernel, c.groups, c.asymmetric),
                                  up_stage(w8, w4, b4, c.kernel, 1 if w4 < 32 else c.groups, c.asymmetric),
                                  up_stage(w4, w2, b2, c.kernel, 1, c.asymmetric))
        self.head = nn.Sequential(nn.Conv2d(w2, 4, 1), nn.PixelShuffle(2))

    def forward(self, yh: torch.Tensor):
        feat = self.body(self.latent(yh))
        return self.head(feat), feat

    def stage_features(self, yh: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
        """(name, features) at each stage of the luma path: the latent, then the output of each upsampling
        stage (H/8, H/4, H/2); ``from_stage(i, features)`` finishes the luma from the i-th of them."""
        feats, x = [("H/16 latent", yh)], self.latent(yh)
        for stage, name in zip(self.body, ("H/8", "H/4", "H/2")):
            x = stage(x)
            feats.append((name, x))
        return feats

    def from_stage(self, i: int, feat: torch.Tensor) -> torch.Tensor:
        """The luma plane from the features of stage ``i`` of ``stage_features``."""
        x = self.body(self.latent(feat)) if i == 0 else self.body[i:](feat)
        return self.head(x)

    def linear_tail(self) -> tuple[nn.Module, nn.Conv2d, nn.Conv2d] | None:
        """(front, up, head) when everything after the H/4 features is linear (the H/2 stage has no blocks):
        the H/2 features are ``up`` (a 1x1 convolution, then a 2x pixel shuffle) of front(latent) and the luma
        is ``head`` (the same) of those; None when the H/2 stage has blocks. The exporter folds such a tail
        into two small transposed convolutions (export/synthesis.py)."""
        last = self.body[-1]
        if len(last) != 2:
            return None
        return nn.Sequential(self.latent, *self.body[:-1]), last[0], self.head[0]


class StudentSynthesisUV(nn.Module):
    """Latent -> chroma at H/2, fusing a few luma feature channels before the output (ICCI)."""

    def __init__(self, c: StudentConfig):
        super().__init__()
        w4, w8 = c.widths_uv
        self.body = nn.Sequential(up_stage(c.m_uv, w8, 1, c.kernel), up_stage(w8, w4, 0, c.kernel),
                                  nn.Conv2d(w4, 4 * c.icci, 1), nn.PixelShuffle(2), nn.Hardswish())
        self.icci = nn.Conv2d(c.icci + c.widths_y[0], 2, 1)

    def forward(self, uvh: torch.Tensor, luma_feat: torch.Tensor):
        return self.icci(torch.cat((self.body(uvh), luma_feat), 1))

    def luma_split(self) -> tuple[nn.Module, torch.Tensor]:
        """(own, weight): the chroma is own(uv_hat) plus ``weight`` (2 x luma channels, no bias) applied
        as a 1x1 convolution to the luma features; the ICCI convolution split in two."""
        n = self.body[-3].out_channels // 4   # the chroma's own channels come first in the concatenation
        own = nn.Conv2d(n, self.icci.out_channels, 1)
        with torch.no_grad():
            own.weight.copy_(self.icci.weight[:, :n])
            own.bias.copy_(self.icci.bias)
        return nn.Sequential(self.body, own), self.icci.weight[:, n:, 0, 0].detach()


def _hyper_decoder(c: StudentConfig, out: int) -> nn.Sequential:
    return nn.Sequential(up_stage(c.z, c.hyper, 0), nn.Hardswish(), up_stage(c.hyper, out, 0), nn.Hardswish())


def build_student(c: StudentConfig) -> YUVCodec:
    """Assemble a student codec from its preset."""
    m = c.m_y + c.m_uv
    t = {
        "analysis_y": _ladder_down(1, c.analysis_widths or c.widths_y, c.analysis_blocks, c.m_y, c),
        "analysis_uv": _ladder_down(2, c.widths_uv, c.analysis_blocks[1:], c.m_uv, c),
        "hyper_analysis": nn.Sequential(down_stage(m, c.hyper, 0), nn.Hardswish(), down_stage(c.hyper, c.z, 0)),
        "hyper_decoder_y": _hyper_decoder(c, c.hyper),
        "hyper_decoder_uv": _hyper_decoder(c, c.hyper // 2),
        "scale_decoder": IntScaleDecoder(c.z, c.scale_hidden, m),
        "context_y": CheckerboardMaskedConv2d(c.m_y, c.ctx, 5, padding=2),
        "context_uv": CheckerboardMaskedConv2d(c.m_uv, c.ctx // 2, 5, padding=2),
        "fusion_y": Fusion(c.hyper + c.ctx, c.fusion, c.m_y, depth=2),
        "fusion_uv": Fusion(c.hyper // 2 + c.ctx // 2 + c.m_y, c.fusion // 2, c.m_uv, depth=2),
        "synthesis_y": StudentSynthesisY(c),
        "synthesis_uv": StudentSynthesisUV(c),
    }
    return YUVCodec(t, EntropyConfig(y_channels=c.m_y, uv_channels=c.m_uv, z_channels=c.z), options=c.options)


PRESETS = {
    "student-1k": StudentConfig(m_y=48, m_uv=16, widths_y=(12, 24, 48), widths_uv=(12, 24), blocks=(1, 1, 1),
                                z=24, hyper=48, ctx=32, fusion=64, scale_hidden=24, icci=6),
    "student-2k": StudentConfig(m_y=96, m_uv=32, widths_y=(20, 48, 96), widths_uv=(16, 32), blocks=(2, 2, 3),
                                latent_blocks=3, analysis_blocks=(0, 1, 1), analysis_widths=(16, 40, 80), groups=4,
                                z=32, hyper=96, ctx=48, fusion=128, scale_hidden=32),
    "student-4k": StudentConfig(m_y=128, m_uv=48, widths_y=(32, 64, 128), widths_uv=(24, 48), blocks=(2, 3, 3),
                                latent_blocks=3, analysis_blocks=(0, 1, 1), analysis_widths=(16, 40, 80), groups=4, kernel=5, asymmetric=True,
                                z=32, hyper=96, ctx=48, fusion=128, scale_hidden=32, icci=12),
}
# The seed-paper modules that paid their way inside the 2k budget (results/ablation.md): the Gaussian-mixture
# entropy model with global context, -2.1% BD-rate against student-2k for +0.00003 kMAC/px. A preset of its
# own, because student-2k's shipped weights are for the structure without it.
PRESETS["student-2k-gmm"] = replace(PRESETS["student-2k"], options=("gmm",))
# The same, deeper where the budgets leave room: one more analysis DSBlock at H/2, H/4 and H/8 and two more at H/8
# on the luma side (encoder 1.27 -> 1.53 kMAC/px, the 35x budget is 1.61), and two more synthesis blocks on the
# H/16 latent grid, where a block costs 12 MAC/px (decoder 1.953 -> 1.978 kMAC/px, budget 2.0). Its extra blocks
# start as identities on student-2k-gmm's weights (distill --init): the same function until they train.
# Measured: +0.0% vs the same training of student-2k-gmm after 4,500 CPU steps at lr 5e-5, its new blocks barely
# grown from zero (results/ablation_entropy_data_range.md); kept for a run at a higher rate or on a GPU.
PRESETS["student-2k-gmm-deep"] = replace(PRESETS["student-2k-gmm"], analysis_blocks=(1, 2, 3), latent_blocks=5)
# Twice the luma latent channels (96 -> 192 at H/16), paid for by the synthesis blocks at H/2 and one at H/4 and a
# narrower context model (decoder 1.970 kMAC/px, encoder 1.556). Why: at high rates student-2k-gmm's decoder is
# the limit, and its narrow place is the latent: optimised for distortion alone, the luma synthesis reaches
# 33.1 dB PSNR-Y from a free latent, 42.0 dB from free H/8 features and 63-69 dB from free H/4 or H/2 ones (mean
# of 14 crops; `python -m benchmarks ceiling --stages 300`, results/ceiling_stages). Trained from scratch.
PRESETS["student-2k-wide"] = replace(PRESETS["student-2k-gmm"], m_y=192, blocks=(0, 1, 3), ctx=32)

# A third more luma latent (192 -> 256 channels: as many latent values as luma pixels, so the transform can be
# complete), paid for by a narrower context model (32 -> 16 features), one latent block and one H/8 block fewer
# (decoder 1.972 kMAC/px, encoder 1.598). Why: with the wide model the latent is still the narrow place at high
# rates (39.6 dB PSNR-Y from a free latent, 52.0 from free H/8 features; results/ceiling_wide), and training only
# its upper four rate points moved them by 0.1 point (results/rd_upper_only: sharing the transform with the low
# rates is not what caps them).
# It grows from student-2k-wide's weights (python -m distill.grow), the old channels kept in place.
PRESETS["student-2k-wide256"] = replace(PRESETS["student-2k-wide"], m_y=256, ctx=16, latent_blocks=2, blocks=(0, 1, 2))

for _name, _cfg in PRESETS.items():
    register(_name)(lambda options=(), _cfg=_cfg: build_student(replace(_cfg, options=_cfg.options + tuple(options))))
