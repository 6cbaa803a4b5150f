"""In-graph crops for tiled synthesis: drop, inside the exported synthesis, what a tile no longer needs.

A tile decodes its latent window plus the synthesis's whole receptive field around it (codec/tiling.py).
Each layer consumes part of that margin, so the feature maps of the later, larger stages need only a
little of it: without crops a 512-pixel tile with the 6 latent cells of margin student-2k needs computes
(44/32)^2 = 1.9x its own area at every stage; cropping before each upsampling leaves 1.2x.

The exported graph gets, before each upsampling (each ConvTranspose; for a ShuffleUp or a LinearTail,
before its all-ones channel is added), a ``Slice`` of rows and columns whose bounds are graph inputs
``crop{k}_starts`` / ``crop{k}_ends`` (int64 [2]: rows, columns) for the tensors with k positions per
latent cell. Their defaults (initializers) keep everything, so the graph computes exactly what it did
without crops and other callers see no difference. The decoder computes the bounds per tile from the
footprints of those tensors (``codec.tiling.probe_footprints(at=...)``, written to the manifest), so every
kept output pixel still depends on exactly the values it depends on in the whole-picture decode.

A level is cropped only where every crop point on it feeds nothing but its own upsampling (so tensors
that meet later, such as the luma features the chroma branch reads, are cropped alike).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch.nn as nn
from onnx import TensorProto, helper, numpy_helper

KEEP_ALL = 1 << 62


def torch_crop_points(synthesis: nn.Module, channels: tuple[int, int]) -> dict[int, list[str]]:
    """Upsampling modules of ``synthesis`` (ShuffleUp, LinearTail, or ConvTranspose2d outside them) by the number of
    positions per latent cell of their input."""
    import torch

    from .synthesis import LinearTail, ShuffleUp

    ups = (ShuffleUp, LinearTail)
    inner = {f"{n}.{c}" for n, m in synthesis.named_modules() if isinstance(m, ups) for c, _ in m.named_modules() if c}
    names = [n for n, m in synthesis.named_modules()
             if isinstance(m, ups) or (isinstance(m, nn.ConvTranspose2d) and n not in inner)]
    grid: dict[str, int] = {}
    handles = [synthesis.get_submodule(n).register_forward_pre_hook(
        lambda mod, args, n=n: grid.__setitem__(n, args[0].shape[-1] // 3)) for n in names]
    try:
        with torch.no_grad():
            synthesis(torch.zeros(1, channels[0], 2, 3), torch.zeros(1, channels[1], 2, 3))
    finally:
        for h in handles:
            h.remove()
    out: dict[int, list[str]] = {}
    for n in names:
        out.setdefault(grid[n], []).append(n)
    return out


def _producer(graph) -> dict[str, onnx.NodeProto]:
    return {o: n for n in graph.node for o in n.output}


def _consumers(graph) -> dict[str, list[onnx.NodeProto]]:
    out: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            out.setdefault(i, []).append(n)
    return out


def onnx_crop_points(model: onnx.ModelProto) -> list[tuple[str, onnx.NodeProto, bool]]:
    """(tensor to crop, its first ConvTranspose, whether cropping it is safe) for every tensor that
    transposed convolutions upsample: a ConvTranspose's input, or for a ShuffleUp the tensor its all-ones
    channel is added to (the two of a LinearTail share one). Safe: everything computed from the tensor
    flows only into those ConvTransposes."""
    g = model.graph
    prod, cons = _producer(g), _consumers(g)
    outputs = {o.name for o in g.output}
    groups: dict[str, list[onnx.NodeProto]] = {}
    for node in g.node:
        if node.op_type != "ConvTranspose":
            continue
        t = node.input[0]
        p = prod.get(t)
        if p is not None and p.op_type == "Concat" and len(p.input) == 2:
            t = p.input[0]
        groups.setdefault(t, []).append(node)
    points = []
    for t, ups in groups.items():
        up_ids = {id(n) for n in ups}
        # every node reachable from t without passing the ConvTransposes must feed only that closure
        seen, todo = set(), [t]
        while todo:
            name = todo.pop()
            for c in cons.get(name, []):
                if id(c) in up_ids or id(c) in seen:
                    continue
                seen.add(id(c))
                todo.extend(c.output)
        closure = [n for n in g.node if id(n) in seen]
        reached = {o for n in closure for o in n.output}
        safe = t not in outputs and not (reached & outputs)
        for n in closure:
            for o in n.output:
                if any(id(c) not in up_ids and id(c) not in seen for c in cons.get(o, [])):
                    safe = False
        points.append((t, ups[0], safe))
    return points


def _grids(model: onnx.ModelProto, tensors: list[str], channels: tuple[int, int]) -> dict[str, int]:
    """Positions per latent cell of each tensor, from one small ORT run that also returns them."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    known = {o.name for o in m.graph.output}
    for t in tensors:
        if t not in known:
            m.graph.output.append(helper.make_tensor_value_info(t, TensorProto.FLOAT, None))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    feed = {"y_hat": np.zeros((1, channels[0], 2, 3), np.float32), "uv_hat": np.zeros((1, channels[1], 2, 3), np.float32)}
    names = [o.name for o in s.get_outputs()]
    res = dict(zip(names, s.run(names, feed)))
    return {t: res[t].shape[-1] // 3 for t in tensors}


def add_crops(path: Path, synthesis: nn.Module, channels: tuple[int, int]) -> dict | None:
    """Insert the crop Slices into the synthesis ONNX file at ``path`` (rewritten in place) and return the
    manifest entry (levels with their input names and footprints), or None when nothing can be cropped."""
    from codec.tiling import probe_footprints

    model = onnx.load(str(path))
    points = onnx_crop_points(model)
    if not points:
        return None
    grids = _grids(model, [t for t, _, _ in points], channels)
    by_level: dict[int, list] = {}
    for t, node, safe in points:
        by_level.setdefault(grids[t], []).append((t, node, safe))
    modules = torch_crop_points(synthesis, channels)
    g = model.graph
    cons = _consumers(g)
    levels = []
    for k in sorted(by_level):
        pts = by_level[k]
        if not all(safe for _, _, safe in pts) or len(modules.get(k, [])) != len(pts):
            continue
        fps = probe_footprints(synthesis, channels, at=modules[k])
        starts, ends = f"crop{k}_starts", f"crop{k}_ends"
        for name, value in ((starts, [0, 0]), (ends, [KEEP_ALL, KEEP_ALL])):
            g.initializer.append(numpy_helper.from_array(np.array(value, np.int64), name))
            g.input.append(helper.make_tensor_value_info(name, TensorProto.INT64, [2]))
        axes = f"crop{k}_axes"
        g.initializer.append(numpy_helper.from_array(np.array([2, 3], np.int64), axes))
        for t, node, _ in pts:
            cropped = f"{t}_crop{k}"
            users = [c for c in cons.get(t, [])]
            first = min(list(g.node).index(c) for c in users)
            g.node.insert(first, helper.make_node("Slice", [t, starts, ends, axes], [cropped], name=f"crop{k}_{t}"))
            for c in users:
                for i, name in enumerate(c.input):
                    if name == t:
                        c.input[i] = cropped
        levels.append({"positions_per_cell": k, "starts": starts, "ends": ends,
                       "footprints": {p: f.to_json() for p, f in fps.items()}})
    if not levels:
        return None
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return {"levels": levels,
            "rule": "per tile and level (positions per latent cell k, increasing): need = union over planes of "
                    "footprint.latents(kept output range) on a grid of k * latent size; starts = need_lo - "
                    "have_lo, ends = need_hi - have_lo, where have is the tile's latent window x k at the first "
                    "level, else the previous level's need x (k / previous k)"}
