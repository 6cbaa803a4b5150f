r"""Structured channel pruning of a student's synthesis transforms (torch-pruning's dependency graph).

Only the internal widths of ``synthesis_y`` / ``synthesis_uv`` are pruned: the latent channel counts stay,
because the entropy path, the integer scale decoder and the bitstream layout depend on them. A prunable
*stream* is the output of a PixelShuffle inside the synthesis that is not a model output; pruning stream
channel c removes rows c*r*r .. c*r*r+r*r-1 of the conv before the shuffle, the channel in every residual
DSBlock of the stage (depthwise, grouped 1x1 and its ChannelShuffle) and the input of the next layers.

torch-pruning has no pruner for PixelShuffle, PixelUnshuffle, ChannelShuffle or GDN; the custom pruners
below couple their input and output channels through explicit index maps. Its grouped-conv pruner is only
right when the same in-group offsets go from every group, so a stream that runs through a grouped 1x1 conv
with ChannelShuffle(G) is pruned in units of G*G channels that satisfy that (see ``_units``).

A pruned model is saved as safetensors whose metadata holds the preset name and the *plan*: every pruning
step (stream, channel indices, and the tensor slices torch-pruning kept), so ``codec.weights.load_model``
replays it on a fresh preset exactly (``codec.pruned``), without this package.

    python -m distill.prune --student weights/student-2k.safetensors --teacher weights/teacher.safetensors \
        --target-kmac 1.5 --rounds 3 --finetune-steps 300 -o runs/prune/student-2k-pruned.safetensors
"""
from __future__ import annotations

import copy
import json
import math
import sys
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn as nn
import torch_pruning as tp
from compressai.layers import GDN
from torch_pruning import _helpers
from torch_pruning.dependency.dependency import Dependency

from codec.model import Synthesis
from codec.pruned import plan_of, replay
from student.blocks import ChannelShuffle

SYNTHESIS = ("synthesis_y", "synthesis_uv")


# ---- custom pruners ---------------------------------------------------------------------------
class _IndexMap:
    """Index mapping for a torch-pruning dependency: each index -> the indices ``fn`` gives, deduplicated
    and sorted (a fixed order keeps the group search from revisiting a layer with the same set)."""

    def __init__(self, fn: Callable[[int], list[int]]):
        self.fn = fn

    def __call__(self, idxs):
        out = {}
        for i in idxs:
            for j in self.fn(i.idx):
                out.setdefault(j, _helpers._HybridIndex(idx=j, root_idx=i.root_idx))
        return [out[j] for j in sorted(out)]


class _ShapePruner(tp.pruner.BasePruningFunc):
    """Pruner of a parameter-free layer whose channels move (shuffles): nothing to cut, only the
    channel counts seen when the graph was traced, and the in<->out index maps."""

    def __init__(self, channels: dict):
        super().__init__()
        self.channels = channels        # module -> (in channels, out channels) from the trace

    def prune_out_channels(self, layer, idxs):
        return layer

    def prune_in_channels(self, layer, idxs):
        return layer

    def get_out_channels(self, layer):
        return self.channels[layer][1]

    def get_in_channels(self, layer):
        return self.channels[layer][0]

    def out_to_in(self, layer) -> Callable[[int], list[int]]:
        raise NotImplementedError

    def in_to_out(self, layer) -> Callable[[int], list[int]]:
        raise NotImplementedError


class PixelShufflePruner(_ShapePruner):
    """PixelShuffle(r): output channel c is input channels c*r*r .. c*r*r + r*r - 1."""

    def out_to_in(self, layer):
        rr = layer.upscale_factor ** 2
        return lambda c: list(range(c * rr, (c + 1) * rr))

    def in_to_out(self, layer):
        rr = layer.upscale_factor ** 2
        return lambda c: [c // rr]


class PixelUnshufflePruner(_ShapePruner):
    """PixelUnshuffle(r): input channel c is output channels c*r*r .. c*r*r + r*r - 1."""

    def out_to_in(self, layer):
        rr = layer.downscale_factor ** 2
        return lambda c: [c // rr]

    def in_to_out(self, layer):
        rr = layer.downscale_factor ** 2
        return lambda c: list(range(c * rr, (c + 1) * rr))


class ChannelShufflePruner(_ShapePruner):
    """ChannelShuffle(G) on c = G*C channels: output i*G + g is input g*C + i."""

    def out_to_in(self, layer):
        g, c = layer.groups, self.channels[layer][0] // layer.groups
        return lambda j: [(j % g) * c + j // g]

    def in_to_out(self, layer):
        g, c = layer.groups, self.channels[layer][0] // layer.groups
        return lambda k: [(k % c) * g + k // c]


class GDNPruner(tp.pruner.BasePruningFunc):
    """compressai GDN: channel k owns beta[k], gamma[k, :] and gamma[:, k] (input and output coupled)."""

    def prune_out_channels(self, layer: GDN, idxs):
        keep = [i for i in range(layer.beta.shape[0]) if i not in set(idxs)]
        layer.beta = self._prune_parameter_and_grad(layer.beta, keep, 0)
        gamma = self._prune_parameter_and_grad(layer.gamma, keep, 0)
        layer.gamma = self._prune_parameter_and_grad(gamma, keep, 1)
        return layer

    prune_in_channels = prune_out_channels  # intra-layer dependency

    def get_out_channels(self, layer):
        return layer.beta.shape[0]

    def get_in_channels(self, layer):
        return layer.beta.shape[0]


SHAPE_PRUNERS = {nn.PixelShuffle: PixelShufflePruner, nn.PixelUnshuffle: PixelUnshufflePruner,
                 ChannelShuffle: ChannelShufflePruner}


def _shuffle_by_index(layer: ChannelShuffle):
    """ChannelShuffle as one index_select, so the tracer sees a single op (its view/transpose/reshape
    would otherwise become reshape nodes that torch-pruning may map as a flatten)."""
    def forward(x):
        g, c = layer.groups, x.shape[1] // layer.groups
        perm = torch.arange(x.shape[1], device=x.device).view(g, c).t().reshape(-1)
        return torch.index_select(x, 1, perm)
    return forward


def build_graph(module: nn.Module, example_inputs: tuple) -> tp.DependencyGraph:
    """torch-pruning dependency graph of ``module`` with the custom pruners and their index maps.

    The shuffles' channel counts are those of the trace, so a graph serves one pruning: build a new
    one after ``group.prune()``."""
    channels: dict = {}
    hooks = [m.register_forward_hook(lambda m, i, o: channels.__setitem__(m, (i[0].shape[1], o.shape[1])))
             for m in module.modules() if isinstance(m, tuple(SHAPE_PRUNERS))]
    shuffles = [m for m in module.modules() if isinstance(m, ChannelShuffle)]
    for m in shuffles:
        m.forward = _shuffle_by_index(m)
    frozen = [p for p in module.parameters() if not p.requires_grad]
    for p in frozen:
        p.requires_grad_(True)   # the graph is traced through autograd
    try:
        pruners = {cls: p(channels) for cls, p in SHAPE_PRUNERS.items()}
        pruners[GDN] = GDNPruner()
        with torch.enable_grad():
            dg = tp.DependencyGraph().build_dependency(module, example_inputs, customized_pruners=pruners,
                                                       verbose=False)
    finally:
        for h in hooks:
            h.remove()
        for m in shuffles:
            del m.forward
        for p in frozen:
            p.requires_grad_(False)
    for node in dg.module2node.values():
        pruner = pruners.get(type(node.module))
        if isinstance(pruner, _ShapePruner):
            _couple(node, pruner)
    return dg


def _couple(node, pruner: _ShapePruner) -> None:
    """Intra-layer dependencies of a shuffle: pruning its output prunes the mapped inputs and back."""
    for trig, handler, fn in ((pruner.prune_out_channels, pruner.prune_in_channels, pruner.out_to_in),
                              (pruner.prune_in_channels, pruner.prune_out_channels, pruner.in_to_out)):
        dep = Dependency(trigger=trig, handler=handler, source=node, target=node)
        dep.index_mapping[0] = _IndexMap(fn(node.module))
        node.dependencies.append(dep)


def channel_group(dg: tp.DependencyGraph, root: nn.Module, idxs: list[int]):
    """The dependency group removing output channels ``idxs`` of ``root`` (a layer of the graph)."""
    pruner = dg.get_pruner_of_module(root)
    return dg.get_pruning_group(root, pruner.prune_out_channels, sorted(int(i) for i in idxs))


# ---- what a group removes -------------------------------------------------------------------------
def _is_depthwise(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels == m.out_channels


def _slices(module: nn.Module, handler_name: str, idx: int) -> list[tuple[torch.Tensor, tuple]]:
    """(parameter, index) pairs that pruning channel ``idx`` of ``module`` removes."""
    out = handler_name == "prune_out_channels"
    if isinstance(module, GDN):
        return [(module.beta, (idx,)), (module.gamma, (idx,)), (module.gamma, (slice(None), idx))]
    if isinstance(module, nn.Conv2d):
        w, b = module.weight, module.bias
        if _is_depthwise(module) or out:
            return [(w, (idx,))] + ([(b, (idx,))] if b is not None else [])
        cin_g, cout_g = module.in_channels // module.groups, module.out_channels // module.groups
        k = idx // cin_g
        return [(w, (slice(k * cout_g, (k + 1) * cout_g), idx % cin_g))]
    if isinstance(module, nn.ConvTranspose2d) and module.groups == 1:
        w, b = module.weight, module.bias
        if out:
            return [(w, (slice(None), idx))] + ([(b, (idx,))] if b is not None else [])
        return [(w, (idx,))]
    if any(True for _ in module.parameters(recurse=False)):
        raise NotImplementedError(f"no channel slices for {type(module).__name__}: add a pruner for it")
    return []


def group_slices(group):
    """Yield (root index, parameter, index, layer) for every parameter slice the group would remove."""
    for item in group:
        module, name = item.dep.target.module, item.dep.handler.__name__
        if not isinstance(module, nn.Module):
            raise NotImplementedError("pruning a bare nn.Parameter is not supported here")
        for idx, root in zip(item.idxs, item.root_idxs):
            for p, index in _slices(module, name, idx):
                yield root, p, index, module


def zero_group(group) -> None:
    """Set to zero every weight and bias slice the group would remove (its channels then carry 0)."""
    with torch.no_grad():
        for _, p, index, _ in group_slices(group):
            p[index] = 0


def touches_output(group) -> bool:
    """Whether the group prunes a model output (such channels are part of the interface): an output
    op, or the output channels of a layer nothing consumes (the tracer adds no output op after a
    registered layer)."""
    for item in group:
        node = item.dep.target
        if isinstance(node.module, tp.ops._OutputOp):
            return True
        if item.dep.handler.__name__ == "prune_out_channels" and not node.outputs:
            return True
    return False


# ---- the synthesis of a YUVCodec (codec.model.Synthesis) -------------------------------------------
def _latents(model, size: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return (torch.randn(1, model.cfg.y_channels, size, size, generator=g),
            torch.randn(1, model.cfg.uv_channels, size, size, generator=g))


def synthesis_graph(model) -> tuple[nn.Module, tp.DependencyGraph]:
    """(synthesis wrapper, its dependency graph) for a YUVCodec; module paths match the codec's."""
    syn = Synthesis(model).eval()
    return syn, build_graph(syn, _latents(model))


@dataclass
class Stream:
    """A prunable channel stream: its root (a PixelShuffle path), width, pruning units and costs."""

    root: str
    width: int
    units: list[list[int]]
    importance: list[float] = field(default_factory=list)   # per channel: sum of squared weights
    macs: list[float] = field(default_factory=list)         # per channel: MACs per luma pixel removed


def _units(width: int, group) -> list[list[int]] | None:
    """Channel sets that can go together. With a grouped 1x1 conv (G groups) + ChannelShuffle(G) on the
    stream, a unit is the G*G channels s with (s // G) % (C // G) == o, C = width // G: that removes the
    same in-group offsets from every input group and the same count from every output group, which is
    what torch-pruning's grouped-conv pruner and the shuffle need. None if the stream cannot be pruned."""
    gs = {m.groups for m in (i.dep.target.module for i in group)
          if isinstance(m, nn.Conv2d) and m.groups > 1 and not _is_depthwise(m)}
    if not gs:
        return [[s] for s in range(width)]
    g = gs.pop()
    if gs or width % (g * g):
        return None
    c = width // g
    return [[s for s in range(width) if (s // g) % (c // g) == o] for o in range(c // g)]


def _luma_areas(syn: nn.Module, latents) -> dict:
    """Output area of every layer as a fraction of the luma picture area (for MACs per pixel)."""
    areas, hooks = {}, []
    for m in syn.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, GDN)):
            hooks.append(m.register_forward_hook(lambda m, i, o: areas.__setitem__(m, o.shape[-2] * o.shape[-1])))
    with torch.no_grad():
        y, _ = syn(*latents)
    for h in hooks:
        h.remove()
    return {m: a / (y.shape[-2] * y.shape[-1]) for m, a in areas.items()}


def find_streams(model) -> list[Stream]:
    """Every prunable stream of the codec's synthesis, scored by weight magnitude (L2 over every layer
    the stream touches, depthwise and custom layers included) and by the MACs each channel costs."""
    syn, dg = synthesis_graph(model)
    areas = _luma_areas(syn, _latents(model))
    names = {m: n for n, m in syn.named_modules()}
    streams = []
    for m, node in dg.module2node.items():
        if not isinstance(m, nn.PixelShuffle):
            continue
        width = dg.get_out_channels(m)
        group = channel_group(dg, m, list(range(width)))
        units = None if touches_output(group) else _units(width, group)
        if units is None:
            continue
        imp, macs = [0.0] * width, [0.0] * width
        with torch.no_grad():
            for root, p, index, layer in group_slices(group):
                s = p[index]
                imp[root] += float(s.double().pow(2).sum())
                if p is getattr(layer, "weight", None) or (isinstance(layer, GDN) and p is layer.gamma):
                    macs[root] += s.numel() * areas.get(layer, 0.0)
        streams.append(Stream(names[m], width, units, imp, macs))
    return sorted(streams, key=lambda s: s.root)


def _module(model, path: str) -> nn.Module:
    return model.get_submodule(path)


def stream_group(model, root: str, idxs: list[int]):
    """(graph, group) removing channels ``idxs`` of the stream rooted at ``root`` of a codec."""
    syn, dg = synthesis_graph(model)
    return dg, channel_group(dg, syn.get_submodule(root), idxs)


def prune_stream(model, root: str, idxs: list[int]) -> None:
    """Remove channels ``idxs`` of a synthesis stream, in place (``idxs`` must be whole units)."""
    if root.split(".")[0] not in SYNTHESIS:
        raise ValueError(f"only synthesis streams are pruned, got {root!r}")
    syn, dg = synthesis_graph(model)
    layer = syn.get_submodule(root)
    width = dg.get_out_channels(layer)
    full = channel_group(dg, layer, list(range(width)))
    units = None if touches_output(full) else _units(width, full)
    if units is None:
        raise ValueError(f"stream {root!r} cannot be pruned (a model output, or grouped convs it cannot split)")
    wanted = set(int(i) for i in idxs)
    if any(0 < len(wanted & set(u)) < len(u) for u in units) or not wanted <= set(range(width)):
        raise ValueError(f"channels {sorted(wanted)} of {root!r} are not whole pruning units")
    channel_group(dg, layer, sorted(wanted)).prune(record_history=False)


def zero_stream(model, root: str, idxs: list[int]) -> None:
    """Zero the weights that pruning channels ``idxs`` of a stream would remove (for exactness tests)."""
    _, group = stream_group(model, root, idxs)
    zero_group(group)


# ---- plans: the exact, replayable record of a pruning ------------------------------------------
# A step records the stream and channels chosen, and what torch-pruning did to the tensors (see
# codec.pruned): the core replays it without this package. Files written before that (format
# LEGACY_FORMAT, stream and channels only) are replayed here through the dependency graph.
LEGACY_FORMAT = "distill.prune/1"


def _record(model, prune: Callable[[], None]) -> tuple[list[dict], dict]:
    """Run ``prune()`` and return (every tensor slice it kept, in order; the integer module attributes
    it changed), as codec.pruned replays them."""
    names = {id(t): (path, n) for path, m in model.named_modules()
             for n, t in [*m._parameters.items(), *m._buffers.items()] if t is not None}
    ints = {path: {k: v for k, v in vars(m).items() if type(v) is int} for path, m in model.named_modules()}
    edits = []
    base = tp.pruner.BasePruningFunc
    original = base._prune_parameter_and_grad

    def recording(self, weight, keep_idxs, pruning_dim):
        where = names.get(id(weight))
        if where is None:
            raise NotImplementedError("torch-pruning cut a tensor that is not the model's")
        new = original(self, weight, keep_idxs, pruning_dim)
        names[id(new)] = where
        edits.append({"module": where[0], "param": where[1], "dim": int(pruning_dim),
                      "keep": [int(i) for i in keep_idxs]})
        return new

    base._prune_parameter_and_grad = recording
    try:
        prune()
    finally:
        base._prune_parameter_and_grad = original
    attrs = {}
    for path, m in model.named_modules():
        changed = {k: v for k, v in vars(m).items() if type(v) is int and ints.get(path, {}).get(k, v) != v}
        if changed:
            attrs[path] = changed
    return edits, attrs


def apply_steps(model, steps: list[dict]) -> None:
    """Prune the model by each step (stream root, channel indices) in turn and append the recorded
    steps to its plan."""
    plan = copy.deepcopy(plan_of(model))
    for step in steps:
        idxs = [int(i) for i in step["idxs"]]
        edits, attrs = _record(model, lambda: prune_stream(model, step["root"], idxs))
        plan["steps"].append({"root": step["root"], "idxs": idxs, "edits": edits, "attrs": attrs})
    plan["widths"] = {s.root: s.width for s in find_streams(model)} if plan["steps"] else {}
    model.pruned_plan = plan


def apply_plan(model, plan: dict | str):
    """Replay a pruning plan (dict or JSON) on a freshly built preset; returns the model. Current plans
    go through the core (``codec.pruned.replay``); legacy ones are re-pruned and upgraded."""
    plan = json.loads(plan) if isinstance(plan, str) else plan
    if plan.get("format") != LEGACY_FORMAT:
        return replay(model, plan)
    if plan["preset"] != model.name:
        raise ValueError(f"plan is for {plan['preset']!r}, model is {model.name!r}")
    apply_steps(model, plan["steps"])
    return model


# ---- choosing what to prune -----------------------------------------------------------------------
def costs(model) -> dict:
    """Encoder/decoder kMAC per pixel (768x512), parameters, and the widths of the synthesis streams."""
    from profiling import profile_model

    r = profile_model(model, teacher=False, check_size=None)
    return {"decoder_kmac": r.total("decoder"), "encoder_kmac": r.total("encoder"),
            "synthesis_kmac": r.kmac(sum(row.macs for row in r.rows if row.name in SYNTHESIS)),
            "params": sum(p.numel() for p in model.parameters()),
            "synthesis_params": sum(p.numel() for n in SYNTHESIS for p in getattr(model, n).parameters()),
            "widths": {s.root: s.width for s in find_streams(model)}}


def floors(streams: list[Stream], min_keep: float) -> dict[str, int]:
    """Fewest channels each stream may keep: ``min_keep`` of its width, and at least one unit."""
    return {s.root: max(len(s.units[0]), math.ceil(min_keep * s.width)) for s in streams}


RANKINGS = ("uniform", "global", "per-mac")


def rank_units(streams: list[Stream], ranking: str = "uniform") -> list[tuple[float, str, list[int], float]]:
    """All units, first to go first: (score, stream, channels, estimated MACs saved).

    Within a stream units go by weight magnitude (the unit's mean channel importance relative to the
    stream's mean, since weight scales differ between stages). Across streams, ``uniform`` orders units
    by their rank inside their stream, so every stream loses the same fraction; ``global`` compares the
    relative magnitudes directly; ``per-mac`` divides them by the MACs a unit saves, which spends the
    whole budget on the most expensive (full-resolution) stream."""
    if ranking not in RANKINGS:
        raise ValueError(f"ranking must be one of {', '.join(RANKINGS)}, got {ranking!r}")
    ranked = []
    for s in streams:
        mean = sum(s.importance) / s.width or 1.0
        imps = [sum(s.importance[c] for c in u) / len(u) / mean for u in s.units]
        macs = [sum(s.macs[c] for c in u) for u in s.units]
        order = sorted(range(len(s.units)), key=lambda k: imps[k])
        for pos, k in enumerate(order):
            score = {"uniform": (pos + 1) / len(s.units), "global": imps[k],
                     "per-mac": imps[k] * len(s.units[k]) / max(macs[k], 1e-9)}[ranking]
            ranked.append((score, s.root, s.units[k], macs[k]))
    return sorted(ranked, key=lambda r: r[0])


def select_steps(streams: list[Stream], need_macs: float, keep: dict[str, int], ranking: str = "uniform",
                 min_units: int = 0) -> tuple[list[dict], int]:
    """(steps, units taken): units in rank order, above each stream's floor, until they save ``need_macs``
    MACs/px (estimated) and number at least ``min_units``. The unit that fills the need is the cheapest
    of the next few in line (the weakest left of each stream), so a 16-channel unit does not overshoot
    the budget where a single channel would do."""
    ranked = rank_units(streams, ranking)
    left = {s.root: s.width for s in streams}
    chosen: dict[str, list[int]] = {}
    taken, saved = set(), 0.0

    def allowed(r):
        return id(r) not in taken and left[r[1]] - len(r[2]) >= keep.get(r[1], 1)

    def take(r):
        nonlocal saved
        taken.add(id(r))
        chosen.setdefault(r[1], []).extend(r[2])
        left[r[1]] -= len(r[2])
        saved += r[3]

    for i, r in enumerate(ranked):
        if saved >= need_macs and len(taken) >= min_units:
            break
        if not allowed(r):
            continue
        if saved + r[3] >= need_macs and len(taken) + 1 >= min_units:
            heads = {}
            for q in ranked[i:]:
                if allowed(q):
                    heads.setdefault(q[1], q)
                if len(heads) == len(streams):
                    break
            r = min((q for q in heads.values() if saved + q[3] >= need_macs), key=lambda q: q[3], default=r)
        take(r)
    steps = [{"root": root, "idxs": sorted(i)} for root, i in sorted(chosen.items())]
    return steps, len(taken)


def prune_round(model, goal_kmac: float, keep: dict[str, int], ranking: str = "uniform", tries: int = 8):
    """Prune a copy of ``model`` down to ``goal_kmac`` decoder kMAC/px (measured by the profiler).

    Returns (pruned copy, its costs, reached goal). The MAC estimate of a unit double-counts layers whose
    inputs and outputs both shrink, so the measured cost decides, each retry taking one unit more."""
    start = costs(model)["decoder_kmac"]
    streams = find_streams(model)
    need, units, best = (start - goal_kmac) * 1000, 0, None
    for _ in range(tries):
        steps, n = select_steps(streams, need, keep, ranking, units + 1)
        if n <= units:      # nothing more above the floors
            break
        units = n
        trial = copy.deepcopy(model)
        apply_steps(trial, steps)
        got = costs(trial)
        best = (trial, got, got["decoder_kmac"] <= goal_kmac + 1e-9)
        if best[2]:
            break
        need += (got["decoder_kmac"] - goal_kmac) * 1000 * 1.1
    return best or (model, costs(model), False)


def prune_to_target(model, target_kmac: float, rounds: int = 3, min_keep: float = 0.5,
                    finetune: Callable | None = None, log: Callable = print, ranking: str = "uniform"):
    """Prune ``model`` in ``rounds`` steps of equal MAC ratio down to ``target_kmac`` decoder kMAC/px,
    calling ``finetune(model, round) -> metrics`` after each; returns (model, history)."""
    model = copy.deepcopy(model)
    model.__dict__.pop("frozen_id", None)   # the weights will change
    first = costs(model)
    history = [{"round": 0, **first}]
    keep = floors(find_streams(model), min_keep)
    fixed = first["decoder_kmac"] - first["synthesis_kmac"]
    if target_kmac <= fixed:
        raise ValueError(f"target {target_kmac} kMAC/px is below the {fixed:.3f} kMAC/px the decoder "
                         "spends outside the synthesis (not pruned)")
    for r in range(1, rounds + 1):
        cur = history[-1]["decoder_kmac"]
        if cur <= target_kmac:
            break
        goal = max(target_kmac, cur * (target_kmac / cur) ** (1 / (rounds - r + 1)))
        model, got, reached = prune_round(model, goal, keep, ranking)
        log(f"round {r}: decoder {cur:.3f} -> {got['decoder_kmac']:.3f} kMAC/px (goal {goal:.3f}), "
            f"widths {got['widths']}")
        for p in model.parameters():
            p.requires_grad_(True)
        metrics = finetune(model, r) if finetune else {}
        history.append({"round": r, "goal_kmac": goal, **got, "finetune": metrics})
        if not reached:
            log(f"round {r}: every stream is at its floor (--min-keep {min_keep}); stopping")
            break
    return model, history


if __name__ == "__main__":
    from distill.prune_cli import main

    sys.exit(main())
