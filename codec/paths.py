"""Where the toolkit keeps things, relative to the repository (never to the working directory): the shipped
weights, and RUNS_DIR for everything a run writes (checkpoints, logs, caches, exports); the environment
variable LIGHTCODEC_RUNS moves RUNS_DIR elsewhere (e.g. a scratch disk)."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
RUNS_DIR = Path(os.environ.get("LIGHTCODEC_RUNS") or REPO_ROOT / "runs")
