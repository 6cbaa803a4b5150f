"""Distillation: each term switches on and off, gradients reach the student and the projections,
training resumes from its checkpoint, and DDP runs under torchrun with 2 CPU processes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from codec.registry import create_model
from distill.losses import Distiller, KDWeights

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def batch():
    torch.manual_seed(0)
    return torch.rand(2, 1, 64, 64), torch.rand(2, 2, 32, 32), torch.tensor([0, 5])


@pytest.mark.parametrize("weights, expected", [
    (KDWeights(1, 0, 0), {"output"}), (KDWeights(0, 1, 0), {"latent"}), (KDWeights(0, 0, 1), {"entropy"}),
    (KDWeights(), {"output", "latent", "entropy"})])
def test_each_term_switches_and_gradients_flow(teacher, batch, weights, expected):
    student = create_model("student-1k").train()
    kd = Distiller(teacher, student, weights)
    out = student(*batch)
    loss, parts = kd(out, *batch)
    assert set(parts) == expected and loss.item() > 0
    loss.backward()
    if "output" in expected:
        assert student.synthesis_y.head[0].weight.grad.abs().sum() > 0
    assert student.analysis_y[0][1].weight.grad.abs().sum() > 0
    if "latent" in expected:
        assert kd.latent_proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())


def test_all_terms_off_is_disabled():
    assert not KDWeights(0, 0, 0).enabled()


def _distill(*args, env=None):
    return subprocess.run([sys.executable, "-m", "distill", "--student", "student-1k", "--quiet", *args],
                          cwd=ROOT, capture_output=True, text=True, env=env)


def test_training_resumes_from_checkpoint(tmp_path, trained_teacher_path):
    run = tmp_path / "run"
    r = _distill("--teacher", str(trained_teacher_path), "--steps", "4", "--run-dir", str(run))
    assert r.returncode == 0, r.stderr
    r = _distill("--teacher", str(trained_teacher_path), "--steps", "6", "--run-dir", str(run))
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["resumed"] and summary["steps"] == 6
    steps = [int(line.split(",")[0]) for line in (run / "log.csv").read_text().splitlines()[1:]]
    assert steps[-1] == 6
    assert Path(summary["weights"]).is_file()


def test_resumed_run_keeps_the_lineage_of_its_init_file(tmp_path):
    """A run started with --init and resumed without it still counts the start file's steps and time."""
    from codec.weights import save_weights, weights_metadata
    start = save_weights(create_model("student-1k"), tmp_path / "start.safetensors",
                         meta={"step": 1000, "train_s": 500.0})
    run = tmp_path / "run"
    args = ("--no-kd", "--crop", "64", "--batch", "1", "--run-dir", str(run))
    assert _distill(*args, "--init", str(start), "--steps", "2").returncode == 0
    r = _distill(*args, "--steps", "4")
    assert r.returncode == 0, r.stderr
    meta = weights_metadata(json.loads(r.stdout.strip().splitlines()[-1])["weights"])
    assert int(meta["step"]) == 1004 and int(meta["run_step"]) == 4 and float(meta["train_s"]) > 500
    assert meta["history"].startswith("step 1,000")


def test_ddp_two_cpu_processes(tmp_path, trained_teacher_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
           "-m", "distill", "--student", "student-1k", "--teacher", str(trained_teacher_path), "--steps", "3",
           "--threads", "1", "--run-dir", str(tmp_path / "ddp"), "--quiet", "--fresh"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "ddp" / "student-1k.safetensors").is_file()
    assert (tmp_path / "ddp" / "log.csv").is_file() and (tmp_path / "ddp" / "log.rank1.csv").is_file()
    # the weights count both processes' time (CPU-hours), the log rank 0's wall time
    from codec.weights import weights_metadata
    from training import log_train_seconds
    wall = log_train_seconds(tmp_path / "ddp" / "log.csv")
    assert float(weights_metadata(tmp_path / "ddp" / "student-1k.safetensors")["train_s"]) == pytest.approx(2 * wall, abs=0.3)


SNAPSHOTS_UNDER_DDP = """
import sys
from photos import train_images
from codec.registry import create_model
from training import TrainConfig, Trainer
cfg = TrainConfig(steps=3, batch=2, crop=64, threads=1, log_every=1, snapshot_every_s=1e-9)
Trainer(create_model("student-1k"), cfg, sys.argv[1], train_images()[:2]).train(progress=False)
"""


def test_ddp_survives_snapshots_between_steps(tmp_path):
    """Rank 0's snapshots rebuild its entropy tables (buffers) between steps; the other rank must not care."""
    (tmp_path / "snap.py").write_text(SNAPSHOTS_UNDER_DDP)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29534",
           str(tmp_path / "snap.py"), str(tmp_path / "run")]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(list((tmp_path / "run" / "snapshots").glob("step-*.safetensors"))) >= 2


def test_missing_teacher_is_a_one_line_error(tmp_path):
    r = _distill("--teacher", str(tmp_path / "nope.safetensors"), "--steps", "1", "--run-dir", str(tmp_path / "r"))
    assert r.returncode == 1 and r.stderr.strip().startswith("error:") and r.stderr.count("\n") == 1


def test_average_of_fine_tunes_is_their_mean_and_adds_their_steps(tmp_path):
    from codec.weights import load_model, save_weights, weights_metadata
    from distill.average import main as average_main

    paths = []
    for i, delta in enumerate((0.01, -0.03)):
        m = load_model("student-1k")
        with torch.no_grad():
            m.synthesis_y.head[0].bias.add_(delta)
        meta = {"step": 1000 + 10 * (i + 1), "run_step": 10 * (i + 1), "train_s": 500.0 + i + 1,
                "run_train_s": float(i + 1), "history": f"start; then {10 * (i + 1)} steps: run {i}"}
        paths.append(save_weights(m, tmp_path / f"ft{i}.safetensors", meta=meta))
    assert average_main([str(p) for p in paths] + ["-o", str(tmp_path / "mean.safetensors")]) == 0
    a, b, mean = (load_model(str(p)) for p in (*paths, tmp_path / "mean.safetensors"))
    torch.testing.assert_close(mean.synthesis_y.head[0].bias, (a.synthesis_y.head[0].bias + b.synthesis_y.head[0].bias) / 2,
                               atol=1e-3, rtol=0)
    meta = weights_metadata(tmp_path / "mean.safetensors")
    assert int(meta["step"]) == 1030 and float(meta["train_s"]) == pytest.approx(503.0)
    assert meta["history"].startswith("start; then 30 steps (3 s): the mean of 2") and "run 0" in meta["history"] and "run 1" in meta["history"]
    other = save_weights(a, tmp_path / "other.safetensors", meta={"step": 5, "run_step": 1, "train_s": 1.0, "run_train_s": 1.0})
    assert average_main([str(paths[0]), str(other), "-o", str(tmp_path / "bad.safetensors")]) == 1
