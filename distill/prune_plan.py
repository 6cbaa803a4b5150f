"""Pruning plans: the exact, replayable record of a pruning.

A pruned model is saved as safetensors whose metadata holds the preset name and the *plan*: every pruning
step (stream, channel indices, and the tensor slices torch-pruning kept), so ``codec.weights.load_model``
replays it on a fresh preset exactly (``codec.pruned``), without this package. This module applies steps
while recording that plan, and replays plans, legacy ones included.
"""
from __future__ import annotations

import copy
import json
from typing import Callable

import torch_pruning as tp

from codec.pruned import plan_of, replay

from .prune_streams import find_streams, prune_stream

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
