"""ORT Mobile: the .ort files, their reduced-build operator config, and the operators they need.

Since onnxruntime 1.19 the mobile packages (onnxruntime-android, onnxruntime-c / -objc) carry every
operator of the CPU execution provider, and onnxruntime/tools/mobile_helpers ships the NNAPI and Core ML
lists only (checked below against the installed 1.31): so "supported by ORT Mobile" means a CPU kernel
for the operator's opset in onnxruntime of the same version, and, for a custom minimal build, a line in
the export's required_operators config.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    """student-1k (shipped weights): decoder networks, FP32 and INT8, with their .ort files."""
    from codec.weights import load_model
    from export.exporter import export_model

    out = tmp_path_factory.mktemp("mobile-export")
    export_model(load_model("student-1k"), out, int8=True, calib=2, encoder=False, log=lambda *_: None)
    return out


def test_mobile_helpers_of_the_installed_onnxruntime():
    import onnxruntime
    import onnxruntime.tools.mobile_helpers as mh

    from export.mobile import ep_lists

    files = {p.name for p in Path(mh.__file__).parent.iterdir()}
    assert "nnapi_supported_ops.md" in files
    lists = ep_lists()
    assert {"NNAPI", "CoreML (ML Program)"} <= set(lists) and "ai.onnx:Conv" in lists["NNAPI"]
    if tuple(int(v) for v in onnxruntime.__version__.split(".")[:2]) >= (1, 19):
        assert not any("mobile_package" in f for f in files)   # the reduced-package lists are gone


def test_every_operator_has_a_kernel_and_is_in_the_config(export_dir):
    from export.mobile import config_ops, missing_kernels, not_in_config, ort_model_ops, report

    m = json.loads((export_dir / "manifest.json").read_text())
    ortf = m["ort_format"]
    assert ortf is not None, "ORT format conversion failed at export"
    assert len(ortf["files"]) == 14 and ortf["target_platform"] == "arm"
    config = export_dir / "ort" / ortf["required_operators"]
    assert config.name == "required_operators.with_runtime_opt.config" and "/tmp" not in config.read_text()
    ops = ort_model_ops(export_dir / "ort" / f for f in ortf["files"])
    cfg = config_ops(config)
    assert ops and not missing_kernels(ops), missing_kernels(ops)
    assert not missing_kernels(cfg), missing_kernels(cfg)      # what runtime optimisations may add, too
    assert not not_in_config(ops, cfg), not_in_config(ops, cfg)
    # the checks can fail: an operator from nowhere is caught
    assert missing_kernels({"ai.onnx": {18: {"NoSuchOp"}}}) == ["ai.onnx:NoSuchOp@18"]
    assert not_in_config({"ai.onnx": {11: {"Conv", "Gelu"}}}, cfg) == ["ai.onnx:Gelu@11"]
    r = report(export_dir)
    assert r["operators"] and not r["missing_cpu_kernels"] and not r["missing_from_config"]
    assert set(r["execution_providers"]) >= {"NNAPI"}


def test_ort_files_load_and_match_onnx(export_dir):
    """Each .ort file, loaded as ORT Mobile loads it (saved runtime optimisations replayed), gives the
    ONNX file's outputs; the synthesis keeps its tile-crop inputs."""
    import onnxruntime as ort

    m = json.loads((export_dir / "manifest.json").read_text())
    rng = np.random.default_rng(0)
    for name in m["decoder_networks"]:
        net = m["networks"][name]
        for onnx_file in (net["file"], net["int8"]):
            stem = onnx_file[: -len(".onnx")]
            ort_file = export_dir / "ort" / f"{stem}.with_runtime_opt.ort"
            so = ort.SessionOptions()
            so.add_session_config_entry("session.enable_saved_runtime_optimizations", "1")
            a = ort.InferenceSession(str(ort_file), so, providers=["CPUExecutionProvider"])
            b = ort.InferenceSession(str(export_dir / onnx_file), providers=["CPUExecutionProvider"])
            size = {"H": 256, "W": 384}          # a padded picture: every grid is whole
            dim = lambda d: size[d[0]] // int(d.split("/")[1]) if "/" in d else size[d]  # noqa: E731
            feed = {p["name"]: rng.normal(size=(1, p["shape"][1], dim(p["shape"][2]), dim(p["shape"][3])))
                    .astype(np.float32) for p in net["inputs"]}
            out_a, out_b = a.run(None, feed), b.run(None, feed)
            for x, y in zip(out_a, out_b):
                # INT8: the phone's int8 kernels (saved QDQ fusions) against this machine's; a step or two
                tol = 0.03 * float(np.abs(y).max()) + 1e-3 if "int8" in onnx_file else 1e-4
                assert x.shape == y.shape and np.abs(x - y).max() <= tol, (onnx_file, np.abs(x - y).max(), tol)
            if name == "synthesis":
                assert {i.name for i in a.get_overridable_initializers()} >= {"crop1_starts", "crop1_ends"}
