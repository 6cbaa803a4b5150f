"""Where every photo comes from (the manifest: photos.eval_sources + photos.train_sources) and where it
goes (the data root)."""
from __future__ import annotations

import os
from pathlib import Path

from .eval_sources import EVAL_ITEMS, SKIMAGE
from .items import Item, Source
from .train_sources import TRAIN_ITEMS

__all__ = ["Source", "Item", "SKIMAGE", "MANIFEST", "REPO_ROOT", "DATA_ROOT", "SPLITS", "resolve_root"]

MANIFEST: tuple[Item, ...] = (*EVAL_ITEMS, *TRAIN_ITEMS)

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_ROOT = REPO_ROOT / "data"
SPLITS = ("eval", "train")


def resolve_root(root: str | os.PathLike | None = None) -> Path:
    """Return the data root: `root` as given (relative to the cwd), or DATA_ROOT when None."""
    return DATA_ROOT if root is None else Path(root).expanduser()
