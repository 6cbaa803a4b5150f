"""Detail maps and downscaled copies for training crops (numpy and Pillow only, no torch).

A detail map gives, for every place a crop can start (on a grid of cells, crop_size / CELLS
wide), the crop's mean gradient energy: the mean absolute Laplacian of its luma, in 8-bit
units.  CropDataset draws crop positions from it with weights (energy + DETAIL_EPS) ** detail.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

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
