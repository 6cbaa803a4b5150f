"""compressai's core for a process that only codes pictures, without compressai/__init__.py.

compressai's package __init__ imports all its subpackages, among them the point-cloud datasets, whose
transform registry imports torch_geometric, which imports torch._dynamo, triton, sympy and pandas. The
codec uses none of them (only the entropy models, layers, latent codecs and ``CompressionModel``), yet
they cost a ``python -m codec decode`` about 210 MiB of peak RSS and 3 s of start-up (measured: 792 ->
582 MiB after loading student-2k, 8.1 -> 4.8 s). ``import_compressai_core`` registers the packages
``compressai``, ``compressai.registry`` and ``compressai.models`` without running their __init__ files,
with the few names their submodules read from them, so that ``from compressai.entropy_models import ...``
loads only what it needs.

For a process that runs nothing else (the codec's CLI): code that later imports other parts of compressai
(``compressai.zoo``, the datasets) would find these packages incomplete. A no-op when compressai is
already imported.
"""
from __future__ import annotations

import importlib.util
import sys


def _unexecuted(name: str):
    """Module ``name`` registered in sys.modules with its search path but its __init__ not run."""
    module = importlib.util.module_from_spec(importlib.util.find_spec(name))
    sys.modules[name] = module
    return module


def import_compressai_core() -> None:
    """Import compressai's entropy models, layers, latent codecs and ``CompressionModel`` without the
    package __init__ files that pull in torch_geometric (see the module docstring)."""
    if "compressai" in sys.modules:
        return
    package = _unexecuted("compressai")
    # what compressai/__init__.py defines and the entropy models read (the rANS coder is the only one)
    package.get_entropy_coder = lambda: "ans"
    package.available_entropy_coders = lambda: ["ans"]
    registry = _unexecuted("compressai.registry")
    # imported here, not at the top: each must come after the stand-in packages above it
    import compressai.registry.torch as torch_registry

    registry.__dict__.update({k: v for k, v in vars(torch_registry).items() if not k.startswith("_")})
    models = _unexecuted("compressai.models")
    import compressai.models.base as base

    models.__dict__.update({k: v for k, v in vars(base).items() if not k.startswith("_")})
