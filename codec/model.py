"""The codec skeleton shared by every model: the entropy path lives here once.

A model is a set of transforms (given by teacher/ or student/) plugged into ``YUVCodec``:

    analysis_y, analysis_uv      luma (H x W) and 4:2:0 chroma (H/2 x W/2) -> latents on the H/16 grid
    hyper_analysis               both latents -> hyper-latent z on the H/64 grid
    hyper_decoder_y / _uv        z_hat -> features for the mean of each latent
    scale_decoder                z_hat -> scale INDEX of every latent element (integer network, exact)
    context_y / _uv              checkerboard masked convolution over already decoded anchor elements
    fusion_y / _uv               prediction fusion of hyper and context features -> mean mu
    synthesis_y / _uv            latents -> luma, and chroma conditioned on luma features (ICCI)

Options spelled in the model name (``student-2k+hda``, see codec.modules) add hook modules around these
(pre/post analysis, pre synthesis, post-filter, global context, training-time rounding); a model without
options has none of them, so its behaviour, bitstreams, state-dict keys and export are unchanged.

Entropy path (JPEG AI's deterministic split): z is coded with a factorized prior; each latent element is
coded as the zero-mean residual r = round(y*g - mu*g) with the Gaussian table picked by its integer scale
index (g: the rate point's gain vector); elements whose index is below ``skip_index`` are not coded
(y_hat = mu). The entropy decoder depends only on integers, so float differences between runtimes can
move the picture by a hair but can never desynchronise the bitstream.
The methods that write and read the streams (compress_planes, decompress_streams, ...) are in
codec/coding.py (``CodingMixin``, which ``YUVCodec`` inherits).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace

import torch
import torch.nn as nn
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from compressai.models import CompressionModel

from .coding import CodingMixin
from .entropy import LOG_STEP, SCALE_LEVELS, SCALE_MIN, make_scale_table
from .intnet import INPUT_MAX, INPUT_MIN, ste_round
from .rate import SymbolCost, proxy_bits, straight_through
from .rate_points import DEFAULT_RATE_POINTS, LAMBDA_LADDER, fit_gain_steps
from .rdoq import RDOQ_MU, ste_rd_round
from .scale_context import anchor_mask

FEATURE_LOSS_WEIGHT = 1.0   # seed 001 trains its feature enhancement loss with lambda_f = 1 (its Eq. 17)
SKIP_TEMPERATURE = 1.0      # width, in scale-index steps, of the soft skip gate's surrogate gradient
RATE_MODES = ("coded", "coded-ste", "noise", "noise-rd")

# Which side of the codec runs each transform (read by the profiler).
MODULE_ROLES = {
    "analysis_y": ("encoder",), "analysis_uv": ("encoder",), "hyper_analysis": ("encoder",),
    "hyper_decoder_y": ("encoder", "decoder"), "hyper_decoder_uv": ("encoder", "decoder"),
    "scale_decoder": ("encoder", "decoder"),
    "context_y": ("encoder", "decoder"), "context_uv": ("encoder", "decoder"),
    "fusion_y": ("encoder", "decoder"), "fusion_uv": ("encoder", "decoder"),
    "synthesis_y": ("decoder",), "synthesis_uv": ("decoder",),
    "entropy_bottleneck": (), "gaussian_conditional": (),
}
TRANSFORMS = tuple(k for k, sides in MODULE_ROLES.items() if sides)
# Hooks that options add (codec.modules); absent from a model without options.
HOOK_ROLES = {
    "pre_analysis": ("encoder",), "post_analysis": ("encoder",), "global_context": ("encoder", "decoder"),
    "pre_synthesis": ("decoder",), "post_filter": ("decoder",), "qecm": (), "scale_context": (),
}
MODULE_ROLES.update(HOOK_ROLES)


def fp32_region(t: torch.Tensor):
    """Context that turns autocast off (entropy models and the integer-grid net run in fp32); a no-op on
    devices without autocast, such as the profiler's meta tensors."""
    if t.device.type in ("cpu", "cuda"):
        return torch.autocast(t.device.type, enabled=False)
    return contextlib.nullcontext()


def _shifted(mean: torch.Tensor, offset: torch.Tensor | None) -> torch.Tensor:
    return mean if offset is None else mean + offset


def checkerboard(h: int, w: int, device=None) -> torch.Tensor:
    """1x1xhxw float mask, 1 on anchor positions ((row + col) even), decoded in the first pass."""
    return torch.from_numpy(anchor_mask(h, w)).to(device=device, dtype=torch.float32)[None, None]


@dataclass
class EntropyConfig:
    """Entropy-path settings shared by all models: latent sizes, rate points, skip threshold."""

    y_channels: int
    uv_channels: int
    z_channels: int
    lambdas: tuple[float, ...] = LAMBDA_LADDER[:DEFAULT_RATE_POINTS]
    skip_index: int = 5            # scale < ~0.2: not coded
    multiple: int = 64             # luma size the transforms need (z grid is H/64)


class YUVCodec(CodingMixin, CompressionModel):
    """A variable-rate YUV 4:2:0 learned codec with a deterministic integer entropy path (its bitstream
    half, compress_planes / decompress_streams and their helpers, comes from codec.coding.CodingMixin)."""

    def __init__(self, transforms: dict[str, nn.Module], cfg: EntropyConfig, name: str = "model",
                 options: tuple[str, ...] = ()):
        super().__init__()
        from .modules import build

        self.name, self.cfg = name, cfg
        hooks, entropy = build(transforms, cfg, options)
        self.options = tuple(options)
        for key in TRANSFORMS:
            setattr(self, key, transforms[key])
        self.entropy_bottleneck = EntropyBottleneck(cfg.z_channels)
        self.gaussian_conditional = entropy or GaussianConditional(make_scale_table())
        for key in HOOK_ROLES:
            setattr(self, key, hooks.get(key))
        m = cfg.y_channels + cfg.uv_channels
        q = len(cfg.lambdas)
        # Gain vectors in scale-index steps: gain = exp(LOG_STEP * round(steps)), so a gain shifts the
        # integer scale index by an exact integer. Initialised to spread the rate points.
        init = torch.linspace(-1.5, 1.5, q)[:, None].expand(q, m) / LOG_STEP
        self.gain_steps = nn.Parameter(init.clone())

    # ---- rate points -------------------------------------------------------------------------
    @property
    def num_qualities(self) -> int:
        return len(self.cfg.lambdas)

    def set_rate_points(self, n: int) -> "YUVCodec":
        """Use the first ``n`` rate points of ``LAMBDA_LADDER``; returns the model. New gain vectors continue
        the last two (in scale-index steps), so a trained model starts its new points near where they
        belong; surplus ones are dropped. Call it before an optimiser holds the parameters."""
        if not 2 <= n <= len(LAMBDA_LADDER):
            raise ValueError(f"rate points must be in 2..{len(LAMBDA_LADDER)}, got {n}")
        if n != self.num_qualities:
            self.gain_steps = nn.Parameter(fit_gain_steps(self.gain_steps.detach(), n),
                                           requires_grad=self.gain_steps.requires_grad)
            self.cfg = replace(self.cfg, lambdas=LAMBDA_LADDER[:n])
            self.__dict__.pop("frozen_id", None)
        return self

    def _gain(self, q: torch.Tensor):
        """Per-sample (gain, integer index offset) tensors of shape B x (My+Muv) x 1 x 1."""
        steps = ste_round(self.gain_steps[q])[..., None, None]
        return torch.exp(LOG_STEP * steps), steps

    def _split(self, t: torch.Tensor):
        return t[:, : self.cfg.y_channels], t[:, self.cfg.y_channels:]

    # ---- training forward ----------------------------------------------------------------------
    def forward(self, y_plane: torch.Tensor, uv_plane: torch.Tensor, q: torch.Tensor | int = 0,
                rate: str = "noise"):
        """Training/profiling pass -> reconstruction, likelihoods and side outputs.

        ``rate="coded"`` trains what is coded: the same two-pass reconstruction as the coder (skip
        applied, context on decoded anchors) and, in ``out["bits"]``, the bits the rANS coder would
        spend (value exact, gradient from the noisy likelihoods; skip through a soft gate);
        ``rate="coded-ste"`` takes the rate's gradient at the coded (rounded) values instead.
        ``rate="noise"`` is the classic pass: every element coded, uniform noise for the rates; in training
        its rate term's value is still the coded bits (``out["bits"]``), with the classic gradient;
        ``rate="noise-rd"`` rounds its residuals as the fast encoder does (RD rounding, straight-through)."""
        if rate not in RATE_MODES:
            raise ValueError(f"rate must be one of {RATE_MODES}, got {rate!r}")
        if isinstance(q, int):
            q = torch.full((y_plane.shape[0],), q, dtype=torch.long, device=y_plane.device)
        latent = self._analyse(y_plane, uv_plane)
        z = self.hyper_analysis(latent)
        if rate.startswith("noise"):
            out = self._forward_noise(latent, z, q, RDOQ_MU if rate == "noise-rd" and self.training else 0.0)
        else:
            out = self.coded_pass(latent, z, q, noisy=None if rate == "coded" else False, rdoq=RDOQ_MU)
        out["latent"], out["z"] = latent, z
        refined = out.pop("refined")
        if "fenm" in self.options:  # seed 001's feature loss, in quantisation steps of each element
            out["aux_loss"] = FEATURE_LOSS_WEIGHT * (((refined - latent) * self._gain(q)[0]) ** 2).mean()
        return out

    def coded_pass(self, latent: torch.Tensor, z: torch.Tensor, q: torch.Tensor, noisy: bool | None = None,
                   rounding=None, rdoq: float = 0.0) -> dict:
        """What the coder computes from a latent and its (unrounded) hyper-latent, differentiably:
        reconstruction as decoded (skip applied, context on decoded anchors) and, in ``out["bits"]``,
        the bits the rANS coder spends per element (value exact; gradient from the likelihoods, with
        uniform noise when ``noisy``, default: in training; skip through a soft gate). ``rounding``
        replaces the straight-through rounding of the residuals (e.g. annealed rounding in refinement);
        ``rdoq``: the bits counted are those of the encoder's RD rounding with that mu (codec/rdoq.py).
        Training (``rate="coded"``) and per-picture refinement (codec.refine) both use it."""
        noisy = self.training if noisy is None else noisy
        z_hat, z_lik, gain, index = self._hyper(z, q, noisy, coded=True)
        out = self._forward_coded(latent, z_hat, z_lik, gain, index, noisy, rounding, rdoq)
        out["scale_index"] = index
        return out

    def _hyper(self, z, q, noisy: bool, coded: bool = False):
        """Hyper-latent -> (z_hat, its likelihoods, gains, scale index with gradient). ``coded``: the
        likelihoods at z_hat itself (straight-through) unless ``noisy``, the way the coder rounds z."""
        with fp32_region(z):  # entropy models stay in fp32 under bf16
            z = z.float()
            z_hat = torch.clamp(ste_round(z), INPUT_MIN, INPUT_MAX)
            if coded:
                z_lik = self._z_likelihood(z + torch.rand_like(z) - 0.5 if noisy else z_hat)
            else:
                _, z_lik = self.entropy_bottleneck(z, training=noisy)
        gain, steps = self._gain(q)
        with fp32_region(z):  # the integer-grid net must not round in bf16
            index = torch.clamp(self.scale_decoder(z_hat) + steps, 0, SCALE_LEVELS - 1)
        return z_hat, z_lik, gain, index

    def _z_likelihood(self, values: torch.Tensor) -> torch.Tensor:
        """The hyper-latent's factorized likelihoods at ``values`` (B x C x h x w), with gradients."""
        b, c, h, w = values.shape
        lik, _, _ = self.entropy_bottleneck._likelihood(values.permute(1, 0, 2, 3).reshape(c, 1, -1))
        return lik.reshape(c, b, h, w).permute(1, 0, 2, 3)

    def _decode_latents(self, latent_hat, mean):
        """Decoded latents -> (luma, chroma) planes and the refined latent (training path)."""
        refined = self.pre_synthesis(latent_hat, mean) if self.pre_synthesis is not None else latent_hat
        y_rec, uv_rec = self._synthesize(*self._split(refined), mean)
        return {"y": y_rec, "uv": uv_rec, "latent_hat": latent_hat, "mean": mean, "refined": refined}

    def _forward_noise(self, latent, z, q, rdoq: float = 0.0):
        z_hat, z_lik, gain, index = self._hyper(z, q, self.training)
        rd = [ste_rd_round(i, self._symbol_cost("gaussian_conditional"), rdoq) if rdoq > 0 else None
              for i in self._split(index)]
        ly, luv = self._split(latent)
        scale = SCALE_MIN * torch.exp(LOG_STEP * index)
        # Skip is a hard decision with no gradient; this pass codes every element instead (an element
        # whose scale is tiny and residual zero costs ~0 bits either way) and evaluation applies it.
        skip = (index.detach() < self.cfg.skip_index) & (not self.training)
        anchor = checkerboard(*latent.shape[-2:], device=latent.device)
        g_y, g_uv = self._split(gain)
        s_y, s_uv = self._split(scale)
        k_y, k_uv = self._split(skip)
        o_y, o_uv = self._mean_offsets(z_hat)

        hy = self.hyper_decoder_y(z_hat)
        noisy_y = ly + (torch.rand_like(ly) - 0.5) / g_y if self.training else ly
        mu_y = _shifted(self.fusion_y(hy, self.context_y(noisy_y * anchor) * (1 - anchor)), o_y)
        yh, lik_y = self._quantize(ly, mu_y, g_y, s_y, k_y, rd[0])

        hu = self.hyper_decoder_uv(z_hat)
        noisy_uv = luv + (torch.rand_like(luv) - 0.5) / g_uv if self.training else luv
        mu_uv = _shifted(self.fusion_uv(hu, self.context_uv(noisy_uv * anchor) * (1 - anchor), yh), o_uv)
        uvh, lik_uv = self._quantize(luv, mu_uv, g_uv, s_uv, k_uv, rd[1])

        mean = torch.cat((mu_y, mu_uv), 1)
        out = self._decode_latents(torch.cat((yh, uvh), 1), mean)
        out["likelihoods"] = {"z": z_lik, "y": lik_y, "uv": lik_uv}
        out["scale_index"] = index
        if self.training:
            # The rate term's value is what the coder would spend on these symbols (skip applied); its
            # gradient stays the classic one (noise, every element): measure exactly, train smoothly.
            index_r, mug = index.detach(), mean.detach() * gain
            if rdoq == RDOQ_MU and self.scale_context is None:   # the forward rounded as the coder: read them back
                symbols = torch.round(torch.cat((yh, uvh), 1).detach() * gain - mug)
            else:
                symbols = self._rounded(latent.detach() * gain, mug, index_r, RDOQ_MU)
            exact = (self._symbol_cost("gaussian_conditional")(symbols, self._coded_index(symbols, index_r))
                     * (index_r >= self.cfg.skip_index))
            lik = torch.cat((lik_y, lik_uv), 1)
            bits = straight_through(exact, -torch.log2(lik.clamp_min(1e-9)))
            out["bits"] = {"z": self._z_bits(z_hat, z_lik), **dict(zip(("y", "uv"), self._split(bits)))}
        return out

    def _z_bits(self, z_hat, z_lik):
        """Per-element bits of the hyper-latent: the coder's as value, the likelihoods' gradient."""
        z_sym = torch.round(z_hat.detach()).long() - self._z_symbols_offset().to(z_hat.device)
        z_idx = torch.arange(self.cfg.z_channels, device=z_hat.device).view(1, -1, 1, 1).expand_as(z_sym)
        return straight_through(self._symbol_cost("entropy_bottleneck")(z_sym, z_idx), proxy_bits(z_lik))

    def _forward_coded(self, latent, z_hat, z_lik, gain, index, noisy, rounding, rdoq):
        skip_at = self.cfg.skip_index
        coded = (index.detach() >= skip_at).float()
        # Forward: the coder's hard skip. Backward: a logistic gate around the threshold, so that the
        # scale decoder learns which elements are worth coding (a hard skip alone gives it no gradient).
        soft = torch.sigmoid((index - skip_at + 0.5) / SKIP_TEMPERATURE)
        gate = coded + soft - soft.detach()
        target = latent.float() * gain
        if rounding is None:
            rounding = self.qecm if self.qecm is not None and self.training else ste_round
        parts = dict(zip(("y", "uv"), self._split(target)))
        residual, yh, uvh, mean = self._reconstruct(z_hat, gain, gate, lambda b, mug: rounding(parts[b] - mug))
        out = self._decode_latents(torch.cat((yh, uvh), 1), mean)

        # Rate of each element as if coded at no less than the skip threshold's scale: its exact bits
        # count where it is coded, and the gate's gradient weighs them where it is skipped.
        mug = mean.float() * gain
        symbols = self._rounded(target.detach(), mug.detach(), index.detach(), rdoq)
        index_c = torch.clamp(self._coded_index(symbols, index), min=skip_at)
        with fp32_region(target):  # noisy: the classic proxy; else at the coded value, straight-through
            values = target + torch.rand_like(target) - 0.5 if noisy else rounding(target - mug) + mug
            lik = self.gaussian_conditional._likelihood(values, SCALE_MIN * torch.exp(LOG_STEP * index_c), mug)
        bits = gate * straight_through(self._symbol_cost("gaussian_conditional")(symbols, index_c.detach()),
                                       proxy_bits(lik))
        out["bits"] = {"z": self._z_bits(z_hat, z_lik), **dict(zip(("y", "uv"), self._split(bits)))}
        out["likelihoods"] = {"z": z_lik, "y": lik[:, : self.cfg.y_channels], "uv": lik[:, self.cfg.y_channels:]}
        out["coded_fraction"] = coded.mean().detach()
        return out

    def _symbol_cost(self, entropy: str) -> SymbolCost:
        """Exact per-symbol costs of an entropy model's current CDF tables (built once per table set;
        a model without tables gets them built, as ``refresh_rate_tables`` does)."""
        model = getattr(self, entropy)
        if model._quantized_cdf.numel() == 0:
            self.refresh_rate_tables()
        key = (entropy, model._quantized_cdf.data_ptr(), tuple(model._quantized_cdf.shape))
        costs = self.__dict__.setdefault("_symbol_costs", {})
        if key not in costs:
            if len(costs) > 4:
                costs.clear()
            costs[key] = SymbolCost(model)
        return costs[key]

    def refresh_rate_tables(self) -> None:
        """Rebuild the CDF tables from the current entropy models (training calls this now and then: the
        hyper-latent's learned density moves). Coding and refinement never call it on trained weights:
        their saved tables are what every decoder uses."""
        self.update(force=True)

    def _analyse(self, y_plane, uv_plane):
        """Both analysis transforms (with the encoder-side option hooks) -> the concatenated latent."""
        if self.pre_analysis is not None:
            y_plane = self.pre_analysis(y_plane)
        latent = torch.cat((self.analysis_y(y_plane), self.analysis_uv(uv_plane)), 1)
        return self.post_analysis(latent) if self.post_analysis is not None else latent

    def _mean_offsets(self, z_hat):
        """Per-channel (Y, UV) offsets of the predicted means from the global context, or (None, None)."""
        if self.global_context is None:
            return None, None
        return self._split(self.global_context(z_hat))

    def _synthesize(self, yh, uvh, mean=None):
        """Decoded latents (already refined) -> planes, then the post-filter if there is one. Calls the
        children directly (not through Synthesis), so that the profiler attributes their MACs to them."""
        y, luma_feat = self.synthesis_y(yh)
        uv = self.synthesis_uv(uvh, luma_feat)
        if self.post_filter is not None:
            y, uv = self.post_filter(y, uv, mean)
        return y, uv

    def _quantize(self, lat, mu, gain, scale, skip, rounding=None):
        """Gained residual quantisation: (y_hat, likelihoods) with skip applied; ``rounding`` replaces the
        straight-through rounding (or the qecm option's)."""
        yg, mug = lat.float() * gain, mu.float() * gain
        with fp32_region(yg):
            _, lik = self.gaussian_conditional(yg, scale, means=mug)
        lik = torch.where(skip, torch.ones_like(lik), lik)
        if rounding is None:
            rounding = self.qecm if self.qecm is not None and self.training else ste_round
        r = torch.where(skip, torch.zeros_like(yg), rounding(yg - mug))
        return (r + mug) / gain, lik

    # ---- the coding path (shared by encoder and decoder) ----------------------------------------
    def _reconstruct(self, z_hat, gain, coded, residual_fn, offsets=None):
        """Run the two checkerboard passes for Y then UV; ``residual_fn(branch, mu_gained)`` supplies
        the integer residuals (computed by the encoder, read from the bitstream by the decoder), and
        ``coded`` (1 = coded, 0 = skipped; a gate with a gradient in training) multiplies them.
        ``offsets``: the global context's (Y, UV) mean offsets when computed already (on the whole z, for
        a band of it: codec/bands.py). Returns (residuals, y_hat, uv_hat, predicted mean)."""
        h, w = z_hat.shape[-2] * 4, z_hat.shape[-1] * 4
        anchor = checkerboard(h, w, device=z_hat.device)
        g_y, g_uv = self._split(gain)
        k_y, k_uv = self._split(coded)

        is_anchor = anchor[0, 0].bool()

        def fuse(fusion, where, *features):
            """Mean at the positions ``where`` only: a pointwise fusion runs on just those positions,
            so each pass costs half a dense pass; other fusions run densely."""
            if not getattr(fusion, "pointwise", False):
                return fusion(*features)
            packed = fusion(*(f[:, :, where].unsqueeze(2) for f in features)).squeeze(2)
            out = packed.new_zeros(packed.shape[0], packed.shape[1], h, w)
            out[:, :, where] = packed
            return out

        def two_pass(branch, hyper_decoder, ctx_model, fusion, g, k, offset, *extra):
            # Each intermediate is dropped once used: on a 12-Mpixel picture each is a 10-20 MB tensor.
            hyper = hyper_decoder(z_hat)
            zeros = torch.zeros(hyper.shape[0], ctx_model.out_channels, h, w, device=hyper.device)
            mug_a = _shifted(fuse(fusion, is_anchor, hyper, zeros, *extra), offset) * g * anchor
            del zeros
            r_a = k * residual_fn(branch, mug_a) * anchor
            ctx = ctx_model((r_a + mug_a) / g * anchor) * (1 - anchor)
            del r_a
            mug = torch.where(is_anchor, mug_a, _shifted(fuse(fusion, ~is_anchor, hyper, ctx, *extra), offset) * g)
            del hyper, ctx, mug_a
            r = k * residual_fn(branch, mug)
            return r, (r + mug) / g, mug / g

        o_y, o_uv = self._mean_offsets(z_hat) if offsets is None else offsets
        r_y, yh, mu_y = two_pass("y", self.hyper_decoder_y, self.context_y, self.fusion_y, g_y, k_y, o_y)
        r_uv, uvh, mu_uv = two_pass("uv", self.hyper_decoder_uv, self.context_uv, self.fusion_uv, g_uv, k_uv, o_uv, yh)
        return torch.cat((r_y, r_uv), 1), yh, uvh, torch.cat((mu_y, mu_uv), 1)

    def update(self, scale_table=None, force=False, update_quantiles=False):
        """Build the CDF tables (once, after training); they are then saved with the weights."""
        return super().update(scale_table=torch.tensor(make_scale_table()), force=force,
                              update_quantiles=update_quantiles)
