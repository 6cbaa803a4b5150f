"""Reading pictures: any file Pillow reads, as upright 8-bit RGB, with one-line errors and size limits."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"})


class ImageError(ValueError):
    """An image file that is missing, unreadable, or a folder without images."""


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Return the sorted image files under `folder`, recursively; an image file gives itself."""
    folder = Path(folder).expanduser()
    if folder.is_file() and folder.suffix.lower() in IMAGE_SUFFIXES:
        return [folder]
    if not folder.is_dir():
        raise ImageError(f"no such image folder: {folder}")
    return sorted(p for p in folder.rglob("*")
                  if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())



def load_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as an HxWx3 uint8 RGB array, upright (EXIF orientation applied).

    Grayscale, palette, RGBA/LA (alpha dropped), CMYK and 16-bit images become 8-bit RGB.
    Raises ImageError with a one-line message for a missing or unreadable file, and for a picture
    larger than the codec's limits (codec.bitstream.MAX_SIDE, MAX_PIXELS), read from the file's
    header before any pixel is decoded.
    """
    from .bitstream import MAX_PIXELS, MAX_SIDE  # torch-free

    path = Path(path)
    if not path.is_file():
        raise ImageError(f"image not found: {path}")
    try:
        with warnings.catch_warnings():
            # Pillow warns above 89 Mpixel (and refuses above twice that); our lower limit applies first.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size  # from the file's header: nothing is decoded yet
                if w > MAX_SIDE or h > MAX_SIDE or w * h > MAX_PIXELS:
                    raise ImageError(f"image {path} is {w}x{h}, over the limit of {MAX_SIDE} pixels per side "
                                     f"and {MAX_PIXELS} pixels in all")
                return _to_rgb(ImageOps.exif_transpose(im))
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, UnidentifiedImageError):
            reason = "not a recognised image format"
        raise ImageError(f"cannot read image {path}: {reason}") from None


def _to_rgb(im: Image.Image) -> np.ndarray:
    """Convert a PIL image of any mode to an HxWx3 uint8 array."""
    if im.mode in ("I", "F") or im.mode.startswith("I;16"):
        gray = _gray_to_uint8(np.asarray(im), im.mode)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")  # avoids Pillow's warning; the alpha is dropped just below
    return np.array(im.convert("RGB"), dtype=np.uint8)


def _gray_to_uint8(a: np.ndarray, mode: str) -> np.ndarray:
    """Scale a 16-bit integer or float grayscale array to uint8."""
    a = a.astype(np.float64)
    if mode == "F":
        a = a * 255.0 if a.max(initial=0.0) <= 1.0 else a
    else:  # 16-bit samples (PNG/TIFF); mode I holds them too
        a = a / 257.0
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)
