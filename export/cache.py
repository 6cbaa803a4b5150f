"""Exports kept for reuse: one directory per exact model (name and model id) under runs/onnx-cache."""
from __future__ import annotations

import json
from pathlib import Path

CACHE = Path(__file__).resolve().parent.parent / "runs" / "onnx-cache"


def cached_export(model, int8: bool = False, cache: Path | None = None) -> Path:
    """Directory holding the decoder export of ``model`` (FP32, plus INT8 when asked), written by
    ``export_model`` unless ``cache`` (default runs/onnx-cache) already holds one of this very model."""
    from codec.weights import model_id

    from .exporter import export_model

    out = Path(cache or CACHE) / f"{model.name}-{model_id(model).hex()}"
    manifest = out / "manifest.json"
    nets = json.loads(manifest.read_text())["networks"] if manifest.is_file() else None
    if nets is None or (int8 and not all(n.get("int8") for n in nets.values())):
        export_model(model, out, int8=int8, ort_format=False, encoder=False, log=lambda *_: None)
    return out
