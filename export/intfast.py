"""The integer scale decoder on float32 carriers where that is provably exact (3-4x faster than float64).

``export.intnp.IntScaleDecoder`` runs on float64, where every product and partial sum of an int8 x
uint8 convolution is an exact integer. float32 holds every integer below 2**24 exactly, so a layer can
run in float32 when the largest magnitude any partial sum can reach, in any summation order,
``max over outputs of (sum |w| * max |x| + |b|)``, stays below 2**24: then every intermediate value is an
exactly represented integer and the result is the same integers. Each layer is checked once, at load;
a layer that could exceed the bound keeps float64. A 1x1 layer is one matrix product (no im2col copy).
"""
from __future__ import annotations

import numpy as np

from .intnp import IntScaleDecoder, im2col, pixel_shuffle

EXACT_F32 = 1 << 24


class FastIntScaleDecoder:
    """Same integers as ``IntScaleDecoder`` (which it wraps), float32 per layer where exact."""

    def __init__(self, base: IntScaleDecoder):
        self.base = base
        self.input_min, self.input_max = base.input_min, base.input_max
        self.weights, self.dtypes, self.biases = [], [], []
        x_max = max(abs(base.input_min), abs(base.input_max))
        for w, b, relu in zip(base.weights, base.biases, base.relu):
            bound = float((np.abs(w).reshape(w.shape[0], -1).sum(1) * x_max + np.abs(b)).max())
            dt = np.float32 if bound < EXACT_F32 else np.float64
            self.dtypes.append(dt)
            self.weights.append(np.ascontiguousarray(w.reshape(w.shape[0], -1), dt))
            self.biases.append(b.astype(dt)[:, None])
            # the next layer's input: clipped to [0, act_max] after a ReLU layer, else unbounded
            x_max = base.act_max if relu else float("inf")

    @property
    def exact_float32(self) -> list[bool]:
        return [d == np.float32 for d in self.dtypes]

    def __call__(self, z: np.ndarray) -> np.ndarray:
        """Integer z (Cz x h x w) -> int32 scale index before the gains (M x 4h x 4w)."""
        b = self.base
        x = np.clip(z, self.input_min, self.input_max)
        for w, bias, dt, k, shift, relu, r in zip(self.weights, self.biases, self.dtypes,
                                                  (int(w.shape[-1]) for w in b.weights), b.shifts, b.relu, b.shuffle):
            _, h, wd = x.shape
            x = x.astype(dt, copy=False)
            cols = x.reshape(x.shape[0], -1) if k == 1 else im2col(x, k)
            acc = w @ cols
            acc += bias
            if acc.size and np.abs(acc).max() >= b.acc_limit:
                raise OverflowError("integer scale decoder accumulator left the int32 range")
            acc = acc.reshape(-1, h, wd)
            if shift > 0:
                acc += dt(2.0 ** (shift - 1))
                acc *= dt(2.0 ** -shift)
                np.floor(acc, out=acc)
            else:
                acc *= dt(2.0 ** -shift)
            if relu:
                np.clip(acc, 0, b.act_max, out=acc)
            x = pixel_shuffle(acc, r) if r > 1 else acc
        return x.astype(np.int32)
