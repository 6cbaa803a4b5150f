"""The integer-only hyper scale decoder: the one network whose output the entropy decoder consumes.

Why hand-written: the scale INDEX of every latent element must come out identical on every machine,
thread count and runtime (see docs/bitstream.md). No library offers a convolution that is bit-exact by
construction, so this module defines one: int8 weights, integer activations, int32-range accumulation
and power-of-two requantisation with round-half-up. The arithmetic runs on float64 carriers, where every
product and partial sum is an integer below 2**53 and therefore exact whatever the summation order,
BLAS kernel or FMA use: the result is the same integer everywhere.

In training the same layers run in float with straight-through rounding ("fake quantisation") so the
network learns the grid it will run on.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

WEIGHT_MAX = 127          # int8 weights, symmetric
ACT_MAX = 255             # uint8 hidden activations
INPUT_MIN, INPUT_MAX = -128, 127  # int8 input (the hyper-latent z)
ACC_LIMIT = 2 ** 31       # int32 accumulator range, checked


def ste_round(x: torch.Tensor) -> torch.Tensor:
    """Round in the forward pass, identity gradient in the backward pass."""
    return x + (torch.round(x) - x).detach()


def ste_round_half_up(x: torch.Tensor) -> torch.Tensor:
    """floor(x + 0.5) forward (the integer path's requantisation rounding; torch.round rounds halves to
    even, and exact halves are common on a power-of-two grid), identity gradient backward."""
    return x + (torch.floor(x + 0.5) - x).detach()


def weight_shift(w: torch.Tensor) -> int:
    """Largest power-of-two exponent s with max|w| * 2**s <= WEIGHT_MAX (exact, machine-independent)."""
    peak = float(w.detach().abs().max())
    if peak == 0.0:
        return 0
    s = math.floor(math.log2(WEIGHT_MAX / peak))
    while peak * 2.0 ** (s + 1) <= WEIGHT_MAX:  # guard log2 rounding on either side
        s += 1
    while peak * 2.0 ** s > WEIGHT_MAX:
        s -= 1
    return s


class IntConv2d(nn.Conv2d):
    """Conv2d trained with fake quantisation and run exactly in integers by ``int_forward``.

    ``in_bits``/``out_bits``: fractional bits of the input and output activations (value = int / 2**bits).
    ``relu``: clamp the output to [0, ACT_MAX] (hidden layers); otherwise the raw integer is returned.
    """

    def __init__(self, cin, cout, kernel_size, in_bits: int, out_bits: int, relu: bool):
        super().__init__(cin, cout, kernel_size, padding=kernel_size // 2)
        self.in_bits, self.out_bits, self.relu = in_bits, out_bits, relu

    def integer_params(self) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(int weights, int bias, right shift) as float64 tensors of exact integers."""
        ws = weight_shift(self.weight)
        w = torch.clamp(torch.round(self.weight.detach().double() * 2.0 ** ws), -WEIGHT_MAX, WEIGHT_MAX)
        b = torch.round(self.bias.detach().double() * 2.0 ** (ws + self.in_bits))
        return w, b, ws + self.in_bits - self.out_bits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Fake-quantised float forward used in training (x is on the input grid)."""
        ws = weight_shift(self.weight)
        w = torch.clamp(ste_round(self.weight * 2.0 ** ws), -WEIGHT_MAX, WEIGHT_MAX) / 2.0 ** ws
        b = ste_round(self.bias * 2.0 ** (ws + self.in_bits)) / 2.0 ** (ws + self.in_bits)
        out = ste_round_half_up(F.conv2d(x, w, b, padding=self.padding) * 2.0 ** self.out_bits)
        if self.relu:
            out = torch.clamp(out, 0, ACT_MAX)
        return out / 2.0 ** self.out_bits

    def int_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Exact integer forward: x holds integers (float64), the result holds integers (float64)."""
        w, b, shift = self.integer_params()
        n, _, h, wd = x.shape
        k = self.kernel_size[0]
        cols = F.unfold(x, k, padding=k // 2)                       # N, Cin*k*k, H*W (a copy: exact)
        acc = torch.matmul(w.reshape(w.shape[0], -1), cols).add_(b[:, None])
        del cols
        lo, hi = torch.aminmax(acc)
        if max(-float(lo), float(hi)) >= ACC_LIMIT:
            raise OverflowError("integer scale decoder accumulator left the int32 range")
        acc = acc.reshape(n, -1, h, wd)     # in place from here: the same operations, no copies
        out = acc.add_(2.0 ** (shift - 1)).div_(2.0 ** shift).floor_() if shift > 0 else acc.mul_(2.0 ** -shift)
        return out.clamp_(0, ACT_MAX) if self.relu else out


class IntScaleDecoder(nn.Module):
    """Hyper scale decoder z_hat -> scale index per latent element, upsampling 4x with pixel shuffle.

    Layers: 3x3 conv, then two stages of (3x3 conv to 4C, pixel shuffle 2), then a 1x1 conv to the index.
    ``forward`` is the training path (float, fake-quantised); ``int_forward`` is the exact integer path.
    """

    def __init__(self, z_channels: int, hidden: int, out_channels: int, act_bits: int = 4):
        super().__init__()
        a = act_bits
        self.layers = nn.ModuleList([
            IntConv2d(z_channels, hidden, 3, 0, a, relu=True),
            IntConv2d(hidden, hidden * 4, 3, a, a, relu=True),
            IntConv2d(hidden, hidden * 4, 3, a, a, relu=True),
            IntConv2d(hidden, out_channels, 1, a, 0, relu=False),
        ])
        self.shuffle = (1, 2, 2, 1)
        # Start at a mid-table scale so that every rate point's gain offset lands inside the table.
        nn.init.constant_(self.layers[-1].bias, 24.0)
        self.out_channels = out_channels

    def _run(self, x: torch.Tensor, integer: bool) -> torch.Tensor:
        for layer, r in zip(self.layers, self.shuffle):
            x = layer.int_forward(x) if integer else layer(x)
            if r > 1:
                x = F.pixel_shuffle(x, r)
        return x

    def forward(self, z_hat: torch.Tensor) -> torch.Tensor:
        """Training path: integer-valued float index (ungained), with straight-through gradients."""
        return self._run(torch.clamp(z_hat, INPUT_MIN, INPUT_MAX), integer=False)

    @torch.no_grad()
    def int_forward(self, z_int: torch.Tensor, band: int | None = None, post=None) -> torch.Tensor:
        """Deployment path: exact integer index (int64), identical on every machine.

        ``band``: run in bands of that many z rows (each with the rows of context its layers read around
        it), so that the float64 carriers of a large picture never exist whole; integers: the same
        result. ``post``: applied to each band's int64 index before it is stored (its dtype is the
        result's)."""
        post = post or (lambda t: t)
        x = torch.clamp(z_int.double(), INPUT_MIN, INPUT_MAX)
        hz, up = x.shape[-2], math.prod(self.shuffle)
        halo = sum(layer.kernel_size[0] // 2 for layer in self.layers)
        if not band or hz <= band + 2 * halo:
            return post(self._run(x, integer=True).long())
        out = None
        for r0 in range(0, hz, band):
            r1 = min(hz, r0 + band)
            i0, i1 = max(0, r0 - halo), min(hz, r1 + halo)
            part = post(self._run(x[..., i0:i1, :], integer=True)[..., (r0 - i0) * up: (r1 - i0) * up, :].long())
            if out is None:
                out = part.new_empty(part.shape[:2] + (hz * up, part.shape[-1]))
            out[..., r0 * up: r1 * up, :] = part
        return out
