"""torch -> ONNX for one network, with dynamic height/width, the ONNX checker and an ORT-vs-torch check."""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch.export import Dim

from .nets import NetSpec
from .sessions import session_options

OPSET = 18
MAX_LATENT = 1024   # latent grid side at the bitstream's 16384-pixel limit


def export_net(spec: NetSpec, path: Path, opset: int = OPSET) -> Path:
    """Export ``spec`` to ``path`` with the dynamo exporter; H and W stay symbolic."""
    base = max(p.grid for p in spec.inputs + spec.outputs)
    h = Dim("h", min=2, max=MAX_LATENT * 16 // base)
    w = Dim("w", min=2, max=MAX_LATENT * 16 // base)
    # Example of 2 x 3 cells of the coarsest grid: sizes 0 and 1 would be specialised, and h != w
    # keeps the two axes apart.
    args = tuple(torch.zeros(1, p.channels, 2 * base // p.grid, 3 * base // p.grid) for p in spec.inputs)
    # A tuple, not a dict: a dict must use the forward's argument names, which differ from ours.
    dyn = tuple({2: (base // p.grid) * h, 3: (base // p.grid) * w} for p in spec.inputs)
    with _quiet():
        torch.onnx.export(spec.module, args, str(path), input_names=[p.name for p in spec.inputs],
                          output_names=[p.name for p in spec.outputs], dynamic_shapes=dyn,
                          opset_version=opset, external_data=False, dynamo=True)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    return path


def session(path: str | Path, threads: int = 1) -> ort.InferenceSession:
    """A CPU ORT session with a fixed number of intra-op threads."""
    return ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])


@torch.no_grad()
def max_abs_error(spec: NetSpec, path: Path, samples: list[dict]) -> float:
    """Largest |ORT - torch| over every output of every sample."""
    sess = session(path)
    err = 0.0
    for feed in samples:
        ref = spec.module(*(torch.from_numpy(feed[p.name]) for p in spec.inputs))
        ref = ref if isinstance(ref, tuple) else (ref,)
        for r, o in zip(ref, sess.run(None, feed)):
            if r.shape != o.shape:
                raise RuntimeError(f"{path.name}: ORT output shape {o.shape} != torch {tuple(r.shape)}")
            err = max(err, float(np.abs(r.numpy() - o).max()))
    return err


@contextlib.contextmanager
def _quiet():
    """The dynamo exporter prints progress lines and warnings; keep the export log readable."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        level = logging.root.manager.disable
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(level)
