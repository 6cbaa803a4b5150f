"""python -m benchmarks speed: our decoders next to the classical ones, with peak memory per process."""
from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest


def test_child_figures_are_the_childs_own():
    """A child of this (large: torch is loaded) process reports its own peak RSS, not the parent's."""
    from benchmarks.speed import run_child

    r = run_child([sys.executable, "-c", "import sys"])
    assert 0 < r["rss_mb"] < 100 and r["wall"] > 0 and r["cpu"] >= 0
    with pytest.raises(RuntimeError, match="failed"):
        run_child([sys.executable, "-c", "import sys; sys.exit(3)"])


def test_mosaic_is_photo_scale_and_not_repetitive():
    from export.profile import MOSAIC_CELL, mosaic

    img = mosaic(1000, 1300)
    assert img.shape == (1000, 1300, 3) and img.dtype == np.uint8
    ch, cw = MOSAIC_CELL
    cells = {img[r:r + ch, c:c + cw].tobytes() for r in range(0, 1000 - ch, ch) for c in range(0, 1300 - cw, cw)}
    assert len(cells) == 4                  # 2 x 2 whole cells, all different


def test_sizes_option():
    from benchmarks.speed import parse_sizes

    assert parse_sizes("768x512,4000x3000") == [(512, 768), (3000, 4000)]
    with pytest.raises(ValueError):
        parse_sizes("768*512")


def test_speed_benchmark_writes_reports(tmp_path, capsys):
    from benchmarks.__main__ import main

    out = tmp_path / "res"
    assert main(["speed", "--model", "student-1k", "--sizes", "160x96", "-n", "1", "--threads", "1",
                 "--no-torch", "--out", str(out), "--quiet"]) == 0
    res = json.loads((out / "speed.json").read_text())
    rows = {r["decoder"]: r for r in res["pictures"][0]["rows"]}
    assert {"ours: ONNX FP32", "ours: ONNX INT8"} <= set(rows)
    for r in rows.values():
        assert r["wall"] > 0 and r["mp_s_wall"] > 0 and r["rss_mb"] > 0
    if shutil.which("djpeg") and shutil.which("cjpeg"):
        assert rows["djpeg (libjpeg-turbo)"]["x_djpeg_wall"] == 1.0
        assert rows["ours: ONNX FP32"]["x_djpeg_wall"] > 0
    else:
        assert "djpeg (libjpeg-turbo)" in res["skipped"]
    md = (out / "speed.md").read_text()
    assert "| decoder | threads |" in md and "ours: ONNX FP32" in md
    capsys.readouterr()
