"""Quality metrics: PSNR on RGB, PSNR on YUV weighted (6*Y + U + V)/8 as JPEG AI reports it, MS-SSIM."""
from __future__ import annotations

import math

import numpy as np
import torch

from .color import rgb_to_yuv420

YUV_WEIGHTS = (6, 1, 1)   # Y:U:V, as JPEG AI weighs the planes of 4:2:0 YUV


def yuv_weighted(y, u, v):
    """(6*y + u + v) / 8: a per-plane figure (PSNR, MSE, log-MSE) weighted the way PSNR-YUV weighs its planes."""
    wy, wu, wv = YUV_WEIGHTS
    return (wy * y + wu * u + wv * v) / (wy + wu + wv)


def psnr(a: torch.Tensor, b: torch.Tensor, peak: float = 1.0) -> float:
    """PSNR in dB between two tensors of the same shape with values in [0, peak]."""
    mse = torch.mean((a.double() - b.double()) ** 2).item()
    return float("inf") if mse == 0 else 10.0 * math.log10(peak * peak / mse)


def _as_float(img) -> torch.Tensor:
    if isinstance(img, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).unsqueeze(0).double() / 255.0
    return img.double()


def psnr_rgb(ref, test) -> float:
    """PSNR over the three RGB channels of two images (uint8 HxWx3 arrays or 1x3xHxW tensors in [0, 1])."""
    a, b = _as_float(ref), _as_float(test)
    # Quantise to 8 bits as a file would, so that the figure is that of the decoded PNG.
    return psnr((a * 255).round(), (b * 255).round(), 255.0)


def psnr_yuv_planes(ref_yuv, test_yuv) -> tuple[float, float, float, float]:
    """Return (weighted, Y, U, V) PSNR for two (luma, 4:2:0 chroma) pairs; weights 6:1:1."""
    (ry, ruv), (ty, tuv) = ref_yuv, test_yuv
    py = psnr(ry, ty)
    pu = psnr(ruv[:, :1], tuv[:, :1])
    pv = psnr(ruv[:, 1:], tuv[:, 1:])
    return yuv_weighted(py, pu, pv), py, pu, pv


def psnr_yuv(ref, test) -> float:
    """PSNR-YUV (6*Y + U + V)/8 in BT.709 4:2:0 of two RGB images (arrays or tensors)."""
    a, b = _as_float(ref).float(), _as_float(test).float()
    return psnr_yuv_planes(rgb_to_yuv420(a), rgb_to_yuv420(b))[0]


def ms_ssim_rgb(ref, test) -> float:
    """MS-SSIM (pytorch-msssim, data range 1) of two RGB images; small images use fewer scales' window."""
    from pytorch_msssim import ms_ssim

    a, b = _as_float(ref).float(), _as_float(test).float()
    # pytorch-msssim needs the short side > (win_size - 1) * 2**4; shrink the window for small images.
    side = min(a.shape[-2:])
    win = 11
    while win > 3 and side <= (win - 1) * 16:
        win -= 2
    if side <= (win - 1) * 16:
        return float("nan")
    return float(ms_ssim(a, b, data_range=1.0, win_size=win).item())
