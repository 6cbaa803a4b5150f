"""Bounded-memory encoding: colour conversion and analysis transforms in tiles of latent cells.

The analysis maps the padded picture to the H/16 latent grid. It is fully convolutional and moves by one
latent cell (16 luma pixels, 8 chroma pixels) per latent cell, so a latent cell depends on a fixed window
of picture cells around its own: its **reach**, in cells each side, measured as the decoder's footprints
are (codec/positive.py: on a positive float64 copy, raising one picture cell raises exactly the latent
cells that depend on it). A tile of latent cells is computed from the picture window that adds the reach
on each side (clamped to the picture, where the analysis pads exactly as on the whole picture) and keeps
its own cells: an intermediate value next to the window's cut edge that differs would make a kept cell
depend on a picture cell beyond its reach. So the tiled analysis gives the whole picture's latents, bit
for bit at one torch thread (tests/test_tiling.py; with several threads torch's kernels split their work
by shape and results move by an ulp, as in the decoder).

The RGB -> YCbCr 4:2:0 conversion is per pixel and per 2x2 block, and windows start on whole latent
cells, so each window converts its own pixels. What the encoder then holds at once is the uint8 picture,
one window's planes and activations, and the latent grid, instead of the whole picture's float planes and
every analysis stage at full size.

Models with a pre- or post-analysis option hook (sub-image refiner, attention) are analysed whole.
"""
from __future__ import annotations

import numpy as np
import torch

from .color import rgb_to_yuv420, to_tensor
from .positive import positive_copy

ENCODE_TILE = 2048   # picture pixels per tile side: pictures up to this size are analysed whole
_CACHE: dict = {}


def analysis_reach(model, start: int = 4, limit: int = 64) -> int | None:
    """Latent cells of picture context each side that one latent cell's analysis reads (cached per model id),
    or None where the analysis cannot be tiled (an option hook; or a reach of ``limit`` cells or more)."""
    from .weights import model_id

    if getattr(model, "pre_analysis", None) is not None or getattr(model, "post_analysis", None) is not None:
        return None
    key = model_id(model)
    if key not in _CACHE:
        nets = (positive_copy(model.analysis_y, 0), positive_copy(model.analysis_uv, 1))
        _CACHE[key] = _probe(nets, ((1, 16), (2, 8)), start, limit)
    return _CACHE[key]


def _probe(nets, planes, n: int, limit: int) -> int | None:
    g = torch.Generator().manual_seed(0)
    while n < limit:
        size, reach = 2 * n + 1, 0
        for net, (channels, px) in zip(nets, planes):
            x = torch.rand(1, channels, size * px, size * px, generator=g, dtype=torch.float64) + 0.5
            moved = x.clone()
            moved[..., n * px: (n + 1) * px, n * px: (n + 1) * px] += 100.0     # every pixel of cell (n, n)
            with torch.no_grad():
                diff = (net(x) != net(moved)).any(1)[0]
            rows, cols = torch.nonzero(diff.any(1)).flatten(), torch.nonzero(diff.any(0)).flatten()
            ends = (int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1]))
            if min(ends) == 0 or max(ends) == size - 1:
                reach = None
                break
            reach = max(reach, n - ends[0], ends[1] - n, n - ends[2], ends[3] - n)
        if reach is not None:
            return reach
        n *= 2
    return None


def analyse_tiled(model, image: np.ndarray, tile: int | None = None) -> torch.Tensor | None:
    """The analysis transforms' latent (1 x M x H/16 x W/16, H and W padded to the model's multiple) of an
    HxWx3 uint8 picture, computed in tiles of ``tile`` picture pixels (default ``ENCODE_TILE``); None where the
    model's analysis cannot be tiled (``analysis_reach``) or the picture fits in one tile (analyse it whole)."""
    m, tile = model.cfg.multiple, tile or ENCODE_TILE
    h, w = image.shape[:2]
    reach = analysis_reach(model) if max(h, w) > tile else None
    if reach is None:
        return None
    img = np.pad(image, ((0, -h % m), (0, -w % m), (0, 0)), mode="edge")   # as pad_planes' replicate padding
    gh, gw, cells = img.shape[0] // 16, img.shape[1] // 16, max(1, tile // 16)
    latent = None
    for r0 in range(0, gh, cells):
        for c0 in range(0, gw, cells):
            r1, c1 = min(gh, r0 + cells), min(gw, c0 + cells)
            a0, a1, b0, b1 = max(0, r0 - reach), min(gh, r1 + reach), max(0, c0 - reach), min(gw, c1 + reach)
            y, uv = rgb_to_yuv420(to_tensor(np.ascontiguousarray(img[16 * a0: 16 * a1, 16 * b0: 16 * b1])))
            part = torch.cat((model.analysis_y(y), model.analysis_uv(uv)), 1)
            del y, uv
            if latent is None:
                latent = part.new_empty(1, part.shape[1], gh, gw)
            latent[..., r0:r1, c0:c1] = part[..., r0 - a0: r1 - a0, c0 - b0: c1 - b0]
    return latent
