"""One registry of named model presets (teacher and students), in the manner of timm's.

Model packages register builders with ``@register("name")``; ``create_model("name")`` builds one.
The core names no model package: each one declares itself as an entry point of the group
``lightcodec.models`` (pyproject.toml), loaded on first use; importing a package's presets module
registers it too (how a run without the installed package, e.g. on a lent GPU, gets its models).

A name may add options (the seed papers' modules, codec.modules) after the preset: ``BASE+OPT+OPT``,
e.g. ``student-2k+hda+gmm``. Builders receive the option tuple; the model's ``name`` is the full name.
"""
from __future__ import annotations

from importlib.metadata import entry_points
from typing import Callable

_BUILDERS: dict[str, Callable] = {}
ENTRY_POINT_GROUP = "lightcodec.models"


def register(name: str):
    """Decorator: register a builder ``fn(options: tuple[str, ...] = ()) -> YUVCodec`` under ``name``."""
    def wrap(fn):
        if name in _BUILDERS:
            raise ValueError(f"model preset {name!r} registered twice")
        _BUILDERS[name] = fn
        return fn
    return wrap


def _load_packages() -> None:
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        ep.load()   # importing the module runs its @register decorators


def list_models() -> list[str]:
    """Names of every registered preset (without options)."""
    _load_packages()
    return sorted(_BUILDERS)


def list_options() -> dict[str, str]:
    """Every option a model name may add (``BASE+OPT``), with what it is."""
    from .modules import OPTIONS
    return {name: opt.title for name, opt in OPTIONS.items()}


def split_name(name: str) -> tuple[str, tuple[str, ...]]:
    """``"student-2k+hda+gmm"`` -> ("student-2k", ("hda", "gmm")); checks the options (KeyError names
    the known ones)."""
    from .modules import check_options
    base, *options = name.split("+")
    return base, check_options(options)


def create_model(name: str):
    """Build the preset ``name`` (``BASE`` or ``BASE+OPT+...``) with freshly initialised weights."""
    _load_packages()
    base, options = split_name(name)
    if base not in _BUILDERS:
        known = ", ".join(sorted(_BUILDERS)) or f"none (no {ENTRY_POINT_GROUP!r} entry points: pip install -e .)"
        raise KeyError(f"unknown model {base!r}; known: {known}")
    model = _BUILDERS[base](options)
    model.name = name
    return model
