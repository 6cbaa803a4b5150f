"""Shared fixtures: a quickly trained teacher (cached under runs/), evaluation images."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
TEST_TEACHER = ROOT / "runs" / "test-teacher" / "teacher.safetensors"


@pytest.fixture(scope="session", autouse=True)
def _threads():
    from training import auto_threads
    torch.set_num_threads(auto_threads())


@pytest.fixture(scope="session")
def trained_teacher_path() -> Path:
    """Weights of the teacher after a short real training run (done once, then reused)."""
    if not TEST_TEACHER.is_file():
        subprocess.run([sys.executable, "-m", "teacher", "train", "--profile", "quick", "--steps", "40",
                        "--run-dir", str(TEST_TEACHER.parent), "--quiet", "--fresh"],
                       cwd=ROOT, check=True)
    return TEST_TEACHER


@pytest.fixture(scope="session")
def teacher(trained_teacher_path):
    from codec.weights import load_model
    return load_model(str(trained_teacher_path))


@pytest.fixture(scope="session")
def eval_paths():
    from photos import eval_images
    return eval_images()
