"""YCbCr 4:2:0 -> RGB in numpy, a port of ``codec.color`` (BT.709 full range, centre-sited chroma)."""
from __future__ import annotations

import numpy as np

KR, KB = 0.2126, 0.0722
KG = 1.0 - KR - KB
CB_DIV = 2.0 * (1.0 - KB)
CR_DIV = 2.0 * (1.0 - KR)


def upsample_chroma(c: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear 2x upsampling with half-pixel centres (torch's align_corners=False), cropped to ``size``.

    Output sample 2k sits at source k - 1/4 and 2k+1 at k + 1/4; the edges repeat the border sample."""
    def up(a: np.ndarray, axis: int) -> np.ndarray:
        n = a.shape[axis]
        prev = np.take(a, np.r_[0, np.arange(n - 1)], axis=axis)
        nxt = np.take(a, np.r_[np.arange(1, n), n - 1], axis=axis)
        even = np.float32(0.75) * a + np.float32(0.25) * prev
        odd = np.float32(0.75) * a + np.float32(0.25) * nxt
        out = np.stack((even, odd), axis=axis + 1)
        shape = list(a.shape)
        shape[axis] *= 2
        return out.reshape(shape)

    return up(up(c, 1), 2)[:, : size[0], : size[1]]


def yuv420_to_rgb(y: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Luma H x W and chroma 2 x ceil(H/2) x ceil(W/2), floats in [0, 1] -> H x W x 3 uint8 RGB."""
    cb, cr = upsample_chroma(uv.astype(np.float32), y.shape)
    y = y.astype(np.float32)
    r = y + np.float32(CR_DIV) * (cr - np.float32(0.5))
    b = y + np.float32(CB_DIV) * (cb - np.float32(0.5))
    g = (y - np.float32(KR) * r - np.float32(KB) * b) / np.float32(KG)
    rgb = np.clip(np.stack((r, g, b), -1), 0.0, 1.0)
    return np.round(rgb * np.float32(255.0)).astype(np.uint8)
