"""The training loop under interruption: SIGTERM ends a run with a checkpoint it resumes from."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_sigterm_stops_at_a_step_boundary_with_a_checkpoint(tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "distill", "--student", "student-1k", "--no-kd", "--steps", "100000",
           "--threads", "1", "--run-dir", str(run), "--quiet"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = run / "log.csv"
    deadline = time.monotonic() + 240
    while (not log.is_file() or len(log.read_text().splitlines()) < 2) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["interrupted"] is True and "weights" not in summary
    assert 0 < summary["steps"] < 100000

    from codec.training import load_checkpoint
    assert load_checkpoint(run / "checkpoint.pt")["step"] == summary["steps"]
