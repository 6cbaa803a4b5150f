"""ORT Mobile: the operators our .ort files need, against what ONNX Runtime's mobile builds provide.

    python -m export.mobile DIR        # DIR: an export (python -m export ... without --no-ort)

Since ONNX Runtime 1.19 the pre-built mobile packages (onnxruntime-android, onnxruntime-c /
onnxruntime-objc for iOS) carry every operator of the CPU execution provider; the reduced-operator
"mobile package" lists that onnxruntime/tools/mobile_helpers used to ship are gone (1.31 ships the
NNAPI and Core ML lists only). So an app either uses those packages, which run any operator the desktop
CPU provider of the same version runs, or a custom minimal build made with the export's
``ort/required_operators.with_runtime_opt.config``. This module checks both: every operator of every
.ort file (as ORT Mobile reads it, after the conversion's optimisations) has a CPU kernel for its opset
in the installed onnxruntime, and is listed in the config; it also reports which operators the NNAPI
and Core ML execution providers would take, from the lists the installed onnxruntime ships.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ONNX_DOMAIN = "ai.onnx"


def _domain(d: str) -> str:
    return ONNX_DOMAIN if d in ("", ONNX_DOMAIN) else d


def ort_model_ops(files) -> dict[str, dict[int, set[str]]]:
    """domain -> opset (the operator's since-version) -> operator names, read from .ort files."""
    from onnxruntime.tools.ort_format_model.ort_model_processor import OrtFormatModelProcessor

    required: dict = {}
    for f in files:
        OrtFormatModelProcessor(str(f), required, None).process()
    return {_domain(d): {int(v): set(ops) for v, ops in opsets.items()} for d, opsets in required.items()}


def config_ops(path: str | Path) -> dict[str, dict[int, set[str]]]:
    """The operators a required_operators config lists (what a reduced build includes)."""
    from onnxruntime.tools.reduced_build_config_parser import parse_config

    required, _ = parse_config(str(path))
    return {_domain(d): {int(v): set(ops) for v, ops in opsets.items()} for d, opsets in required.items()}


def cpu_kernels() -> dict[tuple[str, str], list[tuple[int, int]]]:
    """(domain, operator) -> opset version ranges with a CPU execution provider kernel in the installed
    onnxruntime (what the full mobile packages of the same version carry)."""
    from onnxruntime.capi import onnxruntime_pybind11_state as C

    out: dict = {}
    for k in C.get_all_opkernel_def():
        if k.provider == "CPUExecutionProvider":
            out.setdefault((_domain(k.domain), k.op_name), []).append(tuple(k.version_range))
    return out


def missing_kernels(ops: dict[str, dict[int, set[str]]]) -> list[str]:
    """``domain:op@opset`` of every operator without a CPU kernel for its opset."""
    kernels = cpu_kernels()
    bad = []
    for d, opsets in ops.items():
        for v, names in opsets.items():
            for op in names:
                if not any(lo <= v <= hi for lo, hi in kernels.get((d, op), [])):
                    bad.append(f"{d}:{op}@{v}")
    return sorted(bad)


def not_in_config(ops: dict, config: dict) -> list[str]:
    """``domain:op@opset`` of every operator that the config does not list."""
    return sorted(f"{d}:{op}@{v}" for d, opsets in ops.items() for v, names in opsets.items()
                  for op in names if op not in config.get(d, {}).get(v, set()))


def ep_lists() -> dict[str, set[str]]:
    """Operators (``domain:op``) the NNAPI and Core ML execution providers take, from the lists shipped
    in onnxruntime/tools/mobile_helpers (without their per-operator conditions)."""
    import onnxruntime.tools.mobile_helpers as mh

    base = Path(mh.__file__).parent
    out = {}
    for name, file in (("NNAPI", "nnapi_supported_ops.md"), ("CoreML (ML Program)", "coreml_supported_mlprogram_ops.md"),
                       ("CoreML (NeuralNetwork)", "coreml_supported_neuralnetwork_ops.md")):
        p = base / file
        if p.is_file():
            out[name] = {ln.split("|")[1] for ln in p.read_text().splitlines()
                         if ln.startswith("|") and ":" in ln.split("|")[1]}
    return out


def report(export_dir: str | Path) -> dict:
    """Operator check of an export's .ort files: per file its operators, and the problems found."""
    d = Path(export_dir)
    m = json.loads((d / "manifest.json").read_text())
    ortf = m.get("ort_format")
    if not ortf:
        raise ValueError(f"{d} has no ORT-format files (exported with --no-ort, or the conversion failed)")
    files = [d / ortf["dir"] / f for f in ortf["files"]]
    per_file = {f.name: ort_model_ops([f]) for f in files}
    every = ort_model_ops(files)
    cfg_name = ortf.get("required_operators") or "required_operators.with_runtime_opt.config"
    cfg = config_ops(d / ortf["dir"] / cfg_name)
    eps = ep_lists()
    flat = sorted({f"{dom}:{op}" for dom, opsets in every.items() for names in opsets.values() for op in names})
    return {"files": {k: sorted(f"{dom}:{op}@{v}" for dom, o in ops.items() for v, names in o.items() for op in names)
                      for k, ops in per_file.items()},
            "operators": flat, "config": cfg_name,
            "missing_cpu_kernels": missing_kernels(every), "missing_from_config": not_in_config(every, cfg),
            "execution_providers": {ep: {"takes": sorted(o for o in flat if o in ops),
                                         "leaves_to_cpu": sorted(o for o in flat if o not in ops)}
                                    for ep, ops in eps.items()}}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m export.mobile EXPORT_DIR", file=sys.stderr)
        return 2
    from codec.cli_util import fail
    try:
        r = report(argv[0])
    except (ValueError, OSError, KeyError) as e:
        return fail(e)
    print(f"operators in the .ort files: {', '.join(r['operators'])}")
    print(f"without a CPU kernel in onnxruntime: {r['missing_cpu_kernels'] or 'none'}")
    print(f"missing from {r['config']}: {r['missing_from_config'] or 'none'}")
    for ep, v in r["execution_providers"].items():
        print(f"{ep}: takes {', '.join(v['takes']) or 'nothing'}; leaves to the CPU: {', '.join(v['leaves_to_cpu']) or 'nothing'}")
    return 1 if r["missing_cpu_kernels"] or r["missing_from_config"] else 0


if __name__ == "__main__":
    sys.exit(main())
