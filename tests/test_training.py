"""The training loop under interruption: SIGTERM or Ctrl-C ends a run with a checkpoint it resumes from."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_at_a_step_boundary_with_a_checkpoint(tmp_path, sig):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "distill", "--student", "student-1k", "--no-kd", "--steps", "100000",
           "--threads", "1", "--run-dir", str(run), "--quiet"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = run / "log.csv"
    deadline = time.monotonic() + 240
    while (not log.is_file() or len(log.read_text().splitlines()) < 2) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.5)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["interrupted"] is True and "weights" not in summary
    assert 0 < summary["steps"] < 100000

    from training import load_checkpoint
    assert load_checkpoint(run / "checkpoint.pt")["step"] == summary["steps"]


def test_weight_average_is_exported_and_survives_a_resume(tmp_path):
    """cfg.ema keeps an average of the weights: averaged() swaps it in and restores the raw weights,
    snapshots hold it, and a resumed run continues the same average."""
    import torch

    from photos import train_images
    from codec.registry import create_model
    from training import TrainConfig, Trainer
    from codec.weights import load_model

    cfg = dict(steps=6, batch=2, crop=64, ema=0.9, log_every=2, threads=1, snapshot_every_s=1e-9)
    trainer = Trainer(create_model("student-1k"), TrainConfig(**cfg), tmp_path, train_images()[:2])
    trainer.train(progress=False)
    raw = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    with trainer.averaged() as model:
        averaged = {n: p.detach().clone() for n, p in model.named_parameters()}
    assert all(torch.equal(raw[n], p) for n, p in trainer.model.named_parameters())
    assert any(not torch.equal(raw[n], averaged[n]) for n in raw)
    snap = load_model(str(sorted((tmp_path / "snapshots").glob("*.safetensors"))[-1]))
    name = next(n for n in raw if not torch.equal(raw[n], averaged[n]) and "gain_steps" not in n)
    stored = dict(snap.named_parameters())[name]
    assert torch.allclose(stored.float(), averaged[name].to(stored.dtype).float(), atol=1e-2)
    again = Trainer(create_model("student-1k"), TrainConfig(**cfg), tmp_path, train_images()[:2])
    assert again.resume() and all(torch.equal(again.ema[n], trainer.ema[n]) for n in trainer.ema)


def test_gain_vectors_have_their_own_learning_rate_and_old_optimiser_states_still_load(tmp_path):
    """cfg.gain_lr_scale scales the rate points' gain vectors' learning rate (0: frozen); an optimiser
    state saved with one parameter group (before the gains had theirs) is mapped onto the groups."""
    import torch

    from photos import train_images
    from codec.registry import create_model
    from training import TrainConfig, Trainer

    cfg = TrainConfig(steps=3, batch=2, crop=64, log_every=1, threads=1, gain_lr_scale=0.0)
    trainer = Trainer(create_model("student-1k"), cfg, tmp_path, train_images()[:2])
    gains = trainer.model.gain_steps.detach().clone()
    other = trainer.model.synthesis_y.state_dict()
    other = {k: v.clone() for k, v in other.items()}
    trainer.train(progress=False)
    assert torch.equal(trainer.model.gain_steps, gains)
    assert any(not torch.equal(v, other[k]) for k, v in trainer.model.synthesis_y.state_dict().items())

    one_group = [p for n, p in trainer.model.named_parameters() if not n.endswith("quantiles")]
    old = torch.optim.Adam(one_group, lr=1e-3)
    loss = sum(p.float().pow(2).sum() for p in one_group)
    loss.backward()
    old.step()
    fresh = Trainer(create_model("student-1k"), cfg, tmp_path / "b", train_images()[:2])
    fresh.model.load_state_dict(trainer.model.state_dict())
    fresh._load_opt(old.state_dict())
    p = fresh.model.gain_steps
    assert torch.equal(fresh.opt.state[p]["exp_avg"], old.state[trainer.model.gain_steps]["exp_avg"])


def test_new_tensors_train_at_their_own_learning_rate(tmp_path):
    """The Trainer's ``new_names`` (what an --init file lacked) get cfg.new_lr_scale times the learning rate:
    0 leaves them where they started while the rest trains; 10 gives their group ten times the base lr."""
    import torch

    from photos import train_images
    from codec.registry import create_model
    from training import TrainConfig, Trainer

    model = create_model("student-1k")
    new = frozenset(n for n, _ in model.named_parameters() if n.startswith("synthesis_y."))
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = TrainConfig(steps=3, batch=2, crop=64, log_every=1, threads=1, new_lr_scale=0.0)
    trainer = Trainer(model, cfg, tmp_path, train_images()[:2], new_names=new)
    trainer.train(progress=False)
    params = dict(trainer.model.named_parameters())
    assert all(torch.equal(params[n], start[n]) for n in new)
    assert any(not torch.equal(params[n], start[n]) for n in params if n.startswith("analysis_y."))

    cfg = TrainConfig(steps=1, batch=2, crop=64, log_every=1, threads=1, new_lr_scale=10.0)
    trainer = Trainer(create_model("student-1k"), cfg, tmp_path / "b", train_images()[:2], new_names=new)
    trainer.train(progress=False)
    base, grown = trainer.opt.param_groups[:2]
    assert len(grown["params"]) == len(new) and grown["lr"] == 10 * base["lr"] > 0


def test_a_fresh_optimiser_mid_schedule_warms_up_again(tmp_path):
    """continue_from (weights and their step, a fresh Adam) ramps the schedule's lr up over cfg.rewarm steps
    instead of jumping in at the mid-schedule rate."""
    import csv

    from photos import train_images
    from codec.registry import create_model
    from codec.weights import save_weights
    from training import TrainConfig, Trainer, continue_from, lr_at

    weights = save_weights(create_model("student-1k"), tmp_path / "w.safetensors", meta={"step": 40})
    cfg = TrainConfig(steps=43, batch=2, crop=64, log_every=1, threads=1, warmup=5, rewarm=4)
    trainer = Trainer(create_model("student-1k"), cfg, tmp_path / "run", train_images()[:2])
    assert continue_from(trainer, weights) and trainer.step == 40
    trainer.train(progress=False)
    logged = [float(r["lr"]) for r in csv.DictReader(open(tmp_path / "run" / "log.csv"))]
    expected = [lr_at(s, cfg) * (s - 39) / 4 for s in (40, 41, 42)]
    assert logged == pytest.approx(expected, rel=5e-3) and logged[0] < logged[1] < lr_at(40, cfg)


def test_resumed_ranks_draw_different_crops(tmp_path, monkeypatch):
    """Only rank 0 checkpoints its RNG: a resumed rank 0 continues that stream exactly, other ranks leave it
    (else under torchrun every rank trained on rank 0's crops after a resume)."""
    import torch

    from photos import train_images
    from codec.registry import create_model
    from training import TrainConfig, Trainer

    cfg = TrainConfig(steps=2, batch=2, crop=64, log_every=1, threads=1)
    Trainer(create_model("student-1k"), cfg, tmp_path, train_images()[:2]).train(progress=False)
    draws = {}
    for rank in (0, 1, 0):
        monkeypatch.setenv("RANK", str(rank))
        assert Trainer(create_model("student-1k"), cfg, tmp_path, train_images()[:2]).resume()
        draws.setdefault(rank, []).append(torch.randint(0, 2**62, (4,)))
    assert torch.equal(*draws[0]) and not torch.equal(draws[0][0], draws[1][0])


def test_resume_loads_entropy_tables_of_another_size():
    """A run started from shipped weights rebuilds its entropy tables at another size; its checkpoint must
    still load into a model that holds the shipped tables (the resume of an ``--init`` run)."""
    import torch

    from codec.registry import create_model
    from codec.weights import fit_entropy_tables

    model = create_model("student-1k")
    model.update(force=True)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    key = "entropy_bottleneck._quantized_cdf"
    cdf = state[key]
    state[key] = torch.cat([cdf, cdf[:, -1:].expand(-1, 5)], dim=1)   # a table 5 columns wider
    fit_entropy_tables(model, state)
    model.load_state_dict(state)
    assert torch.equal(model.entropy_bottleneck._quantized_cdf, state[key])


def test_more_rate_points_train_from_six_point_weights_and_code(tmp_path):
    """--rate-points 8 from 6-point weights: the old gains kept, two new ones continuing them; the file
    holds 8 and codes at the new top point with more bits than at the sixth; resuming needs the flag."""
    import torch

    from codec.api import decode_image, encode_image
    from codec.images import load_rgb
    from codec.rate_points import LAMBDA_LADDER
    from codec.weights import load_model, rate_points_of
    from distill.losses import KDWeights
    from distill.train import distill as train
    from photos import eval_images, train_images

    def distill(*args, **kw):
        return train(*args, kd=KDWeights(0, 0, 0), **kw)
    from training import CheckpointError

    six = tmp_path / "six.safetensors"
    distill("student-1k", None, tmp_path / "a", train_images()[:2], steps=2, threads=1, out=six, progress=False,
            batch=2, crop=64)
    start = load_model(str(six)).gain_steps.detach()
    out = tmp_path / "eight.safetensors"
    kw = dict(threads=1, out=out, init=six, progress=False, batch=2, crop=64, lr=1e-9, warmup=1, rate_points=8)
    distill("student-1k", None, tmp_path / "b", train_images()[:2], steps=2, **kw)
    assert rate_points_of(six) == 6 and rate_points_of(out) == 8
    model = load_model(str(out))
    assert model.num_qualities == 8 and model.cfg.lambdas == LAMBDA_LADDER
    gains = model.gain_steps.detach()
    assert torch.allclose(gains[:6], start, atol=1e-2)               # lr 1e-9: the old points unchanged
    assert torch.allclose(gains[7] - gains[6], start[5] - start[4], atol=2e-2)
    rgb = load_rgb(eval_images()[0])[:128, :192]
    sizes = [len(encode_image(model, rgb, q)) for q in (5, 7)]
    assert sizes[1] > sizes[0] and decode_image(model, encode_image(model, rgb, 7)).shape == rgb.shape
    kw.pop("rate_points")
    with pytest.raises(CheckpointError, match="--rate-points 8"):
        distill("student-1k", None, tmp_path / "b", train_images()[:2], steps=4, **kw)
    again = tmp_path / "again.safetensors"     # from eight-point weights, no flag: eight points, kept as trained
    distill("student-1k", None, tmp_path / "c", train_images()[:2], steps=1, **{**kw, "init": out, "out": again})
    assert torch.allclose(load_model(str(again)).gain_steps, gains, atol=1e-2)


def test_weights_trained_from_a_file_add_up_its_steps_and_time(tmp_path):
    """--init: the exported weights and the snapshots add this run's steps and seconds to the start file's
    (a long run split over sessions reads as one), keep this run's own share, carry a GPU burst's record
    and extend the history."""
    from codec.registry import create_model
    from codec.weights import save_weights, weights_metadata
    from distill.losses import KDWeights
    from distill.train import distill
    from photos import train_images
    from training.checkpoints import lineage_meta

    start = tmp_path / "start.safetensors"
    save_weights(create_model("student-1k"), start,
                 meta={"step": 1000, "train_s": 3600.0, "gpu_s": 60.0, "history": "1,000 steps by hand"})
    out = tmp_path / "out.safetensors"
    distill("student-1k", None, tmp_path / "run", train_images()[:1], kd=KDWeights(0, 0, 0), steps=2, threads=1,
            out=out, init=start, progress=False, batch=2, crop=64, snapshot_every_s=1e-6)
    meta = weights_metadata(out)
    assert int(meta["step"]) == 1002 and int(meta["run_step"]) == 2 and float(meta["run_train_s"]) > 0
    assert float(meta["train_s"]) == pytest.approx(3600.0 + float(meta["run_train_s"]), abs=0.11)
    assert meta["gpu_s"] == "60.0"
    assert meta["history"].startswith("1,000 steps by hand; then 2 steps (") and "64x64 crops, batch 2" in meta["history"]
    assert weights_metadata(tmp_path / "run" / "snapshots" / "step-0000002.safetensors")["step"] == "1002"

    again = tmp_path / "again.safetensors"        # from a file that already has a lineage: it adds up again
    distill("student-1k", None, tmp_path / "run2", train_images()[:1], kd=KDWeights(0, 0, 0), steps=1, threads=1,
            out=again, init=out, progress=False, batch=2, crop=64)
    assert weights_metadata(again)["step"] == "1003"
    # a start file without a history: one is made from its step and seconds
    assert lineage_meta({"step": "5", "train_s": "7200.0"}, 1, 1.0, "x")["history"] == "step 5 (2.00 CPU-h); then 1 steps (1 s): x"


def test_rate_weights_steer_which_rate_points_train_and_are_checked():
    import argparse

    import torch

    from training.cli import _weights
    from codec.rate_points import sample_rate_points

    gen = torch.Generator().manual_seed(0)
    q = sample_rate_points((0, 0, 1, 3), 4, 4000, gen)
    counts = torch.bincount(q, minlength=4)
    assert counts[0] == counts[1] == 0 and 2.5 < counts[3] / counts[2] < 3.5
    assert set(sample_rate_points((), 3, 500, gen).tolist()) == {0, 1, 2}
    with pytest.raises(ValueError, match="3 weights for a model with 4"):
        sample_rate_points((1, 1, 1), 4, 2, gen)
    assert _weights("1,1,2") == (1.0, 1.0, 2.0)
    from training.cli import OVERRIDES
    assert {"rate_weights", "seed"} <= set(OVERRIDES)
    for bad in ("1,x", "-1,2", "0,0"):
        with pytest.raises(argparse.ArgumentTypeError):
            _weights(bad)
