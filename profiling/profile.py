"""profile_model: count a model's MACs and turn the count into a Report."""
from __future__ import annotations

from fractions import Fraction
from functools import lru_cache

import torch.nn as nn

from .counter import DATA_OPS, Count, MacCounter, ProfilingError, is_integer
from .report import ModuleRow, Report
from .specs import Target, label, resolve

CHECK_SIZE = (1080, 1920)   # (height, width) at which every report checks that the count is size-free
TEACHER = "teacher"


def profile_model(model_or_spec, height: int = 512, width: int = 768, *, teacher: bool = True,
                  check_size: tuple[int, int] | None = CHECK_SIZE) -> Report:
    """Profile a model (an ``nn.Module`` or a spec: preset, ``.safetensors`` path, ``compressai:NAME:Q``).

    The picture is padded up to the model's size multiple (64) and every figure is per luma pixel of the
    HxW picture, so padding shows as a border effect. ``teacher`` adds the ratios to the teacher at the
    same size; ``check_size`` recounts at that size and records how far the per-pixel totals move."""
    if height < 1 or width < 1:
        raise ProfilingError(f"picture size must be positive, got {width}x{height}")
    target = resolve(model_or_spec)
    ph, pw = target.padded(height, width)
    counter, count, notes = _count(target, ph, pw)
    report = Report(target.name, height, width, ph, pw, _rows(target, count),
                    model_params=sum(p.numel() for p in target.model.parameters(recurse=False)), notes=notes)
    if report.model_params:
        report.notes.append(f"{report.model_params:,} parameters held by the model itself (rate-point gains) "
                            "are counted on both sides")
    report.integer_check = _integer_check(target, counter, count)
    if check_size and tuple(check_size) != (height, width):
        report.size_check = _size_check(report, target, counter, *check_size)
    if teacher:
        report.teacher_kmac = ({s: report.total(s) for s in ("encoder", "decoder")}
                               if target.name == TEACHER else _teacher_kmac(height, width))
    return report


def _count(target: Target, height: int, width: int) -> tuple[MacCounter, Count, list[str]]:
    """Count one forward on meta tensors, or for real on the CPU if the model's shapes need data."""
    integer = tuple(n for n, m in target.model.named_children() if is_integer(m))
    try:
        counter = MacCounter(target.model, "meta")
        return counter, counter.run(*target.inputs(counter, height, width), capture=integer), []
    except (RuntimeError, NotImplementedError) as e:
        if isinstance(e, ProfilingError):
            raise
        counter = MacCounter(target.model, "cpu")
        note = f"counted by running the model on the CPU (shape-only counting failed: {str(e).splitlines()[0]})"
        return counter, counter.run(*target.inputs(counter, height, width), capture=integer), [note]


def _rows(target: Target, count: Count) -> list[ModuleRow]:
    """One row per top-level module, with its layers and its 0-MAC ops."""
    modules = dict(target.model.named_modules())
    rows = []
    for name, child in target.model.named_children():
        macs = count.macs.get(name, 0.0)
        if name not in target.roles:
            if macs:
                raise ProfilingError(f"module {name!r} does {macs:,.0f} MACs but has no role (encoder/decoder); "
                                     "add it to codec.model.MODULE_ROLES")
            continue
        inside = [p for p in modules if p == name or p.startswith(name + ".")]
        integer = _outermost(p for p in inside if is_integer(modules[p]))
        masks = sorted({count.masks[p] for p in inside if p in count.masks})
        row = ModuleRow(name, label(name), tuple(target.roles[name]), macs,
                        params=sum(p.numel() for p in child.parameters()),
                        integer_macs=sum(count.macs.get(p, 0.0) for p in integer),
                        masked=", ".join(_taps(*m) for m in masks),
                        layers=[_layer(p, modules[p], count) for p in inside if count.self_macs.get(p, 0.0) > 0.5])
        _set_ops(row, [count.zero_ops.get(p, {}) for p in inside])
        rows.append(row)
    # The model's own forward (concatenations, gains, rounding): both sides run it.
    glue = count.self_macs.get("", 0.0)
    if glue > 0.5 or count.zero_ops.get(""):
        row = ModuleRow("", "model glue (outside any module)", tuple(sorted({s for r in rows for s in r.sides})),
                        glue if glue > 0.5 else 0.0, 0)
        _set_ops(row, [count.zero_ops.get("", {})])
        rows.append(row)
    return rows


def _set_ops(row: ModuleRow, op_counts: list) -> None:
    ops = set().union(*op_counts)
    row.zero_mac_ops = sorted(ops - DATA_OPS)
    row.data_ops = sorted(ops & DATA_OPS)


def _taps(kept: int, total: int) -> str:
    f = Fraction(kept, total)
    return f"{f.numerator}/{f.denominator} taps"


def _outermost(paths) -> list[str]:
    paths = sorted(paths)
    return [p for p in paths if not any(p.startswith(q + ".") for q in paths)]


def _layer(path: str, module: nn.Module, count: Count) -> dict:
    note = ""
    if path in count.masks:
        note = "masked: " + _taps(*count.masks[path])
    elif is_integer(module):
        note = "integer"
    return {"path": path, "type": describe(module), "macs": count.self_macs[path], "note": note}


def describe(module: nn.Module) -> str:
    """Short description of a layer: ``ConvTranspose2d 128->128 k5 s2`` and the like."""
    kind = type(module).__name__
    if isinstance(module, nn.modules.conv._ConvNd):
        k = "x".join(str(x) for x in dict.fromkeys(module.kernel_size))
        s = "x".join(str(x) for x in dict.fromkeys(module.stride))
        g = f" g{module.groups}" if module.groups > 1 else ""
        return f"{kind} {module.in_channels}->{module.out_channels} k{k} s{s}{g}"
    if isinstance(module, nn.Linear):
        return f"{kind} {module.in_features}->{module.out_features}"
    return kind


def _integer_check(target: Target, counter: MacCounter, count: Count) -> list[dict]:
    """Count each integer network's exact path (``int_forward``) and insist it matches its forward."""
    checks = []
    for name, args in count.captured.items():
        module = counter.shadow.get_submodule(name)
        exact = counter.count(lambda: module.int_forward(*args)).total
        fwd = count.macs.get(name, 0.0)
        if abs(exact - fwd) > 0.5:
            raise ProfilingError(f"{name}: int_forward does {exact:,.0f} MACs but forward counts {fwd:,.0f}")
        checks.append({"module": name, "label": label(name), "forward_macs": fwd, "int_forward_macs": exact})
    return checks


def _size_check(report: Report, target: Target, counter: MacCounter, height: int, width: int) -> dict:
    ph, pw = target.padded(height, width)
    count = counter.run(*target.inputs(counter, ph, pw))
    other = Report(report.model, height, width, ph, pw, _rows(target, count))
    out = {"height": height, "width": width, "proc_height": ph, "proc_width": pw}
    for side in ("encoder", "decoder"):
        out[f"{side}_kmac_per_px"] = other.total(side)
        out[f"{side}_diff"] = other.total(side) / report.total(side) - 1 if report.total(side) else 0.0
    out["within_1pct"] = all(abs(out[f"{s}_diff"]) <= 0.01 for s in ("encoder", "decoder"))
    return out


@lru_cache(maxsize=8)
def _teacher_kmac(height: int, width: int) -> dict:
    r = profile_model(TEACHER, height, width, teacher=False, check_size=None)
    return {s: r.total(s) for s in ("encoder", "decoder")}
