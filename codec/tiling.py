"""Bounded-memory decoding: the synthesis in tiles, each with the overlap its receptive field needs.

The synthesis maps latents on the H/16 grid to a luma plane (16 pixels per latent cell) and a 4:2:0
chroma plane (8 pixels per cell). It is fully convolutional and periodic with one latent cell, so the
latent cells an output pixel depends on are a fixed window around it: the **footprint** of a latent cell
(the output pixels it can change, relative to the cell's own top-left pixel) gives, for any range of
output pixels, the exact range of latent cells it needs (``Footprint.latents``).

A tile decodes the latent window that its output rows and columns need (clamped to the picture: at the
picture's edges the synthesis pads exactly as the whole-picture decode does) and keeps only those rows
and columns. Every kept pixel is then computed from the same latents, through the same intermediate
values, as in the whole-picture decode: an intermediate value next to the tile's cut edge that differs
(zero-padded there) would make the kept pixel depend on a latent cell outside the window, which the
footprint rules out. So the tiled decode equals the whole one (tests/test_tiling.py checks it bit for
bit in torch, and on the 8-bit picture in ONNX Runtime), provided each tile's arithmetic is that of the
whole picture: true in ONNX Runtime at any thread count here, and in torch at one thread for the students
(the teacher's wide convolutions get shape-dependent kernels on AVX-512 machines even at one thread). With several
threads torch's convolutions choose their work split by tensor shape, which moves results by an ulp:
the whole picture at 1 and at 2 threads then differs at a few pixels in 10^5 by one 8-bit level, and a
tiled decode differs from the whole one the same way.

The footprint is measured, not derived: ``probe_footprints`` runs a copy of the synthesis in float64
with every weight and bias positive (and positive inputs), where every activation the models use
(Hardswish above -1.5, LeakyReLU, GDN, pixel shuffles, channel shuffles) is strictly increasing, so
raising one latent cell strictly raises every output that structurally depends on it and leaves every
other output bit-identical. It works for any fully convolutional synthesis (students, teacher, pruned).

Pictures are decoded strip by strip (a row of tiles), and each strip is converted to 8-bit RGB as soon
as it is complete, ``RGB_ROWS`` rows at a time: chroma upsampling needs one chroma row above and below, so
tiles also decode one chroma row more on each side (their footprint covers it). Nothing holds a
full-resolution float plane. The torch decoder gets the latents from the model's own decoding path with
its latent-grid networks in bands of rows (codec/bands.py), and grows every tile's window to one size
(``uniform_windows``) so that the allocator reuses each tile's memory for the next.

This module imports torch only inside the torch functions: ``plan_tiles`` and ``Footprint`` are shared
with the torch-free ONNX decoder (export/runtime.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LUMA_SCALE, CHROMA_SCALE = 16, 8      # output pixels per latent cell (luma plane, 4:2:0 chroma plane)
DEFAULT_TILE = 512                    # output pixels per tile side (see docs/deployment.md, "Memory")
# The torch-free ONNX decoder's default: smaller tiles keep its features nearer the cache (ORT runs each layer over
# the whole tile before the next): 256 took 5-9% less CPU than 512 at 768x512 and 12 Mpixel, and less memory
# (results/decode_profile.md, its before/after table).
ONNX_TILE = 256
RGB_ROWS = 128                        # picture rows converted to 8-bit RGB at a time (torch decoder)


@dataclass(frozen=True)
class Footprint:
    """Output pixels of one plane that latent cell (0, 0) can change: rows and columns, inclusive,
    in that plane's pixels (``scale`` pixels per latent cell)."""

    scale: int
    rows: tuple[int, int]
    cols: tuple[int, int]

    def latents(self, p0: int, p1: int, axis: int, size: int) -> tuple[int, int]:
        """Latent cells [l0, l1) that output pixels [p0, p1) along ``axis`` (0 rows, 1 columns) depend on,
        clamped to a latent grid of ``size`` cells."""
        lo, hi = self.rows if axis == 0 else self.cols
        s = self.scale
        return max(0, -((hi - p0) // s)), min(size, (p1 - 1 - lo) // s + 1)

    def to_json(self) -> dict:
        return {"scale": self.scale, "rows": list(self.rows), "cols": list(self.cols)}

    @staticmethod
    def from_json(d: dict) -> "Footprint":
        return Footprint(int(d["scale"]), tuple(int(v) for v in d["rows"]), tuple(int(v) for v in d["cols"]))


@dataclass(frozen=True)
class Tile:
    """One tile: the latent window it decodes and the output it keeps (picture coordinates).

    ``lat``: latent rows [r0, r1) and columns [c0, c1); ``y``: luma rows and columns kept; ``uv``: chroma
    rows (one more above and below than the tile's own, for the chroma upsampling) and columns kept."""

    lat: tuple[int, int, int, int]
    y: tuple[int, int, int, int]
    uv: tuple[int, int, int, int]


def tile_size(tile: int | None) -> int | None:
    """Tile side in output pixels, rounded up to whole latent cells; None or 0: the whole picture."""
    if not tile:
        return None
    if tile < 0:
        raise ValueError(f"tile size must be positive (0: whole picture), got {tile}")
    return -(-int(tile) // LUMA_SCALE) * LUMA_SCALE


def plan_tiles(height: int, width: int, tile: int | None, footprints: dict[str, Footprint],
               multiple: int = 64) -> list[list[Tile]]:
    """Strips (rows of tiles, top to bottom) covering a ``height`` x ``width`` picture with tiles of
    ``tile`` x ``tile`` output pixels (None: one tile, the whole padded latent grid)."""
    lh, lw = -(-height // multiple) * multiple // LUMA_SCALE, -(-width // multiple) * multiple // LUMA_SCALE
    ch, cw = (height + 1) // 2, (width + 1) // 2
    t = tile_size(tile)
    if t is None:
        return [[Tile((0, lh, 0, lw), (0, height, 0, width), (0, ch, 0, cw))]]
    fy, fuv = footprints["y"], footprints["uv"]
    strips = []
    for a0 in range(0, height, t):
        a1 = min(height, a0 + t)
        u0, u1 = max(0, a0 // 2 - 1), min(ch, (a1 + 1) // 2 + 1)     # chroma rows, one more each side
        ry, ruv = fy.latents(a0, a1, 0, lh), fuv.latents(u0, u1, 0, lh)
        r0, r1 = min(ry[0], ruv[0]), max(ry[1], ruv[1])
        strip = []
        for b0 in range(0, width, t):
            b1 = min(width, b0 + t)
            v0, v1 = b0 // 2, (b1 + 1) // 2
            cy, cuv = fy.latents(b0, b1, 1, lw), fuv.latents(v0, v1, 1, lw)
            strip.append(Tile((r0, r1, min(cy[0], cuv[0]), max(cy[1], cuv[1])), (a0, a1, b0, b1), (u0, u1, v0, v1)))
        strips.append(strip)
    return strips


# ---- the footprint probe (torch) ------------------------------------------------------------------
def probe_footprints(synthesis, channels: tuple[int, int], at: list[str] | None = None, start: int = 6,
                     limit: int = 96, seed: int = 0) -> dict[str, Footprint]:
    """Footprints of one latent cell (both latents raised at once) in the luma and chroma outputs of
    ``synthesis`` (a module: (y_hat, uv_hat) -> (luma, chroma), e.g. ``codec.blocks.Synthesis(model)``).

    ``at``: names of submodules whose inputs are raised instead of the latents (one position of each, all
    on the same grid, k positions per latent cell): their footprint, with scale 16 / k (luma) and
    8 / k (chroma), tells how much of those tensors a tile's output needs (in-graph crops, export/crops.py).

    Raises ValueError when the influence reaches the probe's edge at ``limit`` cells (not a local
    network, e.g. global attention: such a synthesis cannot be tiled)."""
    import torch

    from .positive import positive_copy

    net = positive_copy(synthesis, seed)
    n = start
    while True:
        size = 2 * n + 1
        g = torch.Generator().manual_seed(seed + 1)
        lat = [torch.rand(1, c, size, size, generator=g, dtype=torch.float64) + 0.5 for c in channels]
        grids = set()
        bump = [False]

        def hook(_module, args):
            x = args[0]
            k = x.shape[-1] // size
            grids.add((x.shape[-2] // size, k))
            if not bump[0]:
                return None
            x = x.clone()
            x[..., n * k, n * k] += 1000.0
            return (x, *args[1:])

        handles = [net.get_submodule(name).register_forward_pre_hook(hook) for name in at or ()]
        try:
            with torch.no_grad():
                base = net(*lat)
                bump[0] = True
                moved = net(*lat) if at else net(*_bumped(lat, n))
        finally:
            for h in handles:
                h.remove()
        k = 1
        if at:
            if len(grids) != 1 or len({v for v in next(iter(grids))}) != 1:
                raise ValueError(f"modules {at} do not all read the same square grid: {sorted(grids)}")
            k = next(iter(grids))[0]
        out, edge = {}, False
        for name, b, m, s in zip(("y", "uv"), base, moved, (LUMA_SCALE, CHROMA_SCALE)):
            if b.shape[-2:] != (size * s, size * s):
                raise ValueError(f"synthesis output {name} is {tuple(b.shape[-2:])} for a {size}x{size} latent "
                                 f"grid, not {s} pixels per cell")
            if s % k:
                raise ValueError(f"a grid of {k} positions per latent cell does not divide the {name} plane")
            rows = torch.nonzero((b != m).any(1)[0].any(1)).flatten()
            cols = torch.nonzero((b != m).any(1)[0].any(0)).flatten()
            if rows.numel() == 0:
                raise ValueError(f"no {name} output depends on the probed tensor: cannot probe this synthesis")
            lo_r, hi_r, lo_c, hi_c = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
            edge |= min(lo_r, lo_c) < s or max(hi_r, hi_c) >= size * s - s
            out[name] = Footprint(s // k, (lo_r - n * s, hi_r - n * s), (lo_c - n * s, hi_c - n * s))
        if not edge:
            return out
        if n >= limit:
            raise ValueError(f"the synthesis's receptive field exceeds {limit} latent cells: it cannot be tiled")
        n *= 2


def _bumped(lat, n: int):
    out = [t.clone() for t in lat]
    for t in out:
        t[..., n, n] += 1000.0
    return out


_CACHE: dict = {}


def model_footprints(model) -> dict[str, Footprint]:
    """Footprints of a YUVCodec's synthesis (cached per model id). Models with a pre-synthesis or
    post-filter option hook are refused: those hooks read the predicted mean and may be global."""
    from .blocks import Synthesis
    from .weights import model_id

    if getattr(model, "pre_synthesis", None) is not None or getattr(model, "post_filter", None) is not None:
        raise ValueError(f"{model.name}: tiled decoding supports the base synthesis only, not the option "
                         "hooks (pre-synthesis, post-filter); decode it whole (tile 0)")
    key = model_id(model)
    if key not in _CACHE:
        _CACHE[key] = probe_footprints(Synthesis(model), (model.cfg.y_channels, model.cfg.uv_channels))
    return _CACHE[key]


# ---- the torch decoder ----------------------------------------------------------------------------
def decoded_latents(model, bs, bands: bool = False):
    """(y_hat, uv_hat, mean, integer state) of a parsed bitstream: ``model.decompress_streams`` run up to
    its synthesis, which is intercepted (so this stays the model's own decoding path). ``bands``: the
    latent-grid networks in bands of rows where the model allows it (then mean is None)."""
    m = model.cfg.multiple
    shape = (-(-bs.height // m) * m, -(-bs.width // m) * m)
    got = {}

    def grab(yh, uvh, mean=None):
        got.update(yh=yh, uvh=uvh, mean=mean)
        return None, None

    model.synthesize = grab          # an instance attribute shadows the method for this call only
    try:
        _, state = model.decompress_streams(list(bs.streams), bs.quality, shape, bands=bands)
    finally:
        del model.synthesize
    if not got:
        raise RuntimeError("YUVCodec.decompress_streams no longer calls self.synthesize: update codec/tiling.py")
    return got["yh"], got["uvh"], got["mean"], state


def strip_rgb(ys, uvs, first: int):
    """8-bit RGB rows (n x W x 3 numpy) of a strip: luma rows ``ys`` (1x1xnxW), chroma rows ``uvs``
    (1x2xmxceil(W/2), one more row above and below where the picture has them), ``first`` = the strip's
    first row in the upsampled chroma. The same operations as ``codec.color.yuv420_to_rgb`` + ``to_uint8``
    on the whole picture, row for row."""
    import torch
    import torch.nn.functional as F

    from .color import to_uint8, ycbcr_to_rgb

    n, w = ys.shape[-2:]
    m, cw = uvs.shape[-2:]
    up = F.interpolate(uvs, size=(2 * m, 2 * cw), mode="bilinear", align_corners=False)[..., first: first + n, :w]
    return to_uint8(ycbcr_to_rgb(torch.cat((ys, up), 1)).clamp(0.0, 1.0))


def uniform_windows(strips: list[list[Tile]], grid: tuple[int, int]) -> list[list[Tile]]:
    """The same tiles with every latent window grown, away from the picture's edge, to the largest one's
    size (within the ``grid`` of latent rows and columns). Every tile then runs the same tensor shapes,
    so the allocator reuses one tile's memory for the next instead of fragmenting it; the kept pixels
    are unchanged (a larger window still holds every latent cell they depend on)."""
    size = [max(t.lat[2 * a + 1] - t.lat[2 * a] for s in strips for t in s) for a in (0, 1)]

    def grow(lo: int, hi: int, n: int, limit: int) -> tuple[int, int]:
        hi = min(limit, max(hi, lo + n))
        return max(0, hi - n), hi

    return [[Tile(grow(*t.lat[:2], size[0], grid[0]) + grow(*t.lat[2:], size[1], grid[1]), t.y, t.uv)
             for t in s] for s in strips]


def _emit_rgb(ys, uvs, a0: int, u0: int, chroma_rows: int, emit) -> None:
    """Convert a strip (luma rows [a0, a0 + n), chroma rows from u0) to 8-bit RGB ``RGB_ROWS`` rows at a
    time, each block with the chroma rows around it that ``plan_tiles`` gives a strip, and hand each
    block to ``emit``: the same values as converting the strip at once, in a fraction of its memory."""
    n = ys.shape[-2]
    for b0 in range(0, n, RGB_ROWS):
        p0, p1 = a0 + b0, a0 + min(n, b0 + RGB_ROWS)          # picture rows of this block
        c0, c1 = max(0, p0 // 2 - 1), min(chroma_rows, (p1 + 1) // 2 + 1)
        emit(strip_rgb(ys[..., b0: p1 - a0, :], uvs[..., c0 - u0: c1 - u0, :], p0 - 2 * c0))


def decode_rgb(model, bs, tile: int | None = DEFAULT_TILE, sink=None):
    """Decode a parsed bitstream (``codec.bitstream.unpack``) to an H x W x 3 uint8 RGB picture with the
    synthesis in ``tile`` x ``tile``-pixel tiles (None or 0: whole picture; models with pre-synthesis
    or post-filter hooks always decode whole). ``sink``: called with each block of rows (top to bottom)
    instead of filling the returned picture (then None is returned)."""
    import torch

    from .bitstream import BitstreamError
    from .memory import TRIM_PIXELS, release_memory
    from .weights import model_id

    if bs.model_id != model_id(model):
        raise BitstreamError(f"bitstream was made by another model (id {bs.model_id.hex()}), "
                             f"not {model.name!r} ({model_id(model).hex()})")
    hooks = getattr(model, "pre_synthesis", None) is not None or getattr(model, "post_filter", None) is not None
    tile = None if hooks else tile_size(tile)
    fps = model_footprints(model) if tile else {}
    strips = plan_tiles(bs.height, bs.width, tile, fps, model.cfg.multiple)
    out = np.empty((bs.height, bs.width, 3), np.uint8) if sink is None else None
    done = [0]

    def emit(rows):
        if sink is not None:
            sink(rows)
        else:
            out[done[0]: done[0] + rows.shape[0]] = rows
        done[0] += rows.shape[0]

    big = bs.height * bs.width >= TRIM_PIXELS
    cw, ch = (bs.width + 1) // 2, (bs.height + 1) // 2
    try:
        with torch.no_grad():
            if big:
                release_memory()          # what loading the model and probing its footprint left
            several = len(strips) > 1 or len(strips[0]) > 1
            yh, uvh, mean = decoded_latents(model, bs, bands=several)[:3]   # not the integer state
            if several:
                mean = None               # only a whole-picture tile passes it on (to option hooks)
            if big:
                release_memory()
            strips = uniform_windows(strips, tuple(yh.shape[-2:]))
            rows = max(s[0].y[1] - s[0].y[0] for s in strips), max(s[0].uv[1] - s[0].uv[0] for s in strips)
            ys_all, uvs_all = torch.empty(1, 1, rows[0], bs.width), torch.empty(1, 2, rows[1], cw)
            for strip in strips:
                a0, a1 = strip[0].y[:2]
                u0, u1 = strip[0].uv[:2]
                ys, uvs = ys_all[..., : a1 - a0, :], uvs_all[..., : u1 - u0, :]
                for t in strip:
                    r0, r1, c0, c1 = t.lat
                    whole = t.lat == (0, yh.shape[-2], 0, yh.shape[-1])
                    y, uv = model.synthesize(yh[..., r0:r1, c0:c1], uvh[..., r0:r1, c0:c1],
                                             mean if whole else None)
                    b0, b1, v0, v1 = t.y[2], t.y[3], t.uv[2], t.uv[3]
                    ys[..., b0:b1] = y[..., a0 - 16 * r0: a1 - 16 * r0, b0 - 16 * c0: b1 - 16 * c0]
                    uvs[..., v0:v1] = uv[..., u0 - 8 * r0: u1 - 8 * r0, v0 - 8 * c0: v1 - 8 * c0]
                    del y, uv
                _emit_rgb(ys, uvs, a0, u0, ch, emit)
    except BitstreamError:
        raise
    except (RuntimeError, ValueError, IndexError) as e:
        raise BitstreamError(f"corrupt coded data: {str(e).splitlines()[0]}") from None
    return out
