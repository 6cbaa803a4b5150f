"""The seed papers' modules as options of any model, switched on by spelling them in its name:
``create_model("student-2k+hda+gmm")``. Each option is measured by ``python -m benchmarks ablation``.

Where each option acts (hooks of :class:`codec.model.YUVCodec`, absent unless an option adds them):

    pre_analysis     encoder   luma plane -> luma plane, before analysis_y          (subimg)
    post_analysis    encoder   analysis latent -> latent                             (hda, sa)
    pre_synthesis    decoder   decoded latent (+ predicted mean) -> latent            (liq, fenm, hda, sa)
    post_filter      decoder   decoded planes (+ predicted mean) -> planes            (pp, qe)
    global_context   both      z_hat -> per-channel offset of the predicted means     (gmm)
    qecm             training  rounding of the coded residual in training only        (qecm)
    scale_context    both      decoded anchor residuals -> the non-anchors' scale index (ctxscale)

and inside the transforms: hybrid attention appended to both hyper decoders (hda), asymmetric
convolution blocks replacing square convolutions (acb), the mixture entropy model replacing the
Gaussian one (gmm). No option lets a float computed per picture reach the scale index or the
probability tables, so every option keeps bitstreams decodable across runtimes.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ..entropy import make_scale_table
from .attention import ChannelSelfAttention, HybridAttention
from .enhancement import DenseEnhance, LatentChain, PostFilter
from .mixture import GlobalContext, MixtureConditional
from .scale_table import ScaleContextTable
from .quantization import FourierRounding, LearnedDequant, make_asymmetric
from .subimage import SubImageRefiner


@dataclass(frozen=True)
class Option:
    """What an option is, where it comes from, and what its paper claims for it (quoted, with metric)."""

    title: str
    paper: str
    claim: str
    note: str = ""
    training_only: bool = False    # no inference cost: only training changes


OPTIONS: dict[str, Option] = {
    "hda": Option("hybrid-domain attention (channel + spatial) in the transforms and the entropy model",
                  "000 (thesis: hybrid attention, mixed quantization, mean-aided post-processing)",
                  "\"approximately 0.2 dB\" PSNR at 0.2 bpp",
                  "gates on the analysis output, the synthesis input and both hyper decoders' outputs, all on "
                  "the H/16 grid, hence nearly free"),
    "liq": Option("mixed quantization with a learned inverse-quantization module",
                  "000", "\"0.18 dB\" PSNR at 0.2 bpp",
                  "mixed quantization itself is already the baseline's training (straight-through rounding "
                  "for the synthesis path, uniform noise for the rates); this row adds the learned inverse "
                  "quantization (grouped 1x1 on value and mean)"),
    "pp": Option("post-processing enhancement with the predicted mean as side information",
                 "000", "\"0.2 dB\" PSNR at 0.2 bpp (all three of 000's mechanisms: \"approximately 0.35 dB\")",
                 "post-filter at H/2; the mean enters through a 1x1 conv and a pixel shuffle"),
    "subimg": Option("sub-image feature extraction (FExM) + 3-D attention refinement (FRM)",
                     "001 (interleaved block-based LIC)", "BD-rate -1.1% (PSNR, Kodak, Table V: +FExM+FRM)",
                     "encoder only: 3-D convolutions over the 4 luma sub-images at H/2"),
    "fenm": Option("feature enhancement module (dense block) with its feature loss",
                   "001", "BD-rate -1.4% (PSNR, Kodak, Table V: -1.1% -> -2.5%)",
                   "one dense block on the decoded latent; feature loss weight 1"),
    "qecm": Option("quantization error compensation (Fourier-series rounding in training)",
                   "001", "BD-rate -1.1% (PSNR, Kodak, Table V: -2.5% -> -3.6%)",
                   "training only; the test-time Laplacian noise is left out (decoding would be random)",
                   training_only=True),
    "gmm": Option("Gaussian-mixture entropy model (K=3) with global context",
                  "002 (JointIQ-Net)", "no figure in the seed text: \"significant gains from ... GMM; global "
                  "context yields additional improvements\"",
                  "global K=3 mixture shape baked into one table per scale level (deterministic); the global "
                  "context moves the float means"),
    "qe": Option("quality-enhancement network trained jointly with the codec",
                 "002", "no figure in the seed text: \"significant gains from GRDN\"",
                 "the same post-filter without side information (JointIQ's GRDN is far larger)"),
    "acb": Option("asymmetric convolution blocks (1xk + kx1 branches folded into kxk)",
                  "004 (graph attention + ACNN)", "no per-module figure in the seed text (abstract: "
                  "state of the art on MS-SSIM)",
                  "training only: the three kernels sum into the kxk one (no BN between them, unlike ACNet)",
                  training_only=True),
    "sa": Option("self-attention block for long-range dependencies in the latent",
                 "004", "no per-module figure in the seed text (abstract: state of the art on MS-SSIM)",
                 "channel (transposed) attention over the whole latent at the analysis output and the "
                 "synthesis input"),
    "ctxscale": Option("context-adaptive scale index: a fitted integer table over the decoded residuals of the "
                       "four anchor neighbours moves each non-anchor element's probability table",
                       "ours (codec/scale_context.py)", "no paper: measured in results/scale_context.md",
                       "no MACs: an integer table lookup on the latent grid; fitted on a trained model "
                       "(python -m distill.scale_context), the identity until then"),
}

# Order of the modules on the decoded latent: dequantise first, then enhance, then attend.
_PRE_SYNTHESIS = ("liq", "fenm", "hda", "sa")


def check_options(options) -> tuple[str, ...]:
    """The options as a tuple; KeyError (listing the known ones) for an unknown one, ValueError for a
    repeated one or two that take the same place."""
    options = tuple(options)
    unknown = [o for o in options if o not in OPTIONS]
    if unknown:
        raise KeyError(f"unknown model option {', '.join(map(repr, unknown))}; known: {', '.join(OPTIONS)}")
    if len(set(options)) != len(options):
        raise ValueError(f"model option given twice in {'+'.join(options)}")
    if {"pp", "qe"} <= set(options):
        raise ValueError("options pp and qe are both a post-filter: pick one")
    return options


def _out_channels(module: nn.Module, z_channels: int) -> int:
    with torch.no_grad():
        return module(torch.zeros(1, z_channels, 1, 1)).shape[1]


def build(transforms: dict[str, nn.Module], cfg, options) -> tuple[dict[str, nn.Module], nn.Module | None]:
    """Apply ``options`` to a model's transforms (in place) and make its hooks.

    Returns ({hook name: module}, the entropy model replacing the Gaussian conditional or None)."""
    options = check_options(options)
    m = cfg.y_channels + cfg.uv_channels
    hooks: dict[str, nn.Module] = {}
    if "acb" in options:   # first, so that only the transforms' own convolutions change
        for key in ("analysis_y", "analysis_uv", "hyper_analysis", "hyper_decoder_y", "hyper_decoder_uv",
                    "synthesis_y", "synthesis_uv"):
            make_asymmetric(transforms[key])
    if "hda" in options:
        for key in ("hyper_decoder_y", "hyper_decoder_uv"):
            transforms[key].append(HybridAttention(_out_channels(transforms[key], cfg.z_channels)))
    encoder_side = {"hda": HybridAttention, "sa": ChannelSelfAttention}
    post = LatentChain({o: encoder_side[o](m) for o in options if o in encoder_side})
    decoder_side = {"liq": LearnedDequant, "fenm": DenseEnhance, **encoder_side}
    pre = LatentChain({o: decoder_side[o](m) for o in _PRE_SYNTHESIS if o in options})
    if len(post):
        hooks["post_analysis"] = post
    if len(pre):
        hooks["pre_synthesis"] = pre
    if "subimg" in options:
        hooks["pre_analysis"] = SubImageRefiner()
    if "pp" in options or "qe" in options:
        hooks["post_filter"] = PostFilter(m, use_mean="pp" in options)
    if "qecm" in options:
        hooks["qecm"] = FourierRounding()
    if "ctxscale" in options:
        hooks["scale_context"] = ScaleContextTable()
    entropy = None
    if "gmm" in options:
        hooks["global_context"] = GlobalContext(cfg.z_channels, m)
        entropy = MixtureConditional(make_scale_table())
    return hooks, entropy
