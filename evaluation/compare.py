"""The one sequence every comparison runs: check the codecs can run, code the images with each into real
files, and read BD figures between any two of them from the same rows."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .bdrate import bd_summary
from .rd import run_rd


@dataclass
class Comparison:
    """The RD rows of one run (one per image, codec and rate point, from real files)."""

    rows: list[dict]

    def bd(self, anchor: str, codec: str, metric: str = "psnr_yuv") -> dict:
        """BD-rate and BD-quality of ``codec`` against ``anchor`` (evaluation.bdrate.bd_summary)."""
        return bd_summary(self.rows, anchor, codec, metric)

    def of(self, codec: str) -> list[dict]:
        """The rows of one codec."""
        return [r for r in self.rows if r["codec"] == codec]


def ready(codecs: list) -> list:
    """The codecs, each checked with ``available()``; ValueError naming the first that cannot run."""
    for c in codecs:
        ok, why = c.available()
        if not ok:
            raise ValueError(f"{c.name}: {why}")
    return codecs


def compare(images: list[Path], codecs: list, progress: bool = True, check: bool = True) -> Comparison:
    """Code ``images`` with every codec (checked first unless ``check`` is False) and return the rows;
    RuntimeError when any coding fails."""
    rows, failed = run_rd(images, ready(codecs) if check else codecs, progress=progress)
    if failed:
        raise RuntimeError(f"RD run failed: {failed}")
    return Comparison(rows)
