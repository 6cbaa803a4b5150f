"""Helpers for the command lines: one-line errors and non-zero exits instead of tracebacks."""
from __future__ import annotations

import sys


def fail(err: BaseException | str, code: int = 1) -> int:
    """Print ``error: <message>`` (first line only) to stderr and return ``code``."""
    msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    print(f"error: {msg}", file=sys.stderr)
    return code


def parse_pairs(items: list[str], flag: str, form: str = "NAME=PATH") -> list[tuple[str, str]]:
    """``NAME=VALUE`` command-line items -> (name, value) pairs; ValueError naming ``flag`` and the expected
    ``form`` for an item without a name or a value."""
    pairs = []
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise ValueError(f"{flag} want{'' if ' and ' in flag else 's'} {form}, got {item!r}")
        pairs.append((name, value))
    return pairs
