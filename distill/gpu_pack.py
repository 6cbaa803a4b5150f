"""The packed training tiles of a GPU burst: ``make_pack`` draws detail-weighted, non-overlapping tiles of the
training photos at several scales (equal shares, as CropDataset draws them) and stores each losslessly
(``encode_tile``: G, R-G, B-G, gradient-predicted, lzma) or as a JPEG of high quality (4:4:4, Pillow; about 2.2
times the pixels at quality 97) in one .npz of at most 18 MiB that travels to the GPU machine; ``load_pack``
reads it back there and ``TileSampler`` draws random crops (with flips) of it on the device the model trains on. Used by distill.gpu (``pack``) and distill.gpu_burst (``run``).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import torch

PACK = Path("gpu/crops.npz")
PACK_FORMAT = "lightcodec-tiles-1"   # per tile: G, R-G, B-G mod 256, gradient-predicted, lzma
PACK_FORMAT_JPEG = "lightcodec-tiles-jpeg-1"   # per tile: a 4:4:4 JPEG (Pillow)
# JPEG quality of the packed tiles (0: lossless). Measured on 10 training tiles of 576: lossless 8.2 bpp; quality
# 97 3.7 bpp at 47.4 dB PSNR-RGB (worst 43.9), 95 2.8 bpp at 45.6 (worst 41.4). The students' top rate point
# reaches about 40 dB, so at 97 the JPEG's error stays well below what they are trained to keep.
PACK_QUALITY = 97
PACK_MIB = 18.0
# 576-pixel tiles: the student's 512x512 crops (clearly better than 256x256: the hyper-latent needs a big grid)
# with 65 x 65 offsets (and flips) per tile. Losslessly, 18 MiB holds about 15 Mpixel whatever the side (45 tiles
# of 576 from 31 photos; 55 of 512 from 30, but a 512 crop of a 512 tile has no offsets; 144 of 320 from 35); as
# JPEGs of quality 97, 103 tiles of 576 from 38 photos, 34.2 Mpixel.
TILE = 576


def encode_tile(tile) -> bytes:
    """3xTxT uint8 tile -> lzma bytes of its gradient-predicted G, R-G, B-G planes (lossless)."""
    import lzma

    import numpy as np

    x = tile.astype(np.int16)
    planes = np.stack((x[1], x[0] - x[1], x[2] - x[1]))
    residual = np.diff(np.diff(planes, axis=-2, prepend=0), axis=-1, prepend=0) % 256
    return lzma.compress(residual.astype(np.uint8).tobytes(), preset=6)


def encode_tile_jpeg(tile, quality: int) -> bytes:
    """3xTxT uint8 tile -> 4:4:4 JPEG bytes at ``quality``."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(tile.transpose(1, 2, 0)).save(buf, "JPEG", quality=quality, subsampling=0)
    return buf.getvalue()


def decode_tile_jpeg(data: bytes, size: int):
    """Inverse of ``encode_tile_jpeg`` (up to the JPEG's loss): the 3xTxT uint8 tile."""
    import io

    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        if im.mode != "RGB" or im.size != (size, size):
            raise ValueError(f"a packed tile is {im.mode} {im.size[0]}x{im.size[1]}, not RGB {size}x{size}")
        return np.asarray(im).transpose(2, 0, 1).copy()


def decode_tile(data: bytes, size: int):
    """Inverse of ``encode_tile``: the 3xTxT uint8 tile."""
    import lzma

    import numpy as np

    r = np.frombuffer(lzma.decompress(data), np.uint8).reshape(3, size, size).astype(np.int64)
    p = r.cumsum(-2).cumsum(-1) % 256
    return np.stack(((p[1] + p[0]) % 256, p[0], (p[0] + p[2]) % 256)).astype(np.uint8)


def _candidates(scaled: dict, tile: int, detail: float, rng) -> dict:
    """Non-overlapping tiles of every image at every scale ({(image, scale): array}): {scale: [(key,
    image, y, x, energy)]}, each scale's list in the order of a weighted draw without replacement
    (weight (energy + eps) ** detail, Efraimidis-Spirakis keys)."""
    from training import crops

    out: dict[float, list] = {}
    for (i, s), im in scaled.items():
        h, w = im.shape[:2]
        if min(h, w) < tile:
            continue
        oy, ox = int(rng.integers(0, h % tile + 1)), int(rng.integers(0, w % tile + 1))
        for y in range(oy, h - tile + 1, tile):
            for x in range(ox, w - tile + 1, tile):
                e = crops.detail_energy(im[y:y + tile, x:x + tile])
                key = rng.random() ** (1.0 / (e + crops.DETAIL_EPS) ** detail)
                out.setdefault(s, []).append((key, i, y, x, e))
    return {s: sorted(c, reverse=True) for s, c in out.items()}


def make_pack(paths: list, out: str | Path, tile: int = TILE, max_mib: float = PACK_MIB, detail: float = 1.0,
              scales: tuple[float, ...] = (1.0, 0.75, 0.5), seed: int = 0, max_tiles: int | None = None,
              quality: int = PACK_QUALITY) -> dict:
    """Pack detail-weighted tiles of the training photos (equal shares per scale, like CropDataset's
    scales) into one .npz of at most ``max_mib`` MiB, as JPEGs of ``quality`` (0: lossless); returns what
    went in."""
    import numpy as np

    from training import crops
    from codec.images import load_rgb

    if not 0 <= quality <= 100:
        raise ValueError(f"pack quality {quality} is not 0 (lossless) to 100")
    t0 = time.monotonic()
    rng = np.random.default_rng(seed)
    paths = [Path(p) for p in paths]
    images = [load_rgb(p) for p in paths]
    scaled = {(i, s): crops.downscale(im, s) for s in dict.fromkeys(scales) for i, im in enumerate(images)}
    cands = _candidates(scaled, tile, detail, rng)
    order = []  # round robin over the scales: equal shares, as CropDataset draws a scale first
    for rank in range(max(map(len, cands.values()), default=0)):
        order += [lst[rank] + (s,) for s, lst in cands.items() if rank < len(lst)]
    limit = int(max_mib * 2**20) - 64 * 1024  # room for the npz's headers
    blobs, rows, used = [], [], 0
    for key, i, y, x, e, s in order[:max_tiles]:
        pixels = np.ascontiguousarray(scaled[i, s][y:y + tile, x:x + tile].transpose(2, 0, 1))
        data = encode_tile_jpeg(pixels, quality) if quality else encode_tile(pixels)
        if used + len(data) + 256 * (len(blobs) + 1) > limit:  # 256: the tile's row in the small arrays
            break
        blobs.append(data)
        rows.append((paths[i].stem, s, y, x, e))
        used += len(data)
    if not blobs:
        raise ValueError(f"no {tile}x{tile} tile fits (images too small, or --max-mib too low)")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez(tmp, format=np.array(PACK_FORMAT_JPEG if quality else PACK_FORMAT), tile=np.array(tile),
             blob=np.frombuffer(b"".join(blobs), np.uint8), offsets=np.cumsum([0] + [len(b) for b in blobs]),
             source=np.array([r[0] for r in rows]), scale=np.array([r[1] for r in rows], np.float32),
             yx=np.array([(r[2], r[3]) for r in rows], np.int32), energy=np.array([r[4] for r in rows], np.float32))
    os.replace(tmp, out)
    per_scale = {str(s): sum(1 for r in rows if r[1] == s) for s in scales}
    return {"pack": str(out), "tiles": len(blobs), "tile": tile, "per_scale": per_scale,
            "tiles_as": f"jpeg {quality}" if quality else "lossless",
            "mib": round(out.stat().st_size / 2**20, 2), "raw_mib": round(len(blobs) * 3 * tile * tile / 2**20, 2),
            "megapixels": round(len(blobs) * tile * tile / 1e6, 2), "seconds": round(time.monotonic() - t0, 1)}


def load_pack(path: str | Path):
    """The packed tiles as an N x 3 x T x T uint8 tensor; ValueError (one line) for a missing or foreign file."""
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no training pack at {path}: make gpu-pack (and carry it to the GPU machine)")
    try:
        with np.load(path, allow_pickle=False) as z:
            decode = {PACK_FORMAT: decode_tile, PACK_FORMAT_JPEG: decode_tile_jpeg}.get(str(z["format"]))
            if decode is None:
                raise ValueError(f"format {str(z['format'])!r}")
            tile, blob, offsets = int(z["tile"]), z["blob"].tobytes(), z["offsets"]
        tiles = [decode(blob[a:b], tile) for a, b in zip(offsets[:-1], offsets[1:])]
    except (OSError, KeyError, ValueError, EOFError, ImportError) as e:
        raise ValueError(f"cannot read training pack {path}: {str(e).splitlines()[0]}") from None
    return torch.from_numpy(np.stack(tiles))


class TileSampler:
    """Random crops (and flips) of the packed tiles, drawn where the model trains, as floats in [0, 1]."""

    def __init__(self, tiles, crop: int, batch: int, device, seed: int = 0):
        if crop > tiles.shape[-1]:
            raise ValueError(f"crop {crop} is larger than the packed tiles ({tiles.shape[-1]}): make gpu-pack "
                             f"GPU_TILE={crop} or more, or a smaller crop")
        self.tiles, self.crop, self.batch = tiles.to(device), crop, batch
        self.gen = torch.Generator(device=device).manual_seed(seed)
        self.span = torch.arange(crop, device=device)
        self.channels = torch.arange(3, device=device)[None, :, None, None]

    def __call__(self):
        n, _, t, _ = self.tiles.shape
        b, dev, g = self.batch, self.tiles.device, self.gen
        idx = torch.randint(n, (b, 1, 1, 1), generator=g, device=dev)
        oy, ox = (torch.randint(t - self.crop + 1, (b, 1), generator=g, device=dev) for _ in range(2))
        rows = (oy + self.span)[:, None, :, None]
        cols = (ox + self.span)[:, None, None, :]
        x = self.tiles[idx, self.channels, rows, cols]
        flips = torch.rand(2, b, 1, 1, 1, generator=g, device=dev) < 0.5
        x = torch.where(flips[0], x.flip(-1), x)
        x = torch.where(flips[1], x.flip(-2), x)
        return x.float().div_(255.0)
