"""Encoder effort levels: spend encoding time to find latents that the same decoder codes in fewer bits.

The amortized encoder (the analysis transforms) makes one guess per picture. With every weight fixed, the
latent ``y`` (luma and chroma) and the hyper-latent ``z`` of one picture can be optimised for the exact
rate-distortion cost of that picture (the approach of Campos et al. 2019 and Yang, Bamler & Mandt 2020,
"Improving Inference for Neural Image Compression"), and the result is an ordinary bitstream: the decoder,
the format and the weights do not change, so every decoder of these weights reads it.

    effort   iterations  time limit (768x512, one core)   what it is for
    fast     0           -                                 the challenge's encoder budget (the default)
    slow     up to 80    50 s                              everyday archiving
    max      up to 800   9 min                             publishing, benchmarks

Each iteration is one differentiable pass of the coder (``YUVCodec.coded_pass``: skip, checkerboard
context on decoded anchors, exact coded bits as the value with smooth gradients) and a backward pass.
Schedule (slow and max): every iteration rounds the latents by stochastic Gumbel annealing (a soft, random
floor/ceil choice whose temperature falls to a floor), with a cosine-decaying step; every few iterations
the iterate is coded exactly. The older schedule (uniform noise for the rate gradient, then straight-through
rounding) is kept as ``schedule="noise"`` for comparison. The best iterate by the exact objective is kept, so a refinement never returns worse latents than the
encoder's own (it starts from them).
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from .color import rgb_to_yuv420, yuv420_to_rgb
from .intnet import ste_round
from .metrics import yuv_weighted

REFERENCE_PIXELS = 768 * 512       # the time limits are for a picture of this size and scale with area


@dataclass(frozen=True)
class Effort:
    """How much encoding time to spend: an iteration cap and a time limit per REFERENCE_PIXELS."""

    name: str
    iterations: int
    time_limit_s: float
    lr: float = 0.1                # Adam step in quantisation steps of each element (gained latent)
    noise_fraction: float = 0.6    # share of iterations whose rate gradient comes from uniform noise
    exact_every: int = 5           # iterations between exact evaluations in the noise phase
    schedule: str = "noise"        # "noise": noise then straight-through; "sga": stochastic Gumbel annealing
    decay_all: bool = False        # cosine step decay over every iteration (else only in the exact phase)
    tau: tuple[float, float, float] = (0.5, 4.0, 0.02)   # SGA temperature: start, decay over the noise phase, floor
    distortion: str = "psnr"       # the objective's distortion (rd_cost): "psnr" the metric, "mse" the 6:1:1 MSE

    def time_limit(self, pixels: int) -> float:
        """Seconds allowed for a picture of ``pixels`` luma pixels."""
        return self.time_limit_s * max(1.0, pixels / REFERENCE_PIXELS)


# Tuned on the step-50,839 student-2k (kodim23, a 256x256 crop, q3; exact RD cost vs the encoder's own):
# the noise -> straight-through schedule at lr 0.05 never beat the encoder's latents (its uniform-noise rate
# proxy pulls them where the exact cost is worse; 800 iterations gave +0.00% BD-rate); SGA gave -2.5% cost at
# lr 0.01, -3.8% with the step decayed over every iteration, and -4.5% (80 iterations) / -6.4% (400) with
# the temperature held at >= 0.2: past that the Gumbel gradients get noisy and the iterates worse.
_SGA = dict(noise_fraction=1.0, schedule="sga", decay_all=True, tau=(0.5, 4.0, 0.2))
EFFORTS: dict[str, Effort | None] = {
    "fast": None,
    "slow": Effort("slow", iterations=80, time_limit_s=50.0, lr=0.02, **_SGA),
    "max": Effort("max", iterations=800, time_limit_s=540.0, lr=0.01, **_SGA),
}


def effort_level(name: str) -> Effort | None:
    """The effort level called ``name`` (None for fast); ValueError naming the levels otherwise."""
    if name not in EFFORTS:
        raise ValueError(f"unknown effort {name!r}; choose one of {', '.join(EFFORTS)}")
    return EFFORTS[name]


@contextlib.contextmanager
def _frozen(model):
    """Eval mode and no parameter gradients for the duration; restores both."""
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


def decoded_plane_mses(y_rec, uv_rec, y_plane, uv_plane, size: tuple[int, int]) -> tuple[torch.Tensor, ...]:
    """MSE of the Y, U and V planes of a decoded picture against the picture's, the way the metrics read a
    decoded file: the picture's own area, turned into 8-bit RGB (clamped, rounded straight-through) and back."""
    h, w = size
    hc, wc = (h + 1) // 2, (w + 1) // 2
    rgb = yuv420_to_rgb(y_rec[..., :h, :w], uv_rec[..., :hc, :wc])
    dec_y, dec_uv = rgb_to_yuv420(ste_round(rgb * 255) / 255)
    mse_y = ((dec_y - y_plane[..., :h, :w]) ** 2).mean()
    mse_uv = ((dec_uv - uv_plane[..., :hc, :wc]) ** 2).mean(dim=(0, 2, 3))
    return mse_y, mse_uv[0], mse_uv[1]


def decoded_mse(y_rec, uv_rec, y_plane, uv_plane, size: tuple[int, int]) -> torch.Tensor:
    """MSE-YUV (6 Y + U + V) / 8 of decoded planes against the picture's (``decoded_plane_mses``)."""
    mse_y, mse_u, mse_v = decoded_plane_mses(y_rec, uv_rec, y_plane, uv_plane, size)
    return yuv_weighted(mse_y, mse_u, mse_v)


def _psnr(mse: torch.Tensor) -> torch.Tensor:
    return 10 * torch.log10(1 / mse.detach().clamp_min(1e-10))


def rd_cost(model, out: dict, y_plane, uv_plane, q: int, size: tuple[int, int],
            scale: float | None = None) -> tuple[torch.Tensor, float, float]:
    """(cost, bpp, PSNR-YUV) of a coded pass as the decoder delivers it (``decoded_plane_mses``); PSNR-YUV is
    the metric's, (6 PSNR_Y + PSNR_U + PSNR_V) / 8. Cost: lambda_q * 255^2 * D + bpp, bpp from the coded bits,
    D the training loss's 6:1:1 MSE, or, given ``scale``, ``scale`` x (6 ln MSE_Y + ln MSE_U + ln MSE_V) / 8:
    minus PSNR-YUV up to constants, whose gradient where the MSE is ``scale`` is the training loss's ``psnr``
    distortion (training.loss) for this picture."""
    h, w = size
    mse_y, mse_u, mse_v = decoded_plane_mses(out["y"], out["uv"], y_plane, uv_plane, size)
    if scale is None:
        d = yuv_weighted(mse_y, mse_u, mse_v)
    else:
        d = scale * yuv_weighted(*(torch.log(m.clamp_min(1e-12)) for m in (mse_y, mse_u, mse_v)))
    bpp = sum(b.sum() for b in out["bits"].values()) / (h * w)
    cost = model.cfg.lambdas[q] * 255 ** 2 * d + bpp
    psnr = yuv_weighted(_psnr(mse_y), _psnr(mse_u), _psnr(mse_v))
    return cost, float(bpp.detach()), float(psnr)


@dataclass
class Refined:
    """What a refinement found: the best (latent, hyper-latent) by the exact objective, to pass to
    ``YUVCodec.compress_planes(..., latents=...)``; the iterations run, the seconds taken, one dict per
    exact evaluation (iteration, seconds, cost, bpp, PSNR-YUV) and the best latents so far at each of the
    requested ``keep_at`` iterations."""

    latents: tuple[torch.Tensor, torch.Tensor]
    iterations: int
    seconds: float
    history: list[dict] = field(default_factory=list)
    kept: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)


def sga_round(x: torch.Tensor, tau: float) -> torch.Tensor:
    """Stochastic Gumbel annealing (Yang, Bamler & Mandt 2020): a soft, random choice between floor and
    ceil whose odds grow with closeness; tends to hard rounding as ``tau`` -> 0."""
    lo = torch.floor(x)
    frac = (x - lo).clamp(1e-4, 1 - 1e-4)
    logits = torch.stack((-torch.atanh(frac), -torch.atanh(1 - frac)), -1) / tau
    weight = torch.nn.functional.gumbel_softmax(logits, tau=tau, hard=False)[..., 1]
    return lo + weight


def refine_latents(model, y_plane: torch.Tensor, uv_plane: torch.Tensor, q: int, effort: Effort,
                   size: tuple[int, int] | None = None, progress: bool = False,
                   keep_at: tuple[int, ...] = ()) -> Refined:
    """Optimise one picture's (latent, hyper-latent) for rate point ``q`` with every weight fixed.

    ``y_plane``/``uv_plane``: the padded planes the encoder codes; ``size``: the picture's own (h, w)
    (default: the planes')."""
    size = size or tuple(y_plane.shape[-2:])
    history, kept = [], {}
    qt = torch.tensor([q])
    start = time.monotonic()
    limit = effort.time_limit(size[0] * size[1])
    with _frozen(model):
        with torch.no_grad():
            latent0 = model._analyse(y_plane, uv_plane)
            z0 = model.hyper_analysis(latent0)
            gain = model._gain(qt)[0]
        # Optimise the gained latent, whose quantisation step is 1 in every channel.
        target = (latent0 * gain).clone().requires_grad_(True)
        z = z0.clone().requires_grad_(True)
        opt = torch.optim.Adam([target, z], lr=effort.lr)
        noise_iters = round(effort.noise_fraction * effort.iterations)

        def coded(t, zz):
            with torch.no_grad():
                return model.coded_pass(t / gain, zz, qt, noisy=False)

        out0 = coded(target, z)   # the encoder's own latents: the start, and psnr's scale
        scale = (float(decoded_mse(out0["y"], out0["uv"], y_plane, uv_plane, size))
                 if effort.distortion == "psnr" else None)

        def exact(t, zz):
            return rd_cost(model, coded(t, zz), y_plane, uv_plane, q, size, scale)

        cost, bpp, psnr = rd_cost(model, out0, y_plane, uv_plane, q, size, scale)
        best = (float(cost), latent0.clone(), z0.clone())
        _record(history, 0, start, cost, bpp, psnr)
        bar = tqdm(total=effort.iterations, desc=f"refine ({effort.name})", disable=not progress,
                   dynamic_ncols=True, leave=False)
        for it in range(1, effort.iterations + 1):
            noisy = it <= noise_iters
            for g in opt.param_groups:   # constant in the noise phase, cosine decay in the exact phase
                frac = (it / effort.iterations if effort.decay_all else
                        0.0 if noisy else (it - noise_iters) / max(1, effort.iterations - noise_iters))
                g["lr"] = effort.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
            if effort.schedule == "sga" and noisy:
                tau = max(effort.tau[0] * math.exp(-effort.tau[1] * it / max(1, noise_iters)), effort.tau[2])
                out = model.coded_pass(target / gain, z, qt, noisy=False, rounding=lambda v: sga_round(v, tau))
            else:
                out = model.coded_pass(target / gain, z, qt, noisy=noisy)
            loss, bpp, psnr = rd_cost(model, out, y_plane, uv_plane, q, size, scale)
            if not noisy or it % effort.exact_every == 0:
                # In the exact phase the loss is the exact cost of the current iterate; in the noise
                # phase it is not, so the iterate is evaluated apart.
                cost, bpp, psnr = (loss, bpp, psnr) if not noisy else exact(target, z)
                _record(history, it, start, cost, bpp, psnr)
                if float(cost.detach()) < best[0]:
                    best = (float(cost.detach()), (target / gain).detach().clone(), z.detach().clone())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            bar.update(1)
            bar.set_postfix(bpp=f"{bpp:.4f}", psnr=f"{psnr:.2f}")
            if it in keep_at:
                kept[it] = (best[1], best[2])
            if time.monotonic() - start > limit:
                break
        bar.close()
        cost, bpp, psnr = exact(target, z)
        _record(history, it, start, cost, bpp, psnr)
        if float(cost.detach()) < best[0]:
            best = (float(cost.detach()), (target / gain).detach().clone(), z.detach().clone())
    return Refined((best[1], best[2]), it, time.monotonic() - start, history, kept)


def _record(history, it, start, cost, bpp, psnr) -> None:
    if history is not None:
        history.append({"iteration": it, "seconds": round(time.monotonic() - start, 3),
                        "cost": float(cost.detach()), "bpp": bpp, "psnr_yuv": psnr})


@dataclass
class Ceiling:
    """What ``decoder_ceiling`` found: the best un-quantised latent and its MSE-YUV, and the encoder's."""

    latent: torch.Tensor
    mse: float
    encoder_latent: torch.Tensor
    encoder_mse: float
    seconds: float


def decode_latent(model, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(luma, chroma) planes the synthesis makes of ``latent`` as it stands (no quantisation, no rate)."""
    if model.pre_synthesis is not None or model.post_filter is not None:
        # their output depends on the predicted means too, which a latent alone does not fix
        raise ValueError(f"{model.name}: the decoder ceiling needs a model without a pre-synthesis or post-filter")
    return model._synthesize(*model._split(latent))


def decoder_ceiling(model, y_plane: torch.Tensor, uv_plane: torch.Tensor, iterations: int = 600, lr: float = 0.05,
                    size: tuple[int, int] | None = None, progress: bool = False) -> Ceiling:
    """The decoder's quality ceiling on one picture: the latent that minimises distortion alone (no
    quantisation, no rate term), found by Adam from the encoder's latent with every weight fixed (cosine
    step decay, the best iterate kept). A local optimum, so a lower bound on what the decoder can draw;
    the top rate points of the students stay below it. Where a model's curve stops gaining at high rates,
    this says whether the decoder is the limit."""
    size = size or tuple(y_plane.shape[-2:])
    start = time.monotonic()
    with _frozen(model):
        with torch.no_grad():
            latent0 = model._analyse(y_plane, uv_plane)
            mse0 = float(decoded_mse(*decode_latent(model, latent0), y_plane, uv_plane, size))
        mse, latent = descend(lambda t: decoded_mse(*decode_latent(model, t), y_plane, uv_plane, size),
                              latent0, iterations, lr, progress)
    return Ceiling(latent, mse, latent0, mse0, time.monotonic() - start)


def descend(objective, start: torch.Tensor, iterations: int, lr: float = 0.05,
            progress: bool = False) -> tuple[float, torch.Tensor]:
    """Minimise ``objective(x)`` over a tensor x from ``start`` by Adam with a cosine-decaying step;
    (best value, best x), the start among the candidates."""
    x = start.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr)
    best = (math.inf, start)
    for it in tqdm(range(iterations), desc="descend", disable=not progress, leave=False):
        for g in opt.param_groups:
            g["lr"] = lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * it / iterations)))
        value = objective(x)
        if float(value.detach()) < best[0]:   # the iterate that produced this value, before the step below
            best = (float(value.detach()), x.detach().clone())
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
    return best


def luma_stage_ceilings(model, y_plane: torch.Tensor, uv_plane: torch.Tensor, iterations: int = 400,
                        size: tuple[int, int] | None = None) -> dict[str, float] | None:
    """PSNR-Y that the luma synthesis reaches when the features at each of its stages (the latent, then
    each upsampling stage's output: ``synthesis_y.stage_features``) are optimised for distortion alone from
    the encoder's, weights fixed; None for a model whose luma synthesis does not expose its stages. Where
    the ceiling jumps between two stages, the narrow place of the decoder lies between them."""
    synthesis = model.synthesis_y
    if not hasattr(synthesis, "stage_features"):
        return None
    h, w = size or tuple(y_plane.shape[-2:])
    out = {}
    with _frozen(model):
        with torch.no_grad():
            stages = synthesis.stage_features(model._split(model._analyse(y_plane, uv_plane))[0])
        for i, (name, feat) in enumerate(stages):
            def mse(x, i=i):
                return ((synthesis.from_stage(i, x).clamp(0, 1) - y_plane)[..., :h, :w] ** 2).mean()
            best, _ = descend(mse, feat, iterations)
            out[f"{name} ({feat.shape[1]} ch)"] = 10 * math.log10(1 / max(best, 1e-12))
    return out
