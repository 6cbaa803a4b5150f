"""Post-training static INT8 quantisation (ORT QDQ) calibrated on real codec inputs."""
from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx
import torch
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                      quantize_static)
from onnxruntime.quantization.shape_inference import quant_pre_process
from tqdm import tqdm

from codec.api import pad_planes
from codec.color import to_tensor
from codec.images import load_rgb
from photos import train_images

from .nets import net_inputs


class _Reader(CalibrationDataReader):
    def __init__(self, samples: list[dict]):
        self.it = iter(samples)

    def get_next(self):
        return next(self.it, None)


def calibration_crops(n: int, size: int = 256, seed: int = 0) -> list[np.ndarray]:
    """``n`` random size x size RGB crops from the training corpus (fixed seed)."""
    paths = train_images()
    rng = np.random.default_rng(seed)
    crops = []
    for i in range(n):
        img = load_rgb(paths[rng.integers(len(paths))])
        h, w = img.shape[:2]
        if h < size or w < size:
            crops.append(img[:size, :size])
            continue
        r, c = rng.integers(h - size + 1), rng.integers(w - size + 1)
        crops.append(img[r: r + size, c: c + size])
    return crops


def calibration_samples(model, crops: list[np.ndarray], quiet: bool = False) -> dict[str, list[dict]]:
    """Inputs of every network for every crop (rate points cycled), from the torch encode path."""
    samples: dict[str, list[dict]] = {}
    for i, img in enumerate(tqdm(crops, desc="calibration", disable=quiet, leave=False)):
        y, uv = pad_planes(to_tensor(img), model.cfg.multiple)
        with torch.no_grad():
            for name, feeds in net_inputs(model, y, uv, i % model.num_qualities).items():
                samples.setdefault(name, []).extend(feeds)
    return samples


@dataclass(frozen=True)
class Recipe:
    """How one network is quantised: calibration ``method`` ("minmax", "percentile" or "entropy"),
    boundary nodes kept float (``keep_float``: "first" reads a graph input, "last" writes a graph output),
    further ``float_nodes`` by name, and the activation type ("uint8", or "uint16": 16-bit activations
    with int8 weights, which ORT writes as opset-21 QDQ; convolutions then run in float between the
    Q/DQ pairs)."""

    method: str = "minmax"
    keep_float: tuple[str, ...] = ()
    activations: str = "uint8"
    float_nodes: tuple[str, ...] = ()
    percentile: float = 99.99

    def describe(self) -> dict:
        """The recipe as the manifest records it."""
        return {"format": "QDQ", "weights": "int8 per channel", "activations": f"{self.activations} per tensor",
                "calibration": self.method + (f" {self.percentile}" if self.method == "percentile" else ""),
                "float_nodes": list(self.keep_float) + list(self.float_nodes)}


# Per network: calibration method and which boundary nodes stay float. Measured on student-2k (7.3k
# steps) over 6 evaluation images, PSNR change of one INT8 network against all-FP32:
#  - synthesis: MinMax -0.37 dB, Percentile 99.99 -0.23 dB, and keeping the nodes that read the latents
#    in float -0.17 dB (uint8 per-tensor steps are coarse next to the latent grid 1/gain);
#  - fusion: the mean it outputs shifts every reconstructed latent, so the last conv stays float
#    (fusion_y -0.14 -> -0.07 dB with the split first conv, see nets.Fusion); Percentile hurt fusion_uv;
#  - hyper decoders and context: within +-0.02 dB with plain MinMax.
RECIPES = {
    "synthesis": Recipe("percentile", ("first",)),
    "fusion_y": Recipe("minmax", ("last",)),
    "fusion_uv": Recipe("minmax", ("last",)),
}
DEFAULT_RECIPE = Recipe()

# Alternatives that python -m export.sensitivity --candidates measures against each network's recipe.
CANDIDATES = {
    "uint16 activations": lambda r: replace(r, activations="uint16"),
    "minmax": lambda r: replace(r, method="minmax"),
    "percentile 99.99": lambda r: replace(r, method="percentile", percentile=99.99),
    "entropy": lambda r: replace(r, method="entropy"),
    "first+last float": lambda r: replace(r, keep_float=("first", "last")),
}

_METHODS = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
            "entropy": CalibrationMethod.Entropy}
_TYPES = {"uint8": QuantType.QUInt8, "uint16": QuantType.QUInt16}


def recipe_for(name: str) -> Recipe:
    """The default recipe of the network ``name``."""
    return RECIPES.get(name, DEFAULT_RECIPE)


def boundary_nodes(model: onnx.ModelProto, which: tuple[str, ...]) -> list[str]:
    """Names of the nodes that read a graph input ("first") or write a graph output ("last")."""
    g = model.graph
    ins, outs = {t.name for t in g.input}, {t.name for t in g.output}
    return [n.name for n in g.node
            if ("first" in which and set(n.input) & ins) or ("last" in which and set(n.output) & outs)]


def preprocess(fp32: Path, out: Path) -> Path:
    """ORT's quantisation pre-processing (shape inference, graph clean-up) of ``fp32`` into ``out``."""
    with _quiet():
        quant_pre_process(str(fp32), str(out), skip_symbolic_shape=True)
    return out


def quantize(fp32: Path, out: Path, samples: list[dict], name: str = "", recipe: Recipe | None = None,
             only_nodes: list[str] | None = None, calib_cache: Path | None = None) -> Path:
    """QDQ copy of ``fp32``: per-channel symmetric int8 weights, per-tensor activations, following
    ``recipe`` (default: the network ``name``'s). ``only_nodes``: quantise just these nodes (names of the
    pre-processed graph); ``calib_cache``: a JSON file of calibrated ranges, written on the first call and
    read on later ones (it must match the recipe's method)."""
    recipe = recipe or recipe_for(name)
    calib = {"calibrate_method": _METHODS[recipe.method]}
    if recipe.method == "percentile":
        calib["extra_options"] = {"CalibPercentile": recipe.percentile}
    with tempfile.TemporaryDirectory() as tmp, _quiet():
        pre = preprocess(fp32, Path(tmp) / "pre.onnx")
        exclude = boundary_nodes(onnx.load(str(pre)), recipe.keep_float) + list(recipe.float_nodes)
        quantize_static(str(pre), str(out), _Reader(samples), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=_TYPES[recipe.activations], weight_type=QuantType.QInt8,
                        nodes_to_quantize=only_nodes, nodes_to_exclude=exclude,
                        calibration_cache_path=str(calib_cache) if calib_cache else None, **calib)
    _drop_unused_opsets(out)
    return out


@contextlib.contextmanager
def _quiet():
    """The quantiser logs advice at WARNING level on the root logger and prints progress: silence both."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def _drop_unused_opsets(path: Path) -> None:
    """The pre-processor declares ORT's private operator domains; keep only the ones nodes use, so
    that other runtimes see a plain ONNX file."""
    model = onnx.load(str(path))
    used = {n.domain for n in model.graph.node} | {""}
    keep = [o for o in model.opset_import if o.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(keep)
    onnx.save(model, str(path))
