"""Post-training static INT8 quantisation (ORT QDQ) calibrated on real codec inputs."""
from __future__ import annotations

import contextlib
import functools
import io
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                      quantize_static)
from onnxruntime.quantization.calibrate import (TensorData, TensorsData, create_calibrator, load_tensors_data,
                                                save_tensors_data)
from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry
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
    float_ops: tuple[str, ...] = ()     # operator types kept float
    enabled: bool = True                # False: the network stays FP32 (its "INT8" file is the FP32 one)
    weights: str = "int8"               # "int8", or "int16" (a measurement aid: no int16 kernels)
    margin: float = 1.0                 # calibrated ranges widened this many times around their centre

    def describe(self) -> dict:
        """The recipe as the manifest records it."""
        if not self.enabled:
            return {"format": "FP32 (not quantised)"}
        return {"format": "QDQ", "weights": f"{self.weights} per channel",
                "activations": f"{self.activations} per tensor",
                "calibration": self.method + (f" {self.percentile}" if self.method == "percentile" else ""),
                "float_nodes": list(self.keep_float) + list(self.float_nodes), "float_ops": list(self.float_ops),
                "range_margin": self.margin}


# The recipes before issue 15 (uint8 activations everywhere), kept for the sensitivity command's comparison.
# Measured on student-2k (7.3k steps) over 6 evaluation images, PSNR change of one INT8 network against
# all-FP32: synthesis MinMax -0.37 dB, Percentile 99.99 -0.23 dB, and keeping the nodes that read the latents
# in float -0.17 dB; fusion's last conv float (its mean shifts every reconstructed latent) -0.14 -> -0.07 dB;
# hyper decoders and context within +-0.02 dB with plain MinMax. On the shipped 50.8k-step student-2k the
# seven together cost +73.4% BD-rate (README), so they were replaced by RECIPES below.
PREVIOUS_RECIPES = {
    "synthesis": Recipe("percentile", ("first",)),
    "fusion_y": Recipe("minmax", ("last",)),
    "fusion_uv": Recipe("minmax", ("last",)),
}

# Per network (issue 15), from `python -m export.sensitivity` on student-2k (results/int8_sensitivity.md:
# screening set of 4 evaluation images x 4 rate points, BD-rate vs the FP32 ONNX decode of the same bitstreams;
# one network quantised at a time unless "all"):
#  - 8-bit activations are the loss: previous recipe all seven +100%; 16-bit activations (uint16, per tensor,
#    MinMax; percentile clipping hurts at 16 bits) with the same int8 weights: synthesis +16.8% -> +0.64%,
#    context_y +3.0% -> +0.03%;
#  - the networks on the mean's path (hyper decoders, fusion) shift every reconstructed latent by their error:
#    with 16-bit activations they still lost +2% to +10% each, and as much with int16 weights, because values
#    beyond the calibrated ranges saturate (real pictures go further than the 256x256 calibration crops);
#    ranges widened 4x (Recipe.margin) bring them to +0.06%..+0.17% each, all seven networks so +1.09%.
#    They stay FP32 here (+0.00%, 11.8% of the decoder MACs: hyper decoders 3.1%, fusion 8.7%);
#  - in the synthesis the remaining loss is the int8 weights' (int16 weights: 0.00%), mostly in the two nodes
#    that write the picture: keeping them (and the nodes reading the latents) float gives +0.18%.
# Together +0.22% on the screening set; the evaluation-set figure is in results/int8_eval.md.
RECIPES = {
    "synthesis": Recipe("minmax", ("first", "last"), "uint16"),
    "context_y": Recipe("minmax", (), "uint16"),
    "context_uv": Recipe("minmax", (), "uint16"),
    "hyper_decoder_y": Recipe(enabled=False),
    "hyper_decoder_uv": Recipe(enabled=False),
    "fusion_y": Recipe(enabled=False),
    "fusion_uv": Recipe(enabled=False),
    # gmm's global context (a pooled MLP, ~10k MACs per picture) offsets every predicted mean: FP32, for free.
    "global_context": Recipe(enabled=False),
}
DEFAULT_RECIPE = Recipe()
# Bumped when RECIPES change, so that cached exports (export.cache) are re-quantised.
RECIPES_REVISION = 2

# Alternatives that python -m export.sensitivity --candidates measures, as functions of the network's name.
CANDIDATES = {
    "previous (uint8)": lambda name: PREVIOUS_RECIPES.get(name, DEFAULT_RECIPE),
    "uint8, minmax": lambda name: Recipe("minmax"),
    "uint8, percentile 99.99": lambda name: Recipe("percentile"),
    "uint8, first+last float": lambda name: Recipe("minmax", ("first", "last")),
    "uint16, minmax": lambda name: Recipe("minmax", (), "uint16"),
    "uint16, percentile 99.99": lambda name: Recipe("percentile", (), "uint16"),
    "uint16, first float": lambda name: Recipe("minmax", ("first",), "uint16"),
    "uint16, first+last float": lambda name: Recipe("minmax", ("first", "last"), "uint16"),
    "uint16, ConvTranspose float": lambda name: Recipe("minmax", (), "uint16", float_ops=("ConvTranspose",)),
    "uint16, int16 weights": lambda name: Recipe("minmax", (), "uint16", weights="int16"),
    "uint16, ranges x2": lambda name: Recipe("minmax", (), "uint16", margin=2.0),
    "uint16, ranges x4": lambda name: Recipe("minmax", (), "uint16", margin=4.0),
    "uint16, ranges x4, first+last float": lambda name: Recipe("minmax", ("first", "last"), "uint16", margin=4.0),
    "uint8, ranges x2": lambda name: Recipe("minmax", (), "uint8", margin=2.0),
}

_METHODS = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
            "entropy": CalibrationMethod.Entropy}
_TYPES = {"uint8": QuantType.QUInt8, "uint16": QuantType.QUInt16, "int8": QuantType.QInt8, "int16": QuantType.QInt16}


def recipe_for(name: str) -> Recipe:
    """The default recipe of the network ``name``."""
    return RECIPES.get(name, DEFAULT_RECIPE)


def boundary_nodes(model: onnx.ModelProto, which: tuple[str, ...]) -> list[str]:
    """Names of the nodes that read a graph input ("first") or write a graph output ("last")."""
    g = model.graph
    ins, outs = {t.name for t in g.input}, {t.name for t in g.output}
    return [n.name for n in g.node
            if ("first" in which and set(n.input) & ins) or ("last" in which and set(n.output) & outs)]


def float_nodes(model: onnx.ModelProto, recipe: Recipe) -> list[str]:
    """Names of the nodes of the (pre-processed) ``model`` that ``recipe`` keeps float."""
    ops = set(recipe.float_ops)
    return (boundary_nodes(model, recipe.keep_float) + list(recipe.float_nodes)
            + [n.name for n in model.graph.node if n.op_type in ops])


def preprocess(fp32: Path, out: Path) -> Path:
    """ORT's quantisation pre-processing (shape inference, graph clean-up) of ``fp32`` into ``out``, every
    node named (so that nodes can be picked by name)."""
    with _quiet():
        quant_pre_process(str(fp32), str(out), skip_symbolic_shape=True)
    model = onnx.load(str(out))
    unnamed = [n for n in model.graph.node if not n.name]
    if unnamed:   # (the pre-processor's decompositions leave some nodes unnamed: name them, deterministically)
        taken = {n.name for n in model.graph.node}
        for i, n in enumerate(unnamed):
            n.name = next(f"{n.op_type}_{i}{s}" for s in ("", "_", "__", "___") if f"{n.op_type}_{i}{s}" not in taken)
        onnx.save(model, str(out))
    return out


def quantize(fp32: Path, out: Path, samples: list[dict], name: str = "", recipe: Recipe | None = None,
             only_nodes: list[str] | None = None, calib_cache: Path | None = None) -> Path:
    """QDQ copy of ``fp32``: per-channel symmetric int8 weights, per-tensor activations, following
    ``recipe`` (default: the network ``name``'s). ``only_nodes``: quantise just these nodes (names of the
    pre-processed graph); ``calib_cache``: a JSON file of calibrated ranges, written on the first call and
    read on later ones (it must match the recipe's method)."""
    recipe = recipe or recipe_for(name)
    if not recipe.enabled:
        shutil.copyfile(fp32, out)
        return out
    calib = {"calibrate_method": _METHODS[recipe.method]}
    if recipe.method == "percentile":
        calib["extra_options"] = {"CalibPercentile": recipe.percentile}
    with tempfile.TemporaryDirectory() as tmp, _quiet():
        pre = preprocess(fp32, Path(tmp) / "pre.onnx")
        exclude = float_nodes(onnx.load(str(pre)), recipe)
        run = functools.partial(quantize_static, str(pre), str(out), _Reader(samples), quant_format=QuantFormat.QDQ,
                                per_channel=True, activation_type=_TYPES[recipe.activations],
                                weight_type=_TYPES[recipe.weights], nodes_to_quantize=only_nodes,
                                nodes_to_exclude=exclude, **calib)
        if recipe.margin != 1.0:
            calib_cache = Path(calib_cache or Path(tmp) / "calib.json")
            if not calib_cache.is_file():
                _calibrate(pre, samples, recipe, calib_cache, tmp)
            run = functools.partial(run, calibration_cache_path=str(_widened(calib_cache, recipe.margin, tmp)))
        else:
            run = functools.partial(run, calibration_cache_path=str(calib_cache) if calib_cache else None)
        run()
    _drop_unused_opsets(out)
    return out


def _calibrate(pre: Path, samples: list[dict], recipe: Recipe, cache: Path, tmp: str) -> None:
    """Write the ranges ``quantize_static`` would calibrate on ``pre`` to ``cache``, without quantising
    (a widened recipe needs them before its one quantisation). Same calibrator, same operator types."""
    options = {"percentile": recipe.percentile} if recipe.method == "percentile" else {}
    calibrator = create_calibrator(pre, list(set(QLinearOpsRegistry) | set(QDQRegistry)),
                                   augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                   calibrate_method=_METHODS[recipe.method], extra_options=options)
    calibrator.collect_data(_Reader(samples))
    save_tensors_data(calibrator.compute_data(), cache)


def _widened(cache: Path, margin: float, tmp: str) -> Path:
    """A copy of a calibration cache with every range widened ``margin`` times around its centre: on the
    mean's path a value outside the calibrated range saturates, which costs far more than a coarser step."""
    data = load_tensors_data(cache)
    wide = {}
    for name, td in data.data.items():
        lo, hi = (np.asarray(v, np.float32) for v in td.range_value)
        mid, half = (lo + hi) / 2, (hi - lo) / 2 * margin
        wide[name] = TensorData(lowest=(mid - half).astype(np.float32), highest=(mid + half).astype(np.float32))
    out = Path(tmp) / f"calib-x{margin:g}.json"
    save_tensors_data(TensorsData(data.calibration_method, wide), out)
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
