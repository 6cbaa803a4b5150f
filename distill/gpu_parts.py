"""The weights a GPU burst returns: ``write_parts`` writes a model's weights as float16 safetensors parts of at
most 15 MiB each (within the device's return limits), every part of a set before any is renamed into place;
``read_parts`` reads a returned folder back, refusing sets with parts missing or from different steps; and
``unpack`` turns them into weights/PRESET.safetensors here (entropy tables rebuilt, step and GPU-seconds in
the metadata), optionally checked by a ``roundtrip`` through the codec CLI. Used by distill.gpu_burst
(snapshots) and distill.gpu (``unpack``).
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
PART_BYTES = 15 * 2**20              # one returned weights part


def split_state(state: dict, limit: int = PART_BYTES) -> list[dict]:
    """Split a state dict (key order kept) into parts of at most ``limit`` bytes of tensor data."""
    parts, size = [{}], 0
    for k, v in state.items():
        n = v.numel() * v.element_size()
        if n > limit:
            raise ValueError(f"tensor {k} alone is {n} bytes, over the part limit {limit}")
        if size + n > limit:
            parts.append({})
            size = 0
        parts[-1][k] = v
        size += n
    return parts


def write_parts(model, out: Path, tag: str, meta: dict, limit: int = PART_BYTES) -> list[Path]:
    """Write a model's weights (floats as float16) into OUT/TAG-0.safetensors, TAG-1, ... with ``meta``;
    every part is written before any is renamed into place, so a set is never half old, half new."""
    from safetensors.torch import save_file

    state = {k: (v.detach().to("cpu", torch.float16) if v.is_floating_point() else v.detach().cpu()).contiguous()
             for k, v in model.state_dict().items()}
    parts = split_state(state, limit)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, part in enumerate(parts):
        tmp = out / f"{tag}-{i}.tmp"
        save_file(part, str(tmp), metadata={**{k: str(v) for k, v in meta.items()},
                                            "preset": model.name, "part": str(i), "parts": str(len(parts))})
        paths.append(tmp)
    final = [p.with_suffix(".safetensors") for p in paths]
    for tmp, dst in zip(paths, final):
        tmp.chmod(0o644)
        os.replace(tmp, dst)
    return final


def read_parts(src: str | Path) -> dict:
    """The weights returned in ``src``: {tag: (state dict, metadata)}; ValueError (one line) for a set
    with parts missing or from different steps."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    groups: dict[str, list[Path]] = {}
    for p in sorted(Path(src).glob("*-[0-9]*.safetensors")):
        groups.setdefault(p.stem.rsplit("-", 1)[0], []).append(p)
    found = {}
    for tag, paths in groups.items():
        try:
            metas = []
            for p in paths:
                with safe_open(str(p), "pt") as f:
                    metas.append(f.metadata() or {})
            state = {k: v for p in paths for k, v in load_file(str(p)).items()}
        except (OSError, SafetensorError) as e:
            raise ValueError(f"cannot read returned weights {paths[0]}: {str(e).splitlines()[0]}") from None
        want = int(metas[0].get("parts", 0))
        steps = {m.get("step") for m in metas}
        if want != len(paths) or sorted(int(m.get("part", -1)) for m in metas) != list(range(want)):
            raise ValueError(f"{tag} in {src}: {len(paths)} parts of {want}; copy every {tag}-N.safetensors")
        if len(steps) != 1:
            raise ValueError(f"{tag} in {src}: parts from different steps ({', '.join(sorted(steps))})")
        found[tag] = (state, metas[0])
    return found


def unpack(src: str | Path, into: str | Path = "weights", verify: bool = False) -> list[dict]:
    """Turn the returned parts into ``into``/PRESET.safetensors (entropy tables rebuilt here, step and
    GPU-seconds in the metadata); ``verify``: encode and decode a picture with each through the codec CLI."""
    from codec.registry import create_model
    from training.checkpoints import CARRIED_META, export_trained
    from codec.weights import WeightsError, load_model, weights_metadata

    # metadata that unpacked weights keep (the rest describes the parts); the GPU record as later runs carry it
    keep_meta = ("train_s", "threads", *CARRIED_META, "bf16", "kd_teacher_step")

    found = read_parts(src)
    if not found:
        raise ValueError(f"no returned weights (NAME-N.safetensors) in {src}")
    done = []
    for tag, (state, meta) in sorted(found.items()):
        model = create_model(meta["preset"])
        if "gain_steps" in state:  # as many rate points as were trained (a 6-point model cannot load 8)
            model.set_rate_points(int(state["gain_steps"].shape[0]))
        try:
            model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
        except (RuntimeError, KeyError) as e:
            raise WeightsError(f"returned {tag} does not fit {meta['preset']!r}: {str(e).splitlines()[0]}") from None
        path = Path(into) / f"{meta['preset']}.safetensors"
        keep = {k: meta[k] for k in keep_meta if k in meta}
        with torch.no_grad():
            export_trained(model, src, path, int(meta["step"]), **keep)
        load_model(str(path))  # what the codec will do with it
        row = {"weights": str(path), **{k: v for k, v in weights_metadata(path).items() if k != "preset"}}
        if verify:
            with tempfile.TemporaryDirectory() as work:
                row["roundtrip"] = roundtrip(meta["preset"], path, Path(work))
        done.append(row)
    return done


def roundtrip(preset: str, weights: Path, work: Path) -> str:
    """Encode then decode a small picture with ``weights`` through ``python -m codec``; returns the sizes,
    raises ValueError with the CLI's error line when either step fails."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, 96)[None, :, None] * np.ones((64, 1, 3))
    img = np.clip(ramp + rng.normal(0, 12, (64, 96, 3)), 0, 255).astype(np.uint8)
    src, bits, back = work / "in.png", work / f"{preset}.bin", work / f"{preset}.png"
    Image.fromarray(img).save(src)
    for cmd in (["encode", str(src), "-o", str(bits), "--model", preset, "--weights", str(weights), "-q", "3"],
                ["decode", str(bits), "-o", str(back), "--weights", str(weights)]):
        r = subprocess.run([sys.executable, "-m", "codec", *cmd], cwd=ROOT, capture_output=True, text=True)
        if r.returncode != 0:
            raise ValueError(f"python -m codec {cmd[0]} with {weights} failed: {r.stderr.strip()[-300:]}")
    with Image.open(back) as im:
        if im.size != (96, 64):
            raise ValueError(f"decoded picture is {im.size}, not (96, 64)")
    return f"96x64 -> {bits.stat().st_size} bytes -> decoded"
