"""The machine a measurement ran on, in one line (every result file records it)."""
from __future__ import annotations

import os
import platform
from pathlib import Path


def machine() -> str:
    """CPU model, core count and OS of this machine, in one line."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"
