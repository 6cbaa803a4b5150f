"""The integer hyper scale decoder in numpy: the same integers as ``codec.intnet.IntScaleDecoder.int_forward``.

Arithmetic runs on float64 carriers, where every product and partial sum is an integer below 2**53
and therefore exact whatever the BLAS kernel or summation order (see codec/intnet.py).
"""
from __future__ import annotations

import numpy as np


def im2col(x: np.ndarray, k: int) -> np.ndarray:
    """C x H x W -> (C*k*k) x (H*W) with zero 'same' padding, rows ordered like torch's unfold."""
    c, h, w = x.shape
    p = k // 2
    xp = np.pad(x, ((0, 0), (p, p), (p, p)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(1, 2))   # C, H, W, k, k
    return np.ascontiguousarray(win.transpose(0, 3, 4, 1, 2)).reshape(c * k * k, h * w)


def pixel_shuffle(x: np.ndarray, r: int) -> np.ndarray:
    """(C*r*r) x H x W -> C x (H*r) x (W*r), torch's PixelShuffle order."""
    c, h, w = x.shape
    c //= r * r
    return x.reshape(c, r, r, h, w).transpose(0, 3, 1, 4, 2).reshape(c, h * r, w * r)


class IntScaleDecoder:
    """Loaded from ``scale_decoder.npz``: int8 weights, int32 biases, shifts, ReLU flags, pixel shuffles."""

    def __init__(self, arrays, input_min: int = -128, input_max: int = 127, act_max: int = 255,
                 acc_limit: int = 2 ** 31):
        n = len(arrays["shift"])
        self.weights = [arrays[f"w{i}"].astype(np.float64) for i in range(n)]
        self.biases = [arrays[f"b{i}"].astype(np.float64) for i in range(n)]
        self.shifts = [int(s) for s in arrays["shift"]]
        self.relu = [bool(r) for r in arrays["relu"]]
        self.shuffle = [int(r) for r in arrays["pixel_shuffle"]]
        self.input_min, self.input_max, self.act_max, self.acc_limit = input_min, input_max, act_max, acc_limit

    def __call__(self, z: np.ndarray) -> np.ndarray:
        """Integer z (Cz x h x w) -> int64 scale index before the rate point's gain (M x 4h x 4w)."""
        x = np.clip(z.astype(np.float64), self.input_min, self.input_max)
        for w, b, shift, relu, r in zip(self.weights, self.biases, self.shifts, self.relu, self.shuffle):
            _, h, wd = x.shape
            acc = w.reshape(w.shape[0], -1) @ im2col(x, w.shape[-1]) + b[:, None]
            if acc.size and np.abs(acc).max() >= self.acc_limit:
                raise OverflowError("integer scale decoder accumulator left the int32 range")
            acc = acc.reshape(-1, h, wd)
            x = np.floor((acc + 2.0 ** (shift - 1)) / 2.0 ** shift) if shift > 0 else acc * 2.0 ** -shift
            if relu:
                x = np.clip(x, 0, self.act_max)
            if r > 1:
                x = pixel_shuffle(x, r)
        return x.astype(np.int64)
