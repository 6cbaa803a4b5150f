"""Training-time accounting for the RD-against-CPU-hours curve: snapshots, resumed logs, the curve command."""
from __future__ import annotations

import json

from benchmarks import curve
from photos import train_images
from codec.registry import create_model
from training import TrainConfig, Trainer, log_train_seconds
from codec.weights import weights_metadata


def test_log_seconds_add_up_over_resumes(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("step,time_s,lr,loss,bpp,psnr_yuv,aux\n10,5.0,0,0,0,0,0\n20,9.0,0,0,0,0,0\n"
                   "30,3.0,0,0,0,0,0\n40,7.5,0,0,0,0,0\n")
    assert log_train_seconds(log) == 16.5
    assert log_train_seconds(log, 20) == 9.0
    assert log_train_seconds(log, 30) == 12.0
    assert log_train_seconds(log, 50) is None
    assert log_train_seconds(tmp_path / "missing.csv") is None


def test_snapshots_record_step_and_time_and_resume_keeps_the_clock(tmp_path):
    cfg = TrainConfig(steps=3, batch=2, crop=64, crops_per_epoch=8, snapshot_every_s=1e-6, log_every=1, threads=1)
    trainer = Trainer(create_model("student-1k"), cfg, tmp_path, train_images()[:2])
    trainer.train(progress=False)
    snaps = sorted((tmp_path / "snapshots").glob("step-*.safetensors"))
    assert [s.name for s in snaps] == [f"step-{i:07d}.safetensors" for i in (1, 2, 3)]
    meta = weights_metadata(snaps[-1])
    assert meta["step"] == "3" and float(meta["train_s"]) > 0 and meta["threads"] == "1"

    again = Trainer(create_model("student-1k"), cfg, tmp_path, train_images()[:2])
    assert again.resume() and again.step == 3
    assert again.train_s == float(meta["train_s"])


def test_curve_command_writes_table_plot_and_reuses_points(tmp_path):
    cfg = TrainConfig(steps=1, batch=2, crop=64, crops_per_epoch=4, snapshot_every_s=1e-6, threads=1)
    run = tmp_path / "run"
    Trainer(create_model("student-1k"), cfg, run, train_images()[:1]).train(progress=False)
    out = tmp_path / "out"
    args = ["--run", f"s1k={run}", "--images", "1", "--out", str(out)]
    assert curve.main(args) == 0
    data = json.loads((out / "training_curve.json").read_text())
    (point,) = data["points"]
    assert point["label"] == "s1k" and point["step"] == 1 and point["cpu_hours"] > 0
    assert (out / "training_curve.png").stat().st_size > 0
    assert "| s1k | 1 |" in (out / "training_curve.md").read_text()
    assert curve.main(args) == 0  # second run: the point comes from the cache, not a new benchmark
    assert json.loads((out / "training_curve.json").read_text())["points"] == data["points"]


def test_curve_command_rejects_bad_arguments(tmp_path, capsys):
    assert curve.main(["--out", str(tmp_path)]) == 1
    assert curve.main(["--run", "nolabel", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error:") or "error" in line for line in err)
