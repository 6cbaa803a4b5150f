"""Any CompressAI image model as the teacher: ``--teacher compressai:NAME:QUALITY[:PATH]``.

    compressai:mbt2018-mean:6          compressai.zoo's pretrained weights (downloaded by torch.hub, or its cache)
    compressai:mbt2018-mean:6:FILE     a local state dict: .safetensors, or a weights-only torch file (.pth.tar)

``ForeignTeacher`` makes such a model answer the Distiller the way our teacher does: it runs on the RGB
picture rebuilt from the student's YUV 4:2:0 planes and its reconstruction goes back to YUV 4:2:0
(output KD); its quantised latent (the input of its synthesis ``g_s``, on the H/16 grid like ours for
every zoo image model) feeds latent KD through the Distiller's 1x1 projection, resized if a grid differs.
It has no mean and scale index of our entropy path, so entropy KD is off for it. It has one rate point:
every student rate point is pulled toward the teacher's one quality.
"""
from __future__ import annotations

import contextlib
import pickle
import warnings
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn as nn
import torch.nn.functional as F

from codec.color import rgb_to_yuv420, yuv420_to_rgb

PREFIX = "compressai:"


class TeacherError(ValueError):
    """A teacher spec that names no known model, or weights that cannot be had or do not fit."""


def is_foreign(spec) -> bool:
    """Whether a --teacher value names a CompressAI model rather than our weights."""
    return isinstance(spec, str) and spec.startswith(PREFIX)


def parse_spec(spec: str) -> tuple[str, int, Path | None]:
    """``compressai:NAME:QUALITY[:PATH]`` -> (name, quality, path or None); TeacherError if malformed."""
    parts = spec[len(PREFIX):].split(":", 2)
    if len(parts) < 2 or not parts[1].isdigit() or not parts[0]:
        raise TeacherError(f"bad teacher {spec!r}: use compressai:NAME:QUALITY[:PATH], e.g. compressai:mbt2018-mean:6")
    return parts[0].replace("_", "-"), int(parts[1]), Path(parts[2]) if len(parts) == 3 and parts[2] else None


def _qualities() -> dict[str, list[int]]:
    """The zoo's image models and their qualities."""
    from compressai.zoo.image import cfgs
    return {k: sorted(v) for k, v in cfgs.items()}


def _first_line(e: BaseException, limit: int = 200) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:limit]


def read_state_dict(path: Path) -> dict:
    """A state dict from a .safetensors file or a weights-only torch file (a training checkpoint's
    'state_dict' is taken); never runs code from the file. TeacherError (one line) if unreadable."""
    if not path.is_file():
        raise TeacherError(f"cannot read teacher weights {path}: no such file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            return load_file(str(path))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message advises weights_only=False, i.e. running the file's code: keep only its reason.
        lines = [ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()]
        why = next((ln for ln in lines if not ln.startswith(("Please file", "Check the doc"))), "not a pickle")
        raise TeacherError(f"refused teacher weights {path}: not tensors and numbers only "
                           f"({why.rstrip('.')[:160]}); nothing in it was run") from None
    except Exception as e:  # noqa: BLE001 - safetensors, zip and I/O errors alike end in one line
        raise TeacherError(f"cannot read teacher weights {path}: {_first_line(e)}") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise TeacherError(f"cannot read teacher weights {path}: not a state dict of tensors")
    return state


def _fit(model: nn.Module, state: dict, what: str) -> None:
    """Load ``state`` into ``model``; TeacherError naming the first misfit otherwise."""
    own = model.state_dict()
    lacking = [k for k in own if k not in state]
    foreign = [k for k in state if k not in own]
    shape = [k for k in own if k in state and own[k].numel() and own[k].shape != state[k].shape]
    for keys, text in ((foreign, "tensors it lacks"), (lacking, "tensors missing"), (shape, "tensors of other shapes")):
        if keys:
            raise TeacherError(f"{what}: {len(keys)} {text}, e.g. {keys[0]}")
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError) as e:
        raise TeacherError(f"{what}: {_first_line(e)}") from None


def build_compressai(spec: str) -> nn.Module:
    """The CompressAI model a spec names, with its weights (pretrained from the zoo, or the local file)."""
    from compressai.zoo import load_state_dict as rename_keys
    from compressai.zoo import image_models

    name, quality, path = parse_spec(spec)
    known = _qualities()
    if name not in known:
        raise TeacherError(f"unknown CompressAI model {name!r}; known: {', '.join(sorted(known))}")
    qualities = known[name]
    if quality not in qualities:
        raise TeacherError(f"CompressAI {name} has no quality {quality}; it has {qualities[0]}..{qualities[-1]}")
    if path is None:
        try:
            return image_models[name](quality=quality, pretrained=True, progress=False)
        except Exception as e:  # noqa: BLE001 - URLError, HTTPError, timeouts, a truncated download
            raise TeacherError(f"cannot download the pretrained {name} quality {quality} ({_first_line(e, 120)}); "
                               f"fetch it where there is network and pass {PREFIX}{name}:{quality}:PATH") from None
    model = image_models[name](quality=quality, pretrained=False)
    _fit(model, rename_keys(read_state_dict(path)), f"teacher weights {path} do not fit {name} quality {quality}")
    return model


class ForeignTeacher(nn.Module):
    """A CompressAI model called like our teacher: ``(y, uv, q) -> {"y", "uv", "latent_hat"}`` in YUV 4:2:0.

    ``q`` is ignored (one rate point). ``latent_hat`` is what the model's synthesis ``g_s`` receives;
    ``cfg.y_channels`` is its channel count (``uv_channels`` 0), which sizes the Distiller's projection."""

    kd_terms = ("output", "latent")

    def __init__(self, model: nn.Module, name: str):
        super().__init__()
        self.model, self.name = model.eval(), name
        self.multiple = 64  # every zoo image model needs sides that are multiples of 64
        self._latent: list[torch.Tensor] = []
        if not hasattr(model, "g_s"):
            raise TeacherError(f"{name} has no synthesis g_s to read its latent from")
        model.g_s.register_forward_pre_hook(lambda _m, args: self._latent.append(args[0]))
        with torch.no_grad():
            probe = self._run(torch.zeros(1, 3, 64, 64))[1]
        self.cfg = SimpleNamespace(y_channels=probe.shape[1], uv_channels=0)
        self.stride = 64 // probe.shape[-1]

    def _run(self, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(reconstruction in RGB, quantised latent) of an RGB batch (padded to the model's multiple)."""
        h, w = rgb.shape[-2:]
        ph, pw = (-h) % self.multiple, (-w) % self.multiple
        x = F.pad(rgb, (0, pw, 0, ph), mode="replicate") if ph or pw else rgb
        self._latent.clear()
        x_hat = self.model(x)["x_hat"][..., :h, :w]
        latent = self._latent[-1]
        if ph or pw:  # the latent of the picture, not of its padding
            s = x.shape[-1] // latent.shape[-1]
            latent = latent[..., : -(-h // s), : -(-w // s)]
        return x_hat.clamp(0, 1), latent

    def forward(self, y: torch.Tensor, uv: torch.Tensor, q=None) -> dict:
        """The teacher's outputs for the student's planes, keyed as the Distiller reads them."""
        with contextlib.ExitStack() as stack:
            if y.device.type in ("cpu", "cuda"):  # the foreign model runs in fp32
                stack.enter_context(torch.autocast(y.device.type, enabled=False))
            x_hat, latent = self._run(yuv420_to_rgb(y.float(), uv.float()))
        y_hat, uv_hat = rgb_to_yuv420(x_hat)
        return {"y": y_hat, "uv": uv_hat, "latent_hat": latent}


def load_teacher(spec: str | Path):
    """The teacher a --teacher value names: a ForeignTeacher for ``compressai:...``, else our weights
    (codec.weights.load_model)."""
    if is_foreign(spec):
        name, quality, _ = parse_spec(str(spec))
        teacher = ForeignTeacher(build_compressai(str(spec)), f"compressai {name} q{quality}")
        for p in teacher.parameters():
            p.requires_grad_(False)
        return teacher
    from codec.weights import load_model
    return load_model(str(spec))
