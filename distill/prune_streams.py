"""The prunable channel streams of a YUVCodec's synthesis (``codec.blocks.Synthesis``).

A *stream* is the output of a PixelShuffle inside ``synthesis_y`` / ``synthesis_uv`` that is not a model
output. This module finds them on the dependency graph (``prune_graph``), splits each into the channel
units that can go together, scores every channel by weight magnitude and by the MACs per pixel it costs,
and removes (or, for exactness tests, zeroes) chosen channels of a stream in place.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch_pruning as tp
from compressai.layers import GDN

from codec.blocks import Synthesis

from .prune_graph import _is_depthwise, build_graph, channel_group, group_slices, touches_output, zero_group

SYNTHESIS = ("synthesis_y", "synthesis_uv")


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
