"""torch-pruning's dependency graph with the pruners it lacks, and what a pruning group would remove.

torch-pruning has no pruner for PixelShuffle, PixelUnshuffle, ChannelShuffle or GDN; the custom pruners
here couple their input and output channels through explicit index maps. Its grouped-conv pruner is only
right when the same in-group offsets go from every group, so a stream that runs through a grouped 1x1 conv
with ChannelShuffle(G) is pruned in units of G*G channels that satisfy that (see ``prune_streams._units``).
Nothing here knows the codec: ``build_graph`` and the group helpers work on any module.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch_pruning as tp
from compressai.layers import GDN
from torch_pruning import _helpers
from torch_pruning.dependency.dependency import Dependency

from student.blocks import ChannelShuffle


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
