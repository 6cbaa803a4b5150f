"""Safe weight files (safetensors, no pickles), model ids and finding a model for a bitstream.

Shipped weights live in ``weights/<preset>.safetensors``. Float tensors are stored as float16 to keep
the repository small; the model id is computed from the tensors as loaded, so encoder and decoder agree.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .pruned import META_KEY, PlanError, plan_of, replay
from .rate_points import fit_gain_steps
from .registry import create_model, list_models

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


class WeightsError(ValueError):
    """Weights that are missing, unreadable or do not fit the model."""


def model_id(model) -> bytes:
    """8-byte id of a model: a hash of its preset name and every tensor of its state dict.

    Models loaded for coding (``load_model``) cache it, since their weights no longer change."""
    cached = getattr(model, "frozen_id", None)
    if cached is not None:
        return cached
    h = hashlib.sha256(model.name.encode())
    for key, t in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.digest()[:8]


def save_weights(model, path: str | Path, half: bool = True, meta: dict | None = None) -> Path:
    """Write a model's state dict as safetensors (floats as float16 unless ``half`` is False), with
    string metadata: the preset name, the pruning plan of a pruned model, plus ``meta`` (e.g. the step)."""
    path = Path(path)
    plan = plan_of(model)
    if plan["steps"]:
        meta = {META_KEY: json.dumps(plan), **(meta or {})}
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: (v.half() if half and v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(sd, str(tmp), metadata={"preset": model.name, **{k: str(v) for k, v in (meta or {}).items()}})
    tmp.replace(path)
    return path


def fit_entropy_tables(model, state_dict: dict) -> None:
    """Resize ``model``'s entropy-model tables (quantised CDFs, offsets, lengths) to the shapes in
    ``state_dict``, so that it loads tables that were rebuilt at another size since ``model``'s were made
    (compressai resizes only empty tables, e.g. when a run started from shipped weights resumes)."""
    from compressai.entropy_models import EntropyBottleneck, GaussianConditional
    from compressai.models.utils import update_registered_buffers

    for name, module in model.named_modules():
        if isinstance(module, (EntropyBottleneck, GaussianConditional)):
            names = [b for b in ("_quantized_cdf", "_offset", "_cdf_length") if f"{name}.{b}" in state_dict]
            update_registered_buffers(module, name, names, state_dict, policy="resize")


def load_weights(model, path: str | Path, partial: bool = False):
    """Load safetensors weights into ``model`` (floats converted to the model's dtype); returns model.

    A file with another number of rate points than the model is fitted to the model's (``fit_gain_steps``:
    a run that trains more rate points starts from weights with fewer); ``load_model`` instead builds the
    model with the file's own.

    ``partial``: the model may have tensors the file lacks (e.g. an option's modules on top of trained base
    weights, which start at their initialisation, or a deeper preset's extra residual blocks, which start as
    identities); tensors the model lacks are still refused."""
    try:
        sd = load_file(str(path))
    except (OSError, SafetensorError) as e:
        raise WeightsError(f"cannot read weights {path}: {e}") from None
    sd = {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}
    gains = sd.get("gain_steps")
    if gains is not None and hasattr(model, "num_qualities") and gains.shape[0] != model.num_qualities:
        sd["gain_steps"] = fit_gain_steps(gains, model.num_qualities)
    if partial:
        own = model.state_dict()
        foreign = [k for k in sd if k not in own]
        if foreign:
            raise WeightsError(f"weights {path} do not fit model {model.name!r}: "
                               f"{len(foreign)} tensors it lacks, e.g. {foreign[0]}")
    try:
        model.load_state_dict(sd, strict=not partial)
    except (RuntimeError, KeyError) as e:
        raise WeightsError(f"weights {path} do not fit model {model.name!r}: {str(e).splitlines()[0]}") from None
    if partial:
        _new_blocks_as_identity(model, sd)
    return model


def _new_blocks_as_identity(model, state_dict: dict) -> None:
    """Residual blocks (those with ``start_as_identity``) that ``state_dict`` has no tensor of pass their
    input through, so a deeper model starts as the function of the weights it grew from."""
    for name, module in model.named_modules():
        if hasattr(module, "start_as_identity"):
            keys = [f"{name}.{k}" for k in module.state_dict()]
            if keys and not any(k in state_dict for k in keys):
                module.start_as_identity()


def shipped_weights(name: str) -> Path:
    """Path of the weights shipped for preset ``name`` (may not exist)."""
    return WEIGHTS_DIR / f"{name}.safetensors"


def shipped_models() -> list[str]:
    """Names with weights in weights/: the presets, then derived models (e.g. ``student-2k-pruned``, whose
    file names its preset and pruning plan); each works as ``load_model(name)``."""
    presets = [n for n in list_models() if shipped_weights(n).is_file()]
    others = sorted(p.stem for p in WEIGHTS_DIR.glob("*.safetensors")) if WEIGHTS_DIR.is_dir() else []
    return presets + [n for n in others if n not in presets]


def load_model(name_or_path: str, weights: str | Path | None = None):
    """Build a model ready to code: a preset name (shipped weights) or a .safetensors path (its metadata
    names the preset and, for a pruned model, the pruning plan replayed before the weights are loaded).
    Raises WeightsError if no trained weights are found or they do not fit."""
    path = Path(weights) if weights else None
    if name_or_path.endswith(".safetensors"):
        path = Path(name_or_path)
        name = _preset_of(path)
    else:
        name = name_or_path
        if path is None and name not in list_models() and shipped_weights(name).is_file():
            path = shipped_weights(name)   # a shipped derived model, e.g. student-2k-pruned
            name = _preset_of(path)
    path = path or shipped_weights(name)
    if not path.is_file():
        raise WeightsError(f"no weights for {name!r} at {path}: train it first or pass --weights")
    try:
        model = model_for_weights(name, path)
    except KeyError as e:
        raise WeightsError(str(e.args[0])) from None
    load_weights(model, path).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    model.frozen_id = model_id(model)
    return model


def model_for_weights(name: str, path: str | Path | None = None, rate_points: int = 0):
    """Preset ``name`` built to take the weights at ``path`` (not loaded): their pruned shapes, if they carry a
    pruning plan, and ``rate_points`` rate points, else as many as the file holds, else the preset's own."""
    model = create_model(name)
    if path:
        replay_plan_of(model, path)
    model.set_rate_points(rate_points or (rate_points_of(path) if path else model.num_qualities))
    return model


def replay_plan_of(model, path: str | Path):
    """Give a freshly built preset the pruned shapes of the weights at ``path`` (their pruning plan, if
    they carry one; otherwise nothing changes); returns the model. Raises WeightsError if the plan does
    not fit the model."""
    plan = weights_metadata(path).get(META_KEY)
    if plan is not None:
        try:
            replay(model, plan)
        except PlanError as e:
            raise WeightsError(f"weights {path}: {e}") from None
    return model


@contextlib.contextmanager
def _header_of(path: str | Path):
    """The safetensors file at ``path`` opened lazily (header only until a tensor is read); WeightsError if
    it cannot be read."""
    try:
        with safe_open(str(path), "pt") as f:
            yield f
    except (OSError, SafetensorError) as e:
        raise WeightsError(f"cannot read weights {path}: {e}") from None


def weights_metadata(path: str | Path) -> dict:
    """The string metadata stored in a safetensors weights file."""
    with _header_of(path) as f:
        return f.metadata() or {}


def parameters_missing_from(model, path: str | Path) -> frozenset[str]:
    """Names of ``model``'s parameters that the weights file at ``path`` has no tensor for (new blocks)."""
    with _header_of(path) as f:
        stored = set(f.keys())
    return frozenset(n for n, _ in model.named_parameters() if n not in stored)


def rate_points_of(path: str | Path) -> int:
    """Number of rate points of the weights at ``path`` (rows of their gain vectors)."""
    with _header_of(path) as f:
        if "gain_steps" not in f.keys():
            raise WeightsError(f"weights {path} have no gain vectors (gain_steps)")
        return int(f.get_slice("gain_steps").get_shape()[0])


def _preset_of(path: Path) -> str:
    meta = weights_metadata(path)
    if "preset" not in meta:
        raise WeightsError(f"weights {path} do not name their preset (metadata 'preset')")
    return meta["preset"]


def find_model_for(mid: bytes, candidates: list[str | Path] | None = None):
    """Return the loaded model whose id is ``mid`` among the candidates (paths or presets; by default
    every preset with shipped weights), or None."""
    if candidates is None:
        candidates = shipped_models()
    for c in candidates:
        try:
            model = load_model(str(c))
        except WeightsError:
            continue
        if model_id(model) == mid:
            return model
    return None
