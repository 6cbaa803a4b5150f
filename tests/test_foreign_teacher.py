"""A CompressAI model as the teacher (distill.teachers): the adapter's outputs, the Distiller with it (entropy
KD off, gradients reach the student), a few real distillation steps through the CLI from a local state dict,
and one-line errors for a missing or unreadable file, an unknown model and a failed download."""
from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
from pathlib import Path

import pytest
import torch

from codec.registry import create_model
from distill.losses import Distiller, KDWeights
from distill.teachers import ForeignTeacher, TeacherError, build_compressai, load_teacher

ROOT = Path(__file__).resolve().parent.parent
SPEC = "compressai:mbt2018-mean:1"


@pytest.fixture(scope="module")
def zoo_weights(tmp_path_factory) -> Path:
    """A freshly initialised mbt2018-mean (quality 1) saved as a local safetensors state dict."""
    from compressai.zoo import mbt2018_mean
    from safetensors.torch import save_file

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("zoo") / "mbt2018-mean-1.safetensors"
    save_file({k: v.contiguous() for k, v in mbt2018_mean(quality=1).state_dict().items()}, str(path))
    return path


def test_adapter_gives_yuv420_and_the_h16_latent(zoo_weights):
    t = load_teacher(f"{SPEC}:{zoo_weights}")
    assert isinstance(t, ForeignTeacher) and t.cfg.y_channels == 192 and t.stride == 16
    out = t(torch.rand(2, 1, 64, 96), torch.rand(2, 2, 32, 48), torch.tensor([0, 5]))
    assert out["y"].shape == (2, 1, 64, 96) and out["uv"].shape == (2, 2, 32, 48)
    assert out["latent_hat"].shape == (2, 192, 4, 6)
    assert 0 <= out["y"].min() and out["y"].max() <= 1


def test_distiller_with_a_foreign_teacher(zoo_weights, capsys):
    torch.manual_seed(0)
    teacher = load_teacher(f"{SPEC}:{zoo_weights}")
    student = create_model("student-1k").train()
    kd = Distiller(teacher, student, KDWeights())
    assert kd.w.entropy == 0 and "entropy distillation off" in capsys.readouterr().err
    y, uv, q = torch.rand(2, 1, 64, 64), torch.rand(2, 2, 32, 32), torch.tensor([0, 5])
    loss, parts = kd(student(y, uv, q), y, uv, q)
    assert set(parts) == {"output", "latent"} and torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert student.synthesis_y.head[0].weight.grad.abs().sum() > 0
    assert kd.latent_proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())


def test_distil_a_few_steps_from_a_local_state_dict(tmp_path, zoo_weights):
    init = ROOT / "weights" / "student-1k.safetensors"
    out = tmp_path / "student.safetensors"
    r = subprocess.run([sys.executable, "-m", "distill", "--teacher", f"{SPEC}:{zoo_weights}", "--student",
                        "student-1k", "--init", str(init), "--steps", "3", "--threads", "1", "--quiet",
                        "--run-dir", str(tmp_path / "run"), "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "note: entropy distillation off" in r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 3 and summary["teacher"].startswith(SPEC)
    assert torch.isfinite(torch.tensor(summary["train_metrics"]["loss"]))
    from safetensors.torch import load_file
    before, after = load_file(str(init)), load_file(str(out))
    assert any(not torch.equal(before[k], after[k]) for k in before if before[k].is_floating_point())


def _one_line_error(args: list[str], tmp_path, capsys) -> str:
    from distill.__main__ import main

    capsys.readouterr()
    rc = main(["--student", "student-1k", "--steps", "1", "--quiet", "--run-dir", str(tmp_path / "r"), *args])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("error:") and err.count("\n") == 1, err
    return err


def test_missing_unreadable_and_unknown_are_one_line_errors(tmp_path, capsys):
    err = _one_line_error(["--teacher", f"{SPEC}:{tmp_path / 'nope.pth.tar'}"], tmp_path, capsys)
    assert "no such file" in err
    junk = tmp_path / "junk.pth.tar"
    junk.write_bytes(b"not a state dict" * 8)
    assert "nothing in it was run" in _one_line_error(["--teacher", f"{SPEC}:{junk}"], tmp_path, capsys)
    err = _one_line_error(["--teacher", "compressai:nope:1"], tmp_path, capsys)
    assert "unknown CompressAI model 'nope'" in err and "mbt2018-mean" in err


def test_a_failed_download_names_the_local_file_alternative(monkeypatch):
    import compressai.zoo.image as zoo

    def offline(url, **_):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(zoo, "load_state_dict_from_url", offline)
    with pytest.raises(TeacherError) as e:
        build_compressai("compressai:mbt2018-mean:6")
    msg = str(e.value)
    assert "\n" not in msg and "no network" in msg and "compressai:mbt2018-mean:6:PATH" in msg
