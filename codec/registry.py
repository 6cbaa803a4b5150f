"""One registry of named model presets (teacher and students), in the manner of timm's.

Model packages register builders with ``@register("name")``; ``create_model("name")`` builds one.
The packages are imported on first use, so the core never names their internals.
"""
from __future__ import annotations

import importlib
from typing import Callable

_BUILDERS: dict[str, Callable] = {}
_MODEL_PACKAGES = ("teacher", "student")


def register(name: str):
    """Decorator: register a zero-argument builder that returns a YUVCodec under ``name``."""
    def wrap(fn):
        if name in _BUILDERS:
            raise ValueError(f"model preset {name!r} registered twice")
        _BUILDERS[name] = fn
        return fn
    return wrap


def _load_packages() -> None:
    for pkg in _MODEL_PACKAGES:
        try:
            importlib.import_module(f"{pkg}.presets")
        except ModuleNotFoundError as e:
            if e.name not in (pkg, f"{pkg}.presets"):
                raise


def list_models() -> list[str]:
    """Names of every registered preset."""
    _load_packages()
    return sorted(_BUILDERS)


def create_model(name: str):
    """Build the preset ``name`` with freshly initialised weights."""
    _load_packages()
    if name not in _BUILDERS:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(_BUILDERS))}")
    model = _BUILDERS[name]()
    model.name = name
    return model
