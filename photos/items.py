"""The two records of the manifest: a package that ships images (Source) and one image in it (Item)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Source:
    """A package that ships images: a PyPI requirement (wheel or sdist) or a Debian package name."""

    kind: str  # "pypi" (wheel), "sdist" (PyPI source archive) or "deb"
    package: str
    module: str = ""  # importable name whose installed copy may stand in for a download


@dataclass(frozen=True)
class Item:
    """One image of the manifest: where it lives inside its package and what it becomes."""

    split: str
    name: str  # output file stem
    source: Source
    member: str  # path inside the wheel (as under site-packages), the sdist archive or the .deb tree

    @property
    def filename(self) -> str:
        return f"{self.name}.png"
