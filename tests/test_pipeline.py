"""`make distill` end to end on a tiny configuration, and the pieces of its summary."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from pipeline.summary import NOISE, bd_cell, check

ROWS = ["teacher", "shipped", "student", "pruned", "int8"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The pipeline on student-1k: 2 distillation steps, 2 recovery steps, 1 evaluation image."""
    import torch

    from pipeline.run import run
    threads = torch.get_num_threads()
    out = tmp_path_factory.mktemp("pipeline")
    try:
        run("quick", "student-1k", out_dir=out, images=1, teacher_images=1, steps=2, prune_steps=2, threads=1,
            calib=2, timing_runs=1, teacher_onnx=False, rd_cache=None, progress=False)
    finally:
        torch.set_num_threads(threads)
    return out


def test_summary_rows_and_files(tiny_run, capsys):
    s = json.loads((tiny_run / "summary.json").read_text())
    assert [r["key"] for r in s["rows"]] == ROWS
    assert s["profile"] == "quick" and s["student"] == "student-1k" and s["eval_images"] == ["I03"]
    for name, path in s["files"].items():
        assert Path(path).exists(), name
    for key in ("student", "pruned"):
        assert (Path(s["files"][f"ONNX ({key})"]) / "manifest.json").is_file()
    assert list(Path(s["files"]["INT8 ONNX (student)"]).glob("*.int8.onnx"))
    md = (tiny_run / "summary.md").read_text()
    for r in s["rows"]:
        assert r["label"] in md
    assert set(s["stage_s"]) == {"models", "distill", "prune", "export", "profile", "timing", "rd", "summary"}


def test_summary_is_consistent(tiny_run):
    s = json.loads((tiny_run / "summary.json").read_text())
    rows = {r["key"]: r for r in s["rows"]}
    # the distillation started from the shipped student and distilled from it
    d = s["distillation"]
    assert d["start"] == "shipped" and d["kd_teacher"] == "student" and d["steps"] == 2
    assert d["init"].endswith("weights/student-1k.safetensors")
    assert d["kd_teacher_weights"] == d["init"]
    # MAC counts: the profiler's, the pruned model within its budget, the INT8 row the same networks
    assert rows["teacher"]["encoder_ratio"] == pytest.approx(1.0)
    assert rows["student"]["decoder_kmac"] == pytest.approx(rows["shipped"]["decoder_kmac"])
    assert rows["pruned"]["decoder_kmac"] <= s["pruning"]["target_kmac"] + 1e-9 < rows["student"]["decoder_kmac"]
    assert rows["int8"]["decoder_kmac"] == rows["student"]["decoder_kmac"]
    assert [rows[k]["input"] for k in ROWS] == [None, None, "shipped", "student", "student"]
    # decode times where an export exists; the teacher's skipped and said so
    assert all(rows[k]["onnx_fp32_ms"] > 0 for k in ("shipped", "student", "pruned"))
    assert rows["int8"]["onnx_int8_ms"] > 0 and rows["int8"]["onnx_fp32_ms"] is None
    assert rows["teacher"]["onnx_fp32_ms"] is None and "not timed" in rows["teacher"]["note"]
    # the BD figures are those of the RD stage's rows
    from evaluation.bdrate import bd_summary
    rd = json.loads((tiny_run / "rd" / "rd.json").read_text())
    codecs = {r["codec"] for r in rd["rows"]}
    assert {"jpeg", "webp"} | {r["codec"] for r in s["rows"]} <= codecs
    for r in s["rows"]:
        again = bd_summary(rd["rows"], "jpeg", r["codec"], "psnr_yuv")
        assert (again["bd_rate"] == r["bd_jpeg"]["bd_rate"]
                or not any(math.isfinite(x or math.nan) for x in (again["bd_rate"], r["bd_jpeg"]["bd_rate"])))
    # one check (and one verdict) per stage that made a model from another
    assert [c["row"] for c in s["checks"]] == ["student", "pruned", "int8"]
    for c in s["checks"]:
        assert c["text"] in s["verdicts"]
    assert any(v.startswith("Distillation:") and "self-distillation" in v for v in s["verdicts"])
    assert any(v.startswith("Codec worth having:") for v in s["verdicts"])


def test_screen_ends_with_the_table_files_and_next_commands(tiny_run):
    from pipeline.summary import screen
    s = json.loads((tiny_run / "summary.json").read_text())
    text = screen(s)
    assert "vs JPEG" in text and "vs WebP" in text and "ONNX FP32 ms" in text
    assert text.index("Verdict:") < text.index("Files:") < text.index("Next:")
    assert "make bench" in text and "--profile full" in text and "python -m export" in text


# ---- the pieces ------------------------------------------------------------------------------------
def test_pillow_webp_round_trip(tmp_path):
    from pipeline.bench import PillowWebP, classical
    rng = np.random.default_rng(0)
    rgb = (rng.random((48, 64, 3)) * 255).astype(np.uint8)
    c = PillowWebP()
    assert c.available()[0]
    path = c.encode(rgb, 80, tmp_path)
    assert path.stat().st_size > 0 and c.decode(path, tmp_path).shape == rgb.shape
    codecs, _ = classical("jpeg")
    assert [x.name for x in codecs] == ["jpeg", "webp"]      # WebP always comes with JPEG


def test_check_says_when_a_stage_made_the_model_worse():
    src = {"key": "student", "label": "the student"}
    row = {"key": "pruned", "label": "pruned", "input": "student"}
    for rate, verdict in ((NOISE + 2, "worse"), (0.3, "same"), (-NOISE - 1, "better"), (math.nan, "unmeasured")):
        c = check("pruning", {**row, "vs_input": {"bd_rate": rate, "bd_quality_db": -0.1, "n_images": 3}},
                  {"student": src})
        assert c["verdict"] == verdict
        assert ("WORSE" in c["text"]) == (verdict == "worse")
    assert bd_cell({"bd_rate": -6.04, "bd_quality_db": 0.2, "n_images": 3, "n_skipped": 0}, 14) == "-6.0% (3/14)"
