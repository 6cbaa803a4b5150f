"""The search for what to prune: measure a codec's costs, rank the streams' units and pick pruning
steps until the decoder reaches a kMAC-per-pixel target, in rounds (with a fine-tuning hook between them).
"""
from __future__ import annotations

import copy
import math
from typing import Callable

from .prune_plan import apply_steps
from .prune_streams import SYNTHESIS, Stream, find_streams


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
