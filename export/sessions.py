"""ONNX Runtime session settings shared by the decoder, the exporter's checks and the profilers."""
from __future__ import annotations

import onnxruntime as ort


def session_options(threads: int = 1, spin: bool = False, arena: bool = True) -> ort.SessionOptions:
    """ORT options: ``threads`` intra-op threads, sequential execution, every graph optimisation (NCHWc
    layouts, fusions), no per-shape memory patterns (tiles come in several shapes), quiet logs.

    Idle pool threads sleep unless ``spin``: on a loaded CPU spinning workers steal the cores the busy
    ones need (2 threads were 4x slower than 1 here); the same policy as OMP_WAIT_POLICY=PASSIVE.
    ``arena=False``: tensors are freed as soon as they die instead of staying in the session's arena
    (the networks on the latent grid run once per picture)."""
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.enable_mem_pattern = False
    so.enable_cpu_mem_arena = arena
    so.log_severity_level = 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    return so


def wide_activations(recipe: dict | None) -> bool:
    """Whether an INT8 network's manifest recipe (export.int8.Recipe.describe) has 16-bit activations."""
    return bool(recipe) and str(recipe.get("activations", "")).startswith(("uint16", "int16"))
