"""Grow trained student weights into a preset with a wider luma latent, so that it need not start from scratch.

    python -m distill.grow --init weights/student-2k-wide.safetensors --student student-2k-wide256 -o OUT
    python -m distill --student student-2k-wide256 --init OUT ...

Kept exactly: every old latent channel keeps its weights in every layer that writes or reads the latent (analysis
output, hyper analysis input, context model input, fusion output, scale decoder output, rate-point gains, global
context, latent blocks, synthesis input). The new channels are written by the analysis (initialised weights), read by
nothing yet (zero weights), predicted with mean 0 and the old channels' mean scale; so the grown model decodes what
the old one did until it trains, and the gradient reaches the zero weights through the new channels' values. Not
kept, where the new preset is cheaper elsewhere to pay for the channels: a narrower context model keeps the features
its fusion weighs most, and dropped residual blocks are the last of their stage.

Why by hand: net2net-style growth of a codec's latent (grouped 1x1 convolutions with a channel shuffle, pixel
unshuffle into the hyper analysis) is specific to these models; torch-pruning removes channels, it does not add them.
"""
from __future__ import annotations

import argparse
import sys

import torch

FILL_INIT, FILL_ZERO, FILL_MEAN = "init", "zero", "mean"   # what the slots no old weight maps to start as


def _latent_map(old: int, new: int, groups: int) -> torch.Tensor:
    """New index of each old luma latent channel: each of the ``groups`` groups grows at its end, so grouped
    convolutions still see their old channels together."""
    if new < old or old % groups or new % groups:
        raise ValueError(f"cannot grow {old} latent channels into {new} in {groups} groups")
    c = torch.arange(old)
    return (c // (old // groups)) * (new // groups) + c % (old // groups)


def _shuffled_map(ymap: torch.Tensor, old: int, new: int, groups: int) -> torch.Tensor:
    """New index of each output channel of a grouped 1x1 convolution followed by a channel shuffle, whose
    shuffled outputs are the latent channels (``ymap`` maps those)."""
    j = torch.arange(old)
    o = (j % (old // groups)) * groups + j // (old // groups)      # latent channel that output j becomes
    f = ymap[o]
    return (f % groups) * (new // groups) + f // groups


def _strongest(weight: torch.Tensor, start: int, count: int, keep: int) -> torch.Tensor:
    """Indices (ascending, from 0) of the ``keep`` of ``count`` input columns from ``start`` of a 1x1 weight with
    the largest norm."""
    norms = weight[:, start:start + count].transpose(0, 1).flatten(1).norm(dim=1)
    return torch.sort(torch.topk(norms, keep).indices).values


def _rules(old, new) -> dict[str, tuple[dict[int, tuple[torch.Tensor, torch.Tensor]], str]]:
    """Per new tensor name: {dim: (old indices, new indices)} and the fill of unmapped slots."""
    osd = old.state_dict()
    my0, my1, muv = old.cfg.y_channels, new.cfg.y_channels, new.cfg.uv_channels
    if old.cfg.uv_channels != muv:
        raise ValueError("growing changes the luma latent only; the chroma latents differ")
    pw = dict(new.named_modules()).get("synthesis_y.latent.0.body.2.0")
    groups = pw.groups if pw is not None else 1
    ymap = _latent_map(my0, my1, groups)
    y = (torch.arange(my0), ymap)
    m = (torch.arange(my0 + muv), torch.cat((ymap, my1 + torch.arange(muv))))
    unshuffled = (torch.arange(4 * (my0 + muv)), (m[1][:, None] * 4 + torch.arange(4)).flatten())

    c0, c1 = old.context_y.out_channels, new.context_y.out_channels
    hy = old.fusion_y.net[0].in_channels - c0
    keep_y = _strongest(osd["fusion_y.net.0.weight"], hy, c0, c1)
    fuse_y = (torch.cat((torch.arange(hy), hy + keep_y)), torch.arange(hy + c1))
    u0, u1 = old.context_uv.out_channels, new.context_uv.out_channels
    huv = old.fusion_uv.net[0].in_channels - u0 - my0
    keep_uv = _strongest(osd["fusion_uv.net.0.weight"], huv, u0, u1)
    fuse_uv = (torch.cat((torch.arange(huv), huv + keep_uv, huv + u0 + torch.arange(my0))),
               torch.cat((torch.arange(huv + u1), huv + u1 + ymap)))

    last_a = len(new.analysis_y) - 1
    last_s = len(new.scale_decoder.layers) - 1
    last_f = len(new.fusion_y.net) - 1
    rules = {
        "gain_steps": ({1: m}, FILL_MEAN),
        f"analysis_y.{last_a}.1.weight": ({0: y}, FILL_INIT),
        f"analysis_y.{last_a}.1.bias": ({0: y}, FILL_INIT),
        "hyper_analysis.0.1.weight": ({1: unshuffled}, FILL_ZERO),
        f"scale_decoder.layers.{last_s}.weight": ({0: m}, FILL_MEAN),
        f"scale_decoder.layers.{last_s}.bias": ({0: m}, FILL_MEAN),
        "context_y.weight": ({0: (keep_y, torch.arange(c1)), 1: y}, FILL_ZERO),
        "context_y.bias": ({0: (keep_y, torch.arange(c1))}, FILL_ZERO),
        "context_uv.weight": ({0: (keep_uv, torch.arange(u1))}, FILL_ZERO),
        "context_uv.bias": ({0: (keep_uv, torch.arange(u1))}, FILL_ZERO),
        "fusion_y.net.0.weight": ({1: fuse_y}, FILL_ZERO),
        f"fusion_y.net.{last_f}.weight": ({0: y}, FILL_ZERO),
        f"fusion_y.net.{last_f}.bias": ({0: y}, FILL_ZERO),
        "fusion_uv.net.0.weight": ({1: fuse_uv}, FILL_ZERO),
        "synthesis_y.body.0.0.weight": ({1: y}, FILL_ZERO),
        "global_context.net.2.weight": ({0: m}, FILL_ZERO),
        "global_context.net.2.bias": ({0: m}, FILL_ZERO),
    }
    for k in range(len(new.synthesis_y.latent)):
        block = f"synthesis_y.latent.{k}.body"
        rules[f"{block}.0.weight"] = rules[f"{block}.0.bias"] = ({0: y}, FILL_INIT)    # depthwise
        if groups > 1:
            out = (torch.arange(my0), _shuffled_map(ymap, my0, my1, groups))
            local = torch.arange(my0 // groups)
            rules[f"{block}.2.0.weight"] = ({0: out, 1: (local, local)}, FILL_ZERO)
            rules[f"{block}.2.0.bias"] = ({0: out}, FILL_ZERO)
        else:
            rules[f"{block}.2.weight"] = ({0: y, 1: y}, FILL_ZERO)
            rules[f"{block}.2.bias"] = ({0: y}, FILL_ZERO)
    return rules


def _place(old_t: torch.Tensor, fresh: torch.Tensor, maps: dict, fill: str) -> torch.Tensor:
    """``old_t`` scattered into a tensor shaped like ``fresh`` along the mapped dims; other slots per ``fill``."""
    value, covered = old_t.float(), torch.ones_like(old_t, dtype=torch.bool)
    for dim, (src, dst) in sorted(maps.items()):
        shape = list(value.shape)
        shape[dim] = fresh.shape[dim]
        value = value.new_zeros(shape).index_copy_(dim, dst, value.index_select(dim, src))
        covered = covered.new_zeros(shape).index_copy_(dim, dst, covered.index_select(dim, src))
    if fill == FILL_INIT:
        other = fresh.float()
    elif fill == FILL_MEAN:   # the mean over the mapped slots of the first mapped dim (a row or column of means)
        dim = min(maps)
        other = (value.sum(dim, keepdim=True) / covered.sum(dim, keepdim=True).clamp(min=1)).expand_as(value)
    else:
        other = torch.zeros_like(value)
    return torch.where(covered, value, other).to(fresh.dtype)


def grow_into(old, new) -> list[str]:
    """Copy ``old``'s weights into ``new`` (a preset with at least as many luma latent channels; see the module
    docstring); returns the names of ``old``'s tensors that ``new`` has no place for (dropped blocks)."""
    rules, osd, fresh = _rules(old, new), old.state_dict(), new.state_dict()
    out = {}
    for name, t in fresh.items():
        if name.endswith(".mask") or name not in osd:
            continue     # masks belong to the new shapes
        if name in rules:
            out[name] = _place(osd[name], t, *rules[name])
        elif osd[name].shape == t.shape or name.startswith(("entropy_bottleneck._", "gaussian_conditional._")):
            out[name] = osd[name]   # the entropy tables: compressai resizes the model's empty ones
        else:
            raise ValueError(f"{name}: {tuple(osd[name].shape)} -> {tuple(t.shape)} and no rule to grow it")
    new.load_state_dict(out, strict=False)
    return sorted(k for k in osd if k not in fresh)


def main(argv: list[str] | None = None) -> int:
    """CLI: grow a weights file into a wider preset and write the new file."""
    from codec.cli_util import fail
    from codec.registry import create_model
    from codec.weights import WeightsError, load_model, save_weights, weights_metadata

    p = argparse.ArgumentParser(prog="python -m distill.grow", description=__doc__.split("\n\n")[0])
    p.add_argument("--init", required=True, help="trained weights file to grow from")
    p.add_argument("--student", required=True, help="preset to grow into (a wider luma latent)")
    p.add_argument("-o", "--out", required=True, help="weights file to write")
    a = p.parse_args(argv)
    try:
        old = load_model(a.init)
        new = create_model(a.student).set_rate_points(old.num_qualities)
        dropped = grow_into(old, new)
    except (WeightsError, KeyError, ValueError) as e:
        return fail(e, 2)
    new.eval()
    new.update(force=True)
    meta = {k: v for k, v in weights_metadata(a.init).items() if k not in ("preset", "run_step", "run_train_s")}
    meta["history"] = (meta.get("history") or f"step {meta.get('step', 0)}") + \
        f"; then grown from {old.name} into {new.name} (python -m distill.grow)"
    save_weights(new, a.out, meta=meta)
    print(f"wrote {a.out}: {old.name} -> {new.name}, {old.cfg.y_channels} -> {new.cfg.y_channels} luma latent "
          f"channels; dropped {len(dropped)} tensors" + (f" ({', '.join(dropped[:4])}...)" if dropped else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
