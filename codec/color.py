"""RGB <-> YCbCr BT.709 (full range) and 4:2:0 chroma resampling.

Chroma siting: each chroma sample sits at the centre of its 2x2 luma block (JPEG / MPEG-1 siting).
Downsampling is the 2x2 box average; upsampling is bilinear interpolation with half-pixel centres
(``align_corners=False``), which is the interpolation consistent with that siting.
Odd widths or heights are edge-replicated to even before downsampling; ``yuv420_to_rgb`` crops back.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

KR, KB = 0.2126, 0.0722
KG = 1.0 - KR - KB
CB_DIV = 2.0 * (1.0 - KB)  # 1.8556
CR_DIV = 2.0 * (1.0 - KR)  # 1.5748


def rgb_to_ycbcr(rgb: torch.Tensor) -> torch.Tensor:
    """Convert Bx3xHxW RGB in [0, 1] to YCbCr 4:4:4 in [0, 1] (chroma centred on 0.5)."""
    r, g, b = rgb.unbind(1)
    y = KR * r + KG * g + KB * b
    cb = (b - y) / CB_DIV + 0.5
    cr = (r - y) / CR_DIV + 0.5
    return torch.stack((y, cb, cr), 1)


def ycbcr_to_rgb(ycc: torch.Tensor) -> torch.Tensor:
    """Convert Bx3xHxW YCbCr 4:4:4 in [0, 1] back to RGB (not clamped)."""
    y, cb, cr = ycc.unbind(1)
    r = y + CR_DIV * (cr - 0.5)
    b = y + CB_DIV * (cb - 0.5)
    g = (y - KR * r - KB * b) / KG
    return torch.stack((r, g, b), 1)


def downsample_chroma(c: torch.Tensor) -> torch.Tensor:
    """2x2 box-average Bx2xHxW chroma to Bx2xceil(H/2)xceil(W/2)."""
    h, w = c.shape[-2:]
    c = F.pad(c, (0, w % 2, 0, h % 2), mode="replicate")
    return F.avg_pool2d(c, 2)


def upsample_chroma(c: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear 2x upsampling of chroma, cropped to the luma ``size`` (H, W)."""
    h2, w2 = c.shape[-2:]
    up = F.interpolate(c, size=(2 * h2, 2 * w2), mode="bilinear", align_corners=False)
    return up[..., : size[0], : size[1]]


def rgb_to_yuv420(rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split Bx3xHxW RGB in [0, 1] into luma Bx1xHxW and 4:2:0 chroma Bx2x(H/2)x(W/2)."""
    ycc = rgb_to_ycbcr(rgb)
    return ycc[:, :1], downsample_chroma(ycc[:, 1:])


def yuv420_to_rgb(y: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Rebuild Bx3xHxW RGB (clamped to [0, 1]) from luma and 4:2:0 chroma."""
    uv_full = upsample_chroma(uv, y.shape[-2:])
    return ycbcr_to_rgb(torch.cat((y, uv_full), 1)).clamp(0.0, 1.0)


def to_tensor(image_u8) -> torch.Tensor:
    """HxWx3 uint8 numpy array -> 1x3xHxW float tensor in [0, 1]."""
    return torch.from_numpy(image_u8).permute(2, 0, 1).unsqueeze(0).float().div(255.0)


def to_uint8(rgb: torch.Tensor):
    """1x3xHxW float tensor in [0, 1] -> HxWx3 uint8 numpy array (rounded)."""
    return rgb.clamp(0, 1).mul(255.0).round().byte().squeeze(0).permute(1, 2, 0).numpy()
