"""Helpers for the command lines: one-line errors and non-zero exits instead of tracebacks."""
from __future__ import annotations

import os
import sys


def fail(err: BaseException | str, code: int = 1) -> int:
    """Print ``error: <message>`` (first line only) to stderr and return ``code``."""
    msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    print(f"error: {msg}", file=sys.stderr)
    return code


def run_command(command, errors: tuple[type[BaseException], ...]) -> int:
    """Run ``command()``; a listed error becomes a one-line message and exit 1, Ctrl-C exit 130, a closed
    output pipe (``| head``) a quiet exit 0."""
    try:
        command()
    except BrokenPipeError:
        sys.stdout = open(os.devnull, "w")
        return 0
    except errors as exc:
        return fail(exc)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0


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
