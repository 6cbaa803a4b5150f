"""Numpy array helpers of the torch-free ONNX decoder (``export.runtime``): the checkerboard mask, the
2x2 phase layout that the pointwise networks are fed (``phases`` / ``unphase``), and the conversion of
decoded strips of luma and 4:2:0 chroma rows to 8-bit RGB (``strip_to_rgb``, BT.709 full range, the
same value for every pixel whatever the strip). Numpy only: like the rest of the decoder this module
must never import torch. ``export.runtime`` re-exports its public names.
"""
from __future__ import annotations

import numpy as np

from .color import CB_DIV, CR_DIV, KB, KG, KR


def checkerboard(h: int, w: int) -> np.ndarray:
    """1 x 1 x h x w float32 mask, 1 on anchors ((row + col) even)."""
    return ((np.arange(h)[:, None] + np.arange(w)[None, :]) % 2 == 0).astype(np.float32)[None, None]


def phases(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """1 x C x h x w -> (anchors, others), each 1 x C x h/2 x w: anchor phases (0,0) | (1,1) side by side,
    the others (0,1) | (1,0) (the position layout every pointwise network is fed)."""
    return (np.concatenate((x[:, :, 0::2, 0::2], x[:, :, 1::2, 1::2]), 3),
            np.concatenate((x[:, :, 0::2, 1::2], x[:, :, 1::2, 0::2]), 3))


def unphase(anchors: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Inverse of ``phases``."""
    n, c, h2, w = anchors.shape
    out = np.empty((n, c, 2 * h2, w), anchors.dtype)
    w2 = w // 2
    out[:, :, 0::2, 0::2], out[:, :, 1::2, 1::2] = anchors[..., :w2], anchors[..., w2:]
    out[:, :, 0::2, 1::2], out[:, :, 1::2, 0::2] = others[..., :w2], others[..., w2:]
    return out


def _chroma_rgb(cb: np.ndarray, cr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Chroma terms of R, G and B in 8-bit units, at chroma resolution, plus 0.5 for the rounding:
    R = 255 Y + dr, G = 255 Y + dg, B = 255 Y + db (BT.709 full range, ``export/color.py``)."""
    cr, cb = cr - np.float32(0.5), cb - np.float32(0.5)
    dr = cr * np.float32(255 * CR_DIV)
    dr += np.float32(0.5)
    db = cb * np.float32(255 * CB_DIV)
    db += np.float32(0.5)
    dg = cr * np.float32(-255 * KR * CR_DIV / KG)
    dg += cb * np.float32(-255 * KB * CB_DIV / KG)
    dg += np.float32(0.5)
    return dr, dg, db


def _up2(a: np.ndarray, axis: int) -> np.ndarray:
    """2x bilinear upsampling with half-pixel centres along ``axis`` (0 or 1; edges repeat the border
    sample): sample 2k = 0.75 a[k] + 0.25 a[k-1], 2k+1 = 0.75 a[k] + 0.25 a[k+1]."""
    q = a * np.float32(0.25)
    t = a - q                                  # = 0.75 a, rounded once
    n = a.shape[axis]
    shape = list(a.shape)
    shape[axis] *= 2
    out = np.empty(shape, np.float32)
    if axis == 1:
        a, q, t, out = a.T, q.T, t.T, out.T    # rows of the transposed views are the columns
    even, odd = out[0::2], out[1::2]
    if n > 1:
        np.add(t[1:], q[:-1], out=even[1:])
        np.add(t[:-1], q[1:], out=odd[:-1])
    np.add(t[:1], q[:1], out=even[:1])
    np.add(t[-1:], q[-1:], out=odd[-1:])
    return out.T if axis == 1 else out


def strip_to_rgb(y: np.ndarray, uv: np.ndarray, first: int) -> np.ndarray:
    """Rows of the picture -> 8-bit RGB (BT.709 full range, 4:2:0 chroma sited at the centre of each 2x2
    block, bilinear upsampling with half-pixel centres, rounded half up).

    ``y``: n x W luma rows [a0, a0 + n); ``uv``: 2 x m x ceil(W/2) chroma rows [u0, u0 + m) that include
    one row above and below the strip's own where the picture has them; ``first`` = a0 - 2 * u0, the
    strip's first row in the upsampled chroma. Every output pixel is computed the same way whatever the
    strip, so strips give the whole picture's values."""
    n, w = y.shape
    y255 = y * np.float32(255.0)
    out = np.empty((n, w, 3), np.uint8)
    for i, d in enumerate(_chroma_rgb(uv[0], uv[1])):
        d = _up2(_up2(d, 0)[first: first + n], 1)[:, :w]
        d += y255
        np.clip(d, 0.0, 255.0, out=d)
        out[..., i] = d                        # truncation: with the 0.5 added, rounds half up
    return out
