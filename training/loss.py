"""The rate-distortion loss every training command minimises.

    loss = lambda_q * 255^2 * D + bpp,   D in the scale of (6*MSE_Y + MSE_U + MSE_V)/8

Two distortions share that scale and differ in how they split the gradient between the planes:

- ``mse``: D = (6*MSE_Y + MSE_U + MSE_V)/8, the planes' MSE weighted 6:1:1.
- ``psnr``: the gradient of the evaluation metric, PSNR-YUV = (6*PSNR_Y + PSNR_U + PSNR_V)/8. Each plane's
  PSNR moves with the *relative* change of its MSE, so each plane's gradient is divided by its own
  (detached) MSE; the result is scaled by the ``mse`` value so the value, the logs and lambda keep their
  meaning. Chroma MSE is 2.5-5x below luma MSE at our rates (results/errors), so ``mse`` under-weights
  chroma by that much against the metric the codec is judged by.
"""
from __future__ import annotations

import torch

from codec.metrics import yuv_weighted

DISTORTIONS = ("mse", "psnr")


def plane_mses(out: dict, y: torch.Tensor, uv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample MSE of the Y, U and V planes of a forward's reconstruction (each shape [N])."""
    mse_y = ((out["y"] - y) ** 2).mean(dim=(1, 2, 3))
    mse_uv = ((out["uv"] - uv) ** 2).mean(dim=(2, 3))
    return mse_y, mse_uv[:, 0], mse_uv[:, 1]


def distortion(mse_y: torch.Tensor, mse_u: torch.Tensor, mse_v: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """Per-sample distortion D of the given kind (see the module docstring); its value is always the 6:1:1 MSE."""
    mse = yuv_weighted(mse_y, mse_u, mse_v)
    if kind == "mse":
        return mse
    if kind != "psnr":
        raise ValueError(f"unknown distortion {kind!r}; choose one of {', '.join(DISTORTIONS)}")
    floor = 1e-10
    rel = yuv_weighted(*(m / m.detach().clamp_min(floor) for m in (mse_y, mse_u, mse_v)))
    return mse.detach() * rel


def rd_loss(model, out: dict, y: torch.Tensor, uv: torch.Tensor, q: torch.Tensor, kind: str = "mse") -> dict:
    """Per-batch rate-distortion loss and its parts (bpp per luma pixel, PSNR-YUV estimate)."""
    n, _, h, w = y.shape
    mse_y, mse_u, mse_v = plane_mses(out, y, uv)
    d = distortion(mse_y, mse_u, mse_v, kind)
    if "bits" in out:  # the coded rate (value exact; see YUVCodec.forward)
        bits = sum(b.sum(dim=(1, 2, 3)) for b in out["bits"].values())
    else:
        bits = sum(-torch.log2(l.clamp_min(1e-9)).sum(dim=(1, 2, 3)) for l in out["likelihoods"].values())
    bpp = bits / (h * w)
    lam = torch.tensor(model.cfg.lambdas, device=y.device)[q]
    loss = (lam * 255 ** 2 * d + bpp).mean()
    mse = d.detach()
    psnr = (10 * torch.log10(1 / mse.clamp_min(1e-10))).mean()
    return {"loss": loss, "bpp": bpp.mean().detach(), "mse": mse.mean(), "psnr_yuv": psnr}
