"""Exports kept for reuse: one directory per exact model (name and model id) under runs/onnx-cache."""
from __future__ import annotations

import json
from pathlib import Path

from codec.paths import RUNS_DIR

CACHE = RUNS_DIR / "onnx-cache"


def cached_export(model, int8: bool = False, cache: Path | None = None) -> Path:
    """Directory holding the decoder export of ``model`` (FP32, plus INT8 when asked), written by
    ``export_model`` unless ``cache`` (default runs/onnx-cache) already holds one of this very model."""
    from codec.weights import model_id

    from .exporter import EXPORT_REVISION, export_model
    from .int8 import RECIPES_REVISION

    out = Path(cache or CACHE) / f"{model.name}-{model_id(model).hex()}"
    manifest = json.loads((out / "manifest.json").read_text()) if (out / "manifest.json").is_file() else {}
    nets = manifest.get("networks")
    stale = manifest.get("export_revision", 1) < EXPORT_REVISION   # an earlier exporter's networks
    stale_int8 = manifest.get("int8_revision", 1) < RECIPES_REVISION   # quantised by earlier recipes
    if nets is None or stale or (int8 and (stale_int8 or not all(n.get("int8") for n in nets.values()))):
        export_model(model, out, int8=int8, ort_format=False, encoder=False, log=lambda *_: None)
    return out
