"""The training-throughput benchmark: every mode timed, the table written."""
from __future__ import annotations

import json

from benchmarks.train_speed import MODES, run, step_time


def test_step_time_is_positive_and_reports_the_first_step():
    median, first = step_time("student-1k", bf16=True, channels_last=True, steps=1, batch=2, crop=64)
    assert median > 0 and first > 0


def test_run_writes_one_row_per_mode(tmp_path):
    rows = run(["student-1k"], steps=1, batch=2, crop=64, out=tmp_path, threads=1)
    assert [r["mode"] for r in rows] == list(MODES)
    assert rows[0]["speedup"] == 1.0
    saved = json.loads((tmp_path / "train_speed.json").read_text())
    assert saved["rows"] == rows and "--threads 1" in saved["meta"]["command"]
    table = (tmp_path / "train_speed.md").read_text()
    assert all(f"| student-1k | {m} |" in table for m in MODES)
