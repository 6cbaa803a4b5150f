"""MAC counting by the convention of DESIGN.md ("MAC convention"), built on torch's FlopCounterMode.

FlopCounterMode supplies the per-op formulas (convolution, transposed convolution on the input grid,
mm/bmm/addmm, attention) and the module attribution. This module adds what it gets wrong or skips:

- masked convolutions (any module with a ``mask`` buffer shaped like its weight) count only unmasked taps;
- every op that carries no MACs is recorded against the module that ran it, so reports can list them;
- the count runs on meta tensors (shapes only, nothing computed), so 1920x1088 costs as little as 64x64.

Entropy models (compressai ``EntropyModel``) build index tensors from data, which meta tensors cannot
hold, so they run for real on zero inputs of the right shape (they are tiny and mostly elementwise).
"""
from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass, field

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map
from torch.utils.flop_counter import FlopCounterMode, flop_registry

# Ops that only move, view, create or read data. Listed apart from 0-MAC arithmetic (GDN's square and
# root, activations, rounding, adds), but listed all the same.
DATA_OPS = frozenset("""
    view _unsafe_view reshape t transpose permute expand detach alias unsqueeze squeeze slice select
    clone _to_copy copy_ copy empty empty_like empty_strided zeros zeros_like ones ones_like full
    full_like new_zeros new_ones new_empty new_full arange lift_fresh lift_fresh_copy cat stack split
    split_with_sizes unbind index fill_ zero_ _local_scalar_dense as_strided contiguous constant_pad_nd
    im2col col2im pixel_shuffle pixel_unshuffle unfold flip roll repeat narrow scalar_tensor
""".split())


class ProfilingError(RuntimeError):
    """A model or spec the profiler cannot count honestly."""


@dataclass
class Count:
    """MACs of one run, keyed by module path relative to the model ("" is the model itself)."""

    macs: dict[str, float]                   # MACs of the module and everything it called
    self_macs: dict[str, float]              # MACs of ops run by the module's own code, not a child
    zero_ops: dict[str, Counter]             # module path -> {op name: calls} for ops without MACs
    masks: dict[str, tuple[int, int]]        # masked module path -> (unmasked taps, all taps)
    captured: dict[str, tuple] = field(default_factory=dict)  # inputs seen by the captured modules

    @property
    def total(self) -> float:
        """MACs of the whole run."""
        return self.macs.get("", 0.0)


def mask_of(module: nn.Module) -> torch.Tensor | None:
    """The ``mask`` buffer of a masked convolution (same shape as its weight), or None."""
    mask = module._buffers.get("mask")
    weight = getattr(module, "weight", None)
    if mask is None or not isinstance(weight, torch.Tensor) or mask.shape != weight.shape:
        return None
    return mask


def is_integer(module: nn.Module) -> bool:
    """Modules that also define an exact integer path (``int_forward``) count integer MACs."""
    return callable(getattr(type(module), "int_forward", None))


class _ZeroOpRecorder(TorchDispatchMode):
    """Records each op FlopCounterMode executes without a formula, against the innermost module.

    Entered outside FlopCounterMode, so it sees the ops after FlopCounterMode decomposed them. Reading
    a scalar from a meta tensor has no answer; it reads as 0 (only the integer network's weight-scale
    arithmetic and overflow guard do this, and neither changes a shape)."""

    def __init__(self, tracker, root: str):
        super().__init__()
        self.tracker, self.prefix, self.ops = tracker, root + ".", {}

    def _innermost(self) -> str:
        inside = [p for p in self.tracker.parents if p.startswith(self.prefix)]
        return max(inside, key=lambda p: p.count(".")) if inside else ""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        packet = func._overloadpacket
        if packet not in flop_registry:
            where = self._innermost()
            self.ops.setdefault(where[len(self.prefix):], Counter())[packet.__name__] += 1
        if packet is torch.ops.aten._local_scalar_dense and args[0].is_meta:
            return 0
        return func(*args, **kwargs)


def _to_real(t):
    return torch.zeros(t.shape, dtype=t.dtype) if isinstance(t, torch.Tensor) and t.is_meta else t


def _to_meta(t):
    return torch.empty(t.shape, dtype=t.dtype, device="meta") if isinstance(t, torch.Tensor) else t


def _run_real(real: nn.Module):
    def forward(*args, **kwargs):
        return tree_map(_to_meta, real.forward(*tree_map(_to_real, args), **tree_map(_to_real, kwargs)))
    return forward


def shadow_copy(model: nn.Module, device: str = "meta") -> nn.Module:
    """A copy of ``model`` in eval mode on ``device``; on meta, entropy models keep a real twin."""
    from compressai.entropy_models import EntropyModel

    shadow = copy.deepcopy(model).eval().to(device)
    if device == "meta":
        for name, mod in model.named_modules():
            if isinstance(mod, EntropyModel):
                # An instance attribute wins over the class's forward; hooks and names stay.
                shadow.get_submodule(name).forward = _run_real(copy.deepcopy(mod).eval().cpu())
    return shadow


class MacCounter:
    """Counts the MACs of calls into one model. ``device="meta"`` counts shapes only (fast);
    ``"cpu"`` really computes, for models whose shapes depend on data."""

    def __init__(self, model: nn.Module, device: str = "meta"):
        self.device = device
        self.shadow = shadow_copy(model, device)
        self.root = type(self.shadow).__name__  # the name ModuleTracker gives the outermost module
        self.masks = {}
        for name, mod in model.named_modules():
            mask = mask_of(mod)
            if mask is not None:
                self.masks[name] = (int((mask != 0).sum()), mask.numel())

    def tensor(self, *shape: int) -> torch.Tensor:
        """An input of ``shape`` on the counting device (values are irrelevant to the count)."""
        if self.device == "meta":
            return torch.empty(shape, device="meta")
        return torch.rand(shape, generator=torch.Generator().manual_seed(0))

    def run(self, *args, capture: tuple[str, ...] = ()) -> Count:
        """Count ``model(*args)``; ``capture`` names submodules whose inputs are kept (for re-runs)."""
        captured: dict[str, tuple] = {}
        hooks = [self.shadow.get_submodule(name).register_forward_pre_hook(
            lambda mod, inp, name=name: captured.setdefault(name, inp)) for name in capture]
        try:
            count = self.count(lambda: type(self.shadow).forward(self.shadow, *args))
        finally:
            for h in hooks:
                h.remove()
        count.captured = captured
        return count

    def count(self, fn) -> Count:
        """Count whatever ``fn()`` runs on ``self.shadow`` (e.g. ``lambda: shadow.sub.int_forward(x)``)."""
        # fn runs as the model's forward, so that module attribution (and the mask rule) applies.
        self.shadow.forward = fn
        fc = FlopCounterMode(display=False)
        rec = _ZeroOpRecorder(fc.mod_tracker, self.root)
        try:
            with torch.no_grad(), rec, fc:
                self.shadow()
        finally:
            del self.shadow.forward
        flops = fc.get_flop_counts()
        macs: dict[str, float] = {}
        for key, per_op in flops.items():
            if key == self.root or key.startswith(self.root + "."):
                macs[key[len(self.root) + 1:]] = sum(per_op.values()) / 2
        macs.setdefault("", 0.0)
        for name, (kept, taps) in self.masks.items():
            dense = flops.get(f"{self.root}.{name}" if name else self.root, {}).get(
                torch.ops.aten.convolution, 0) / 2
            if dense:
                for anc in _ancestors(name):
                    if anc in macs:
                        macs[anc] -= dense * (1 - kept / taps)
        self_macs = dict(macs)
        for name in macs:
            if name:
                # Containers that are never called (ModuleList) have no entry: skip to the caller.
                parent = next(a for a in _ancestors(name)[1:] if a in macs)
                self_macs[parent] -= macs[name]
        return Count(macs, self_macs, rec.ops, dict(self.masks))


def _ancestors(name: str) -> list[str]:
    """``a.b.c`` -> [a.b.c, a.b, a, ""]."""
    parts = name.split(".") if name else []
    return [".".join(parts[:i]) for i in range(len(parts), -1, -1)]
