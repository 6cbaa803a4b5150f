"""Replay of a structured-pruning plan on a freshly built preset (no pruning library needed).

A plan is what a pruning stage (``distill.prune``) records while it removes channels: per step, every
parameter it shrank (module path, parameter name, dimension, the indices kept at that step, in order)
and the integer attributes of the modules that changed (``in_channels``, ``out_channels``, ``groups``).
Replaying the steps in order gives the pruned architecture exactly; the weights file then fills it.
Weights files carry the plan as JSON in their metadata (key ``pruned_plan``), see ``codec.weights``.
"""
from __future__ import annotations

import json

import torch
import torch.nn as nn

PLAN_FORMAT = "codec.pruned/1"
META_KEY = "pruned_plan"


class PlanError(ValueError):
    """A pruning plan that cannot be replayed on the model."""


def empty_plan(model) -> dict:
    """A plan with no steps for the model's preset."""
    return {"format": PLAN_FORMAT, "preset": model.name, "steps": []}


def plan_of(model) -> dict:
    """The plan a model was pruned with (an empty one for an unpruned preset)."""
    return getattr(model, "pruned_plan", None) or empty_plan(model)


def shrink(module: nn.Module, name: str, dim: int, keep: list[int]) -> None:
    """Keep only the entries ``keep`` of dimension ``dim`` of a parameter or buffer of ``module``."""
    old = getattr(module, name, None)
    if not torch.is_tensor(old):
        raise PlanError(f"{type(module).__name__} has no tensor {name!r}")
    if not 0 <= dim < old.dim() or any(not 0 <= i < old.shape[dim] for i in keep):
        raise PlanError(f"indices out of range for {name} {tuple(old.shape)} dim {dim}")
    new = old.detach().index_select(dim, torch.tensor(keep, dtype=torch.long, device=old.device)).clone()
    if name in module._parameters:
        module._parameters[name] = nn.Parameter(new, requires_grad=old.requires_grad)
    else:
        module._buffers[name] = new


def apply_step(model: nn.Module, step: dict) -> None:
    """Apply one recorded step: shrink its tensors in order, then set the module attributes it changed."""
    try:
        for e in step["edits"]:
            shrink(model.get_submodule(e["module"]), e["param"], int(e["dim"]), [int(i) for i in e["keep"]])
        for path, attrs in step.get("attrs", {}).items():
            mod = model.get_submodule(path)
            for k, v in attrs.items():
                if not isinstance(getattr(mod, k, None), int):
                    raise PlanError(f"{path}.{k} is not an integer attribute")
                setattr(mod, k, int(v))
    except (KeyError, TypeError, AttributeError) as e:
        raise PlanError(f"malformed pruning step: {e}") from None


def replay(model: nn.Module, plan: dict | str) -> nn.Module:
    """Replay a plan (dict or JSON) on a freshly built preset, in place; returns the model.

    Indices of each step refer to the tensors as they were at that step, so the replay is exact."""
    try:
        plan = json.loads(plan) if isinstance(plan, str) else plan
    except json.JSONDecodeError as e:
        raise PlanError(f"pruning plan is not JSON: {e}") from None
    if not isinstance(plan, dict) or plan.get("format") != PLAN_FORMAT:
        got = plan.get("format") if isinstance(plan, dict) else type(plan).__name__
        raise PlanError(f"unknown pruning plan format {got!r} (this version reads {PLAN_FORMAT}; "
                        "re-create the file with python -m distill.prune)")
    if plan.get("preset") != model.name:
        raise PlanError(f"plan is for {plan.get('preset')!r}, model is {model.name!r}")
    for step in plan.get("steps", []):
        apply_step(model, step)
    model.pruned_plan = plan
    return model
