"""Helpers for the command lines: one-line errors and non-zero exits instead of tracebacks."""
from __future__ import annotations

import sys


def fail(err: BaseException | str, code: int = 1) -> int:
    """Print ``error: <message>`` (first line only) to stderr and return ``code``."""
    msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    print(f"error: {msg}", file=sys.stderr)
    return code
