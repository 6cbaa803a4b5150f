"""The real photos for training and evaluation: where they are, what is there, and fetching them.

Command line:
    python -m photos fetch [--root DIR]   fetch the evaluation set and the training corpus
    python -m photos list  [--root DIR]   list what is there, with counts and megapixels

Every image comes from a package that installs by name (PyPI wheels, Debian packages), so the
data command works on a machine with no other network access.  The evaluation set (data/eval,
14 lossless PNGs) is *not* the standard Kodak set: it holds 6 Kodak images (kodim23 and the
TID2013 copies I03..I19, resized to 512x384), 3 Waterloo images, barbara and 4 scikit-image
photos.  Never compare figures from it with published Kodak numbers.  The training corpus
(data/train, 100 photos) is lossy photos (JPEG, MPO, JPEG 2000) shrunk 2-4x to wash out compression
artefacts and lossless PNGs kept as they are, all saved as PNG.  The manifest is in
photos.eval_sources and photos.train_sources.
"""
from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

from codec.images import ImageError, list_images, load_rgb

from .fetch import fetch, shrink
from .sources import DATA_ROOT, MANIFEST, SKIMAGE, SPLITS, Item, Source, resolve_root

__all__ = ["DATA_ROOT", "SPLITS", "MANIFEST", "SKIMAGE", "Item", "Source", "ImageError", "list_images", "load_rgb",
           "resolve_root", "eval_images", "train_images", "ensure_data", "summary", "fetch", "shrink"]


def _split_images(split: str, data_dir: str | os.PathLike | None) -> list[Path]:
    folder = Path(data_dir) if data_dir is not None else DATA_ROOT / split
    hint = "" if data_dir is not None else "; run `python -m photos fetch`"
    if data_dir is None and not folder.is_dir():
        raise ImageError(f"no {split} images in {folder}{hint}")
    paths = list_images(folder)
    if not paths:
        raise ImageError(f"no images in {folder}{hint}")
    return paths


def eval_images(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Return the sorted evaluation images: data/eval, or every image under `data_dir` if given."""
    return _split_images("eval", data_dir)


def train_images(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Return the sorted training images: data/train, or every image under `data_dir` if given."""
    return _split_images("train", data_dir)


def ensure_data(root: str | os.PathLike | None = None) -> Path:
    """Fetch unless the eval set is complete and a training image exists; return the root."""
    root = resolve_root(root)
    eval_ok = all((root / "eval" / it.filename).is_file() for it in MANIFEST if it.split == "eval")
    train_ok = (root / "train").is_dir() and bool(list_images(root / "train"))
    if not (eval_ok and train_ok):
        fetch(root)
    return root


def summary(root: str | os.PathLike | None = None) -> dict[str, tuple[int, float]]:
    """Return {split: (image count, megapixels)} for the splits under the data root."""
    root = resolve_root(root)
    result = {}
    for split in SPLITS:
        paths = list_images(root / split) if (root / split).is_dir() else []
        result[split] = (len(paths), sum(_pixels(p) for p in paths) / 1e6)
    return result


def _pixels(path: Path) -> int:
    with Image.open(path) as im:
        return im.width * im.height
