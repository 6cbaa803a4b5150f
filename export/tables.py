"""The integer side of a model as plain arrays: scale decoder, CDF tables, gain steps, z offsets.

None of these may go through a float runtime: the entropy decoder consumes them, so they are written
as exact integers (``.npz``) that ``export.runtime`` reads with numpy alone.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from codec import intnet

INT32 = np.iinfo(np.int32)


def _int32(t: torch.Tensor, what: str) -> np.ndarray:
    a = t.detach().double().numpy()
    if a.size and (a.min() < INT32.min or a.max() > INT32.max):
        raise OverflowError(f"{what} does not fit in int32")
    return a.astype(np.int32)


def scale_decoder_arrays(dec) -> tuple[dict[str, np.ndarray], list[dict]]:
    """(npz arrays, layer layout) of an IntScaleDecoder: int8 weights, int32 biases, right shifts."""
    arrays, layout = {}, []
    for i, (layer, r) in enumerate(zip(dec.layers, dec.shuffle)):
        w, b, shift = layer.integer_params()
        arrays[f"w{i}"] = w.numpy().astype(np.int8)          # |w| <= 127 by construction
        arrays[f"b{i}"] = _int32(b, f"scale decoder layer {i} bias")
        layout.append({"cin": layer.in_channels, "cout": layer.out_channels, "kernel": layer.kernel_size[0],
                       "shift": int(shift), "relu": bool(layer.relu), "pixel_shuffle": int(r)})
    arrays["shift"] = np.array([d["shift"] for d in layout], np.int32)
    arrays["relu"] = np.array([d["relu"] for d in layout], np.bool_)
    arrays["pixel_shuffle"] = np.array([d["pixel_shuffle"] for d in layout], np.int32)
    return arrays, layout


def cdf_arrays(entropy_model) -> dict[str, np.ndarray]:
    """Quantised CDF rows (zero-padded), their lengths and offsets, exactly as the rANS coder takes them."""
    return {"cdf": _int32(entropy_model._quantized_cdf, "cdf"),
            "length": _int32(entropy_model._cdf_length.reshape(-1), "cdf length"),
            "offset": _int32(entropy_model._offset.reshape(-1), "cdf offset")}


def rate_arrays(model) -> dict[str, np.ndarray]:
    """Integer gain steps per rate point and channel, and the integer z median offsets."""
    return {"gain_steps": _int32(torch.round(model.gain_steps.detach()), "gain steps"),
            "z_offset": _int32(model._z_symbols_offset().reshape(-1), "z offsets")}


def write_tables(model, out: Path) -> dict:
    """Write scale_decoder.npz, cdf_z.npz, cdf_residual.npz, rate.npz (and with option ctxscale
    scale_context.npz); return their manifest entries."""
    sd, layout = scale_decoder_arrays(model.scale_decoder)
    np.savez(out / "scale_decoder.npz", **sd)
    # Compressed: the CDF rows are zero-padded to the longest table.
    np.savez_compressed(out / "cdf_z.npz", **cdf_arrays(model.entropy_bottleneck))
    np.savez_compressed(out / "cdf_residual.npz", **cdf_arrays(model.gaussian_conditional))
    np.savez(out / "rate.npz", **rate_arrays(model))
    entry = {}
    if getattr(model, "scale_context", None) is not None:
        lut, t_edges = model.scale_context.table()
        np.savez(out / "scale_context.npz", lut=lut, t_edges=t_edges)
        entry["scale_context"] = {"file": "scale_context.npz", "rule": "codec/scale_context.py: context_index; "
                                  "residual streams: coded anchors, then coded non-anchors"}
    return entry | {
        "scale_decoder": {"file": "scale_decoder.npz", "layers": layout, "input_min": intnet.INPUT_MIN,
                          "input_max": intnet.INPUT_MAX, "act_max": intnet.ACT_MAX,
                          "acc_limit": intnet.ACC_LIMIT, "rounding": "floor((acc + 2**(shift-1)) / 2**shift)"},
        "entropy": {"z": "cdf_z.npz", "residual": "cdf_residual.npz", "rate": "rate.npz"},
    }
