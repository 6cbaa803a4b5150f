"""Random training crops (CropDataset), drawn where the detail is, from downscaled copies too.

A detail map gives, for every place a crop can start (on a grid of cells, crop_size / CELLS
wide), the crop's mean gradient energy: the mean absolute Laplacian of its luma, in 8-bit
units.  CropDataset draws crop positions from it with weights (energy + DETAIL_EPS) ** detail.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from codec.images import load_rgb

CELLS = 16  # cells per crop side in a detail map
DETAIL_EPS = 1.0  # about the energy of flat sky in a clean photo: flat crops keep some weight
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # BT.601


def luma(img: np.ndarray) -> np.ndarray:
    """Return the BT.601 luma of an HxWx3 uint8 image as float32, in 0..255."""
    return img.astype(np.float32) @ _LUMA


def laplacian_energy(img: np.ndarray) -> np.ndarray:
    """Return |4-neighbour Laplacian| of the luma, HxW float32; the one-pixel border is 0."""
    y = luma(img)
    out = np.zeros_like(y)
    if min(y.shape) >= 3:
        out[1:-1, 1:-1] = np.abs(4.0 * y[1:-1, 1:-1] - y[:-2, 1:-1] - y[2:, 1:-1]
                                 - y[1:-1, :-2] - y[1:-1, 2:])
    return out


def detail_energy(img: np.ndarray) -> float:
    """Return the mean absolute Laplacian of an image's luma (inner pixels), in 8-bit units."""
    if min(img.shape[:2]) < 3:
        return 0.0
    return float(laplacian_energy(img)[1:-1, 1:-1].mean())


@dataclass(frozen=True)
class DetailMap:
    """Cumulative sampling weights of the crop start cells of one image."""

    cdf: np.ndarray  # float64, flattened over (rows, cols) of start cells
    cols: int
    cell: int

    def sample(self, rng: np.random.Generator, shape: tuple[int, ...],
               crop: int) -> tuple[int, int]:
        """Draw the top-left corner (y, x) of a crop_size crop of an image of this shape."""
        k = int(np.searchsorted(self.cdf, rng.random() * self.cdf[-1], side="right"))
        i, j = divmod(min(k, self.cdf.size - 1), self.cols)
        c = self.cell
        y = c * i + int(rng.integers(0, min(c, shape[0] - crop - c * i + 1)))
        x = c * j + int(rng.integers(0, min(c, shape[1] - crop - c * j + 1)))
        return y, x


def detail_map(img: np.ndarray, crop: int, detail: float) -> DetailMap:
    """Return the detail map of an image at least crop x crop, weighted (energy + eps) ** detail."""
    h, w = img.shape[:2]
    c = max(1, crop // CELLS)
    n = max(1, crop // c)  # cells per crop side
    lap = laplacian_energy(img)[: h // c * c, : w // c * c]
    cells = lap.reshape(h // c, c, w // c, c).mean(axis=(1, 3), dtype=np.float64)
    sat = np.zeros((cells.shape[0] + 1, cells.shape[1] + 1))
    sat[1:, 1:] = cells.cumsum(0).cumsum(1)
    rows, cols = (h - crop) // c + 1, (w - crop) // c + 1  # cells where a crop can start
    window = (sat[n:n + rows, n:n + cols] - sat[:rows, n:n + cols]
              - sat[n:n + rows, :cols] + sat[:rows, :cols]) / (n * n)
    weight = (np.maximum(window, 0.0) + DETAIL_EPS) ** detail
    return DetailMap(np.cumsum(weight.ravel()), cols, c)


def downscale(img: np.ndarray, scale: float) -> np.ndarray:
    """Resize an image by `scale` (at most 1) with Lanczos filtering; 1 returns it unchanged."""
    if scale >= 1.0:
        return img
    h, w = img.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = Image.fromarray(img).resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return np.array(small, dtype=np.uint8)


class CropDataset(Dataset):
    """Random SxS crops from images decoded once into memory, as 3xSxS float tensors in [0, 1].

    `count` is the dataset length (crops per epoch).  Images are picked in proportion to
    their area, then cropped at a random place and randomly flipped.  Images smaller than
    the crop are reflect-padded (small="pad") or left out (small="skip").  With a `seed`,
    crop i is always the same (useful for validation); without, crops come from torch's
    RNG, which DataLoader seeds differently in each worker.

    `detail` favours detailed places over flat ones (sky, walls): a crop's position is
    drawn with probability proportional to (E + 1) ** detail, where E is the crop's mean
    absolute Laplacian of luma in 8-bit units (detail_map below), measured on a grid of
    crop_size/16 pixels.  0 draws positions uniformly.

    `scales` (each in (0, 1]) adds downscaled copies of every image (Lanczos): each crop
    first draws a scale uniformly (among those where some image is large enough), then an
    image in proportion to its area at that scale.  An image smaller than the crop at a
    scale below 1 is left out at that scale.

    With detail=0 and scales=(1.0,), the defaults, crops are those of earlier versions.
    """

    def __init__(self, paths, crop_size: int = 256, count: int = 1000, *,
                 flip: bool = True, small: str = "pad", seed: int | None = None,
                 detail: float = 0.0, scales: tuple[float, ...] = (1.0,)):
        if small not in ("pad", "skip"):
            raise ValueError(f"small must be 'pad' or 'skip', not {small!r}")
        if crop_size < 1 or count < 1:
            raise ValueError("crop_size and count must be positive")
        if not (np.isfinite(detail) and detail >= 0):
            raise ValueError(f"detail must be a finite number >= 0, not {detail!r}")
        scales = tuple(float(s) for s in scales)
        if not scales or not all(0.0 < s <= 1.0 for s in scales):
            raise ValueError(f"scales must be numbers in (0, 1], not {scales!r}")
        self.crop_size, self.count, self.flip, self.seed = crop_size, count, flip, seed
        self.detail, self.scales = float(detail), scales
        self.images: list[np.ndarray] = []
        # One group per scale: indices into self.images and their area weights.
        self.groups: list[tuple[np.ndarray, np.ndarray]] = []
        originals = [load_rgb(p) for p in paths]
        for scale in dict.fromkeys(scales):
            self._add_scale(originals, scale, small)
        if not self.images:
            raise ValueError(f"no image is at least {crop_size}x{crop_size} pixels")
        self.maps = ([detail_map(im, crop_size, self.detail) for im in self.images]
                     if self.detail > 0 else [])

    def _add_scale(self, originals: list[np.ndarray], scale: float, small: str) -> None:
        """Append the images at one scale and their group of area weights."""
        s = self.crop_size
        if scale == 1.0:
            scaled = [_fit(im, s, small) for im in originals]
        else:
            scaled = [downscale(im, scale) for im in originals]
            scaled = [im if min(im.shape[:2]) >= s else None for im in scaled]
        scaled = [im for im in scaled if im is not None]
        if not scaled:
            return
        first = len(self.images)
        self.images.extend(scaled)
        areas = np.array([im.shape[0] * im.shape[1] for im in scaled], dtype=np.float64)
        self.groups.append((np.arange(first, len(self.images)), areas / areas.sum()))

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> torch.Tensor:
        if not 0 <= index < self.count:
            raise IndexError(index)
        rng = np.random.default_rng(
            (self.seed, index) if self.seed is not None
            else int(torch.randint(0, 2**62, (1,))))
        # Draws happen in the same order as before the options existed, so that the
        # defaults give the same crop for the same seed.
        members, weights = (self.groups[0] if len(self.groups) == 1
                            else self.groups[rng.integers(len(self.groups))])
        k = members[rng.choice(len(members), p=weights)]
        img, s = self.images[k], self.crop_size
        if self.maps:
            y, x = self.maps[k].sample(rng, img.shape, s)
        else:
            y = rng.integers(0, img.shape[0] - s + 1)
            x = rng.integers(0, img.shape[1] - s + 1)
        crop = img[y:y + s, x:x + s]
        if self.flip and rng.random() < 0.5:
            crop = crop[:, ::-1]
        if self.flip and rng.random() < 0.5:
            crop = crop[::-1]
        chw = np.ascontiguousarray(crop.transpose(2, 0, 1))
        return torch.from_numpy(chw).float().div_(255.0)


def _fit(img: np.ndarray, size: int, small: str) -> np.ndarray | None:
    """Reflect-pad an image smaller than size x size, or drop it (None) when small='skip'."""
    h, w = img.shape[:2]
    if h >= size and w >= size:
        return img
    if small == "skip":
        return None
    pad = ((0, max(0, size - h)), (0, max(0, size - w)), (0, 0))
    return np.pad(img, pad, mode="reflect" if min(h, w) > 1 else "edge")
