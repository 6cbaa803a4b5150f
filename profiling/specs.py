"""What to profile: model specs (presets, checkpoints, CompressAI zoo models), their inputs and roles."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch.nn as nn

from .counter import ProfilingError

# CompressAI's CompressionModel children: which side of the codec runs each.
COMPRESSAI_ROLES = {
    "g_a": ("encoder",), "h_a": ("encoder",), "g_s": ("decoder",),
    "h_s": ("encoder", "decoder"), "context_prediction": ("encoder", "decoder"),
    "entropy_parameters": ("encoder", "decoder"),
    "entropy_bottleneck": (), "gaussian_conditional": (),
}

LABELS = {
    "analysis_y": "analysis Y", "analysis_uv": "analysis UV", "hyper_analysis": "hyper analysis",
    "hyper_decoder_y": "hyper decoder Y", "hyper_decoder_uv": "hyper decoder UV",
    "scale_decoder": "integer scale decoder", "context_y": "context model Y",
    "context_uv": "context model UV", "fusion_y": "prediction fusion Y", "fusion_uv": "prediction fusion UV",
    "synthesis_y": "synthesis Y", "synthesis_uv": "synthesis UV", "post_filter": "post-filter (option)",
    "pre_analysis": "pre-analysis (option)", "post_analysis": "post-analysis (option)",
    "pre_synthesis": "pre-synthesis (option)", "global_context": "global context (option)",
    "qecm": "training-time rounding (option)",
    "entropy_bottleneck": "entropy bottleneck", "gaussian_conditional": "gaussian conditional",
    "g_a": "analysis g_a", "h_a": "hyper analysis h_a", "g_s": "synthesis g_s", "h_s": "hyper synthesis h_s",
    "context_prediction": "context model (masked)", "entropy_parameters": "entropy parameters",
}


def label(name: str) -> str:
    """Friendly name of a top-level module (synthesis_y -> "synthesis Y")."""
    if name in LABELS:
        return LABELS[name]
    words = name.split("_")
    return " ".join(w.upper() if w in ("y", "uv", "u", "v") else w for w in words)


@dataclass
class Target:
    """A model ready to profile: its name, how to feed it and which side runs each child."""

    name: str
    model: nn.Module
    roles: dict[str, tuple[str, ...]]
    multiple: int          # the picture is padded up to a multiple of this
    planes: str            # "yuv420" (our codecs) or "rgb" (CompressAI)

    def padded(self, height: int, width: int) -> tuple[int, int]:
        """The size the model actually processes for an HxW picture."""
        m = self.multiple
        return math.ceil(height / m) * m, math.ceil(width / m) * m

    def inputs(self, counter, height: int, width: int) -> tuple:
        """Arguments of ``forward`` for a padded HxW picture (q=0 for our codecs)."""
        if self.planes == "yuv420":
            return counter.tensor(1, 1, height, width), counter.tensor(1, 2, height // 2, width // 2), 0
        return (counter.tensor(1, 3, height, width),)


def _compressai(spec: str) -> nn.Module:
    from compressai.zoo import image_models

    parts = spec.split(":")
    if len(parts) != 3 or not parts[2].isdigit():
        raise ProfilingError(f"bad CompressAI spec {spec!r}: use compressai:NAME:QUALITY, "
                             "e.g. compressai:bmshj2018-hyperprior:3")
    name, quality = parts[1].replace("_", "-"), int(parts[2])
    builders = {k: v for k, v in image_models.items() if v is not None}
    if name not in builders:
        raise ProfilingError(f"unknown CompressAI model {name!r}; known: {', '.join(sorted(builders))}")
    try:
        return builders[name](quality=quality, pretrained=False)
    except (ValueError, KeyError) as e:
        raise ProfilingError(f"{name} has no quality {quality}: {e}") from None


def _ours(spec: str) -> nn.Module:
    from codec.registry import create_model, list_models

    if spec.endswith(".safetensors"):
        from codec.weights import WeightsError, load_model
        try:
            return load_model(spec)
        except WeightsError as e:
            raise ProfilingError(str(e)) from None
    known = list_models()
    from codec.weights import shipped_weights
    if spec not in known and shipped_weights(spec).is_file():   # a shipped derived model (student-2k-pruned)
        return _ours(str(shipped_weights(spec)))
    if spec.split("+")[0] not in known:
        raise ProfilingError(f"unknown model {spec!r}; use a preset ({', '.join(known)}) with any options "
                             "(PRESET+OPT+...), a .safetensors checkpoint or compressai:NAME:QUALITY")
    try:
        return create_model(spec)
    except (KeyError, ValueError) as e:
        raise ProfilingError(str(e.args[0])) from None


def resolve(model_or_spec) -> Target:
    """A Target from a spec string (preset, checkpoint path, ``compressai:NAME:QUALITY``) or a model."""
    from codec.model import MODULE_ROLES, YUVCodec

    if isinstance(model_or_spec, str):
        spec = model_or_spec
        model = _compressai(spec) if spec.startswith("compressai:") else _ours(spec)
        name = spec
    elif isinstance(model_or_spec, nn.Module):
        model, name = model_or_spec, getattr(model_or_spec, "name", type(model_or_spec).__name__)
    else:
        raise ProfilingError(f"cannot profile a {type(model_or_spec).__name__}")
    if isinstance(model, YUVCodec):
        return Target(name, model, dict(MODULE_ROLES), model.cfg.multiple, "yuv420")
    # CompressAI models downsample six times (g_a then h_a); the zoo's own evaluation pads to 64.
    return Target(name, model, dict(COMPRESSAI_ROLES), 64, "rgb")
