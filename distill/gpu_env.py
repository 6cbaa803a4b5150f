"""The GPU machine's Python, made fit for the codec: carried wheels, stand-ins, and the return limits.

The lent GPU machine has its own python3 with PyTorch but no compressai and no network. ``prepare``
installs the wheels carried in ``gpu/wheels`` (``make gpu-wheels``) whose modules that Python lacks, into a
folder appended to ``sys.path`` (the machine's own packages, torch first of all, always win), and puts
stand-ins in place of the modules compressai imports at import time but the codec never calls
(torchvision, torch_geometric, pandas, scipy, matplotlib, ...) where they are missing or broken.
numpy is the one hard need besides torch: compressai's entropy models compute with it.

Only the standard library is imported here, so this runs before anything else is importable.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import re
import statistics
import subprocess
import sys
import time
import types
import zipfile
from pathlib import Path

# What comes back from the machine's output folder (docs/gpu.md).
MAX_FILES, MAX_FILE_BYTES, MAX_TOTAL_BYTES, MAX_DEPTH = 8, 16 * 2**20, 64 * 2**20, 2
NAME_RE = re.compile(r"^[A-Za-z0-9._-]+$")
# Imported by compressai at import time, never called by the codec: a stand-in does when they are missing.
STANDINS = ("torchvision", "torch_geometric", "pandas", "scipy", "matplotlib", "requests", "einops",
            "pytorch_msssim", "PIL")
# Needed for real: compressai, the weights, the progress bar, and numpy (for compressai's entropy models).
NEEDED = ("numpy", "compressai", "safetensors", "tqdm")


class EnvError(RuntimeError):
    """The GPU machine's Python cannot run the codec (one line saying what to carry)."""


# --------------------------------------------------------------------------- wheels


def wheel_module(wheel: Path) -> str:
    """Top-level module of a carried wheel (its distribution name; true for every wheel carried)."""
    return wheel.name.split("-")[0].lower().replace("-", "_")


def wheel_fits(wheel: Path) -> bool:
    """Whether a wheel's Python tag fits this interpreter (pure-Python wheels always do)."""
    python, abi = wheel.name[:-4].split("-")[-3:-1]
    own = sys.version_info[:2]
    for tag in python.split("."):
        if tag.startswith("py3"):
            return True
        m = re.fullmatch(r"cp(\d)(\d+)", tag)
        if m and ((int(m[1]), int(m[2])) == own or abi == "abi3" and (int(m[1]), int(m[2])) <= own):
            return True
    return False


def missing(name: str) -> bool:
    """Whether a top-level module cannot be found (without importing it)."""
    try:
        return importlib.util.find_spec(name) is None
    except (ImportError, ValueError):
        return True


def install_wheels(wheels: Path, site: Path) -> list[str]:
    """Install the carried wheels whose modules this Python lacks into ``site`` (pip --no-index --no-deps
    --target, or plain unzipping where there is no pip), once per set; returns their file names."""
    todo = sorted(w for w in Path(wheels).glob("*.whl") if missing(wheel_module(w)))
    if not todo:
        return []
    unfit = [w.name for w in todo if not wheel_fits(w)]
    if unfit:
        raise EnvError(f"{wheels} holds {unfit[0]}, not for Python {sys.version_info.major}."
                       f"{sys.version_info.minor}: make gpu-wheels GPU_PYVER={sys.version_info.major}."
                       f"{sys.version_info.minor}")
    stamp = site / ".installed.json"
    names = [w.name for w in todo]
    if stamp.is_file() and json.loads(stamp.read_text()) == names:
        return names
    site.mkdir(parents=True, exist_ok=True)
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                          "--no-compile", "--upgrade", "--target", str(site), *map(str, todo)],
                         capture_output=True, text=True)
    if pip.returncode != 0:  # no pip, or a tag pip refuses: a wheel is a zip of what --target installs
        for w in todo:
            with zipfile.ZipFile(w) as z:
                z.extractall(site)
    stamp.write_text(json.dumps(names))
    return names


def wait_for_install(site: Path, timeout: float = 300.0) -> None:
    """Under torchrun, ranks other than a node's first wait for its install (the stamp file)."""
    deadline = time.monotonic() + timeout
    while not (site / ".installed.json").is_file() and time.monotonic() < deadline:
        time.sleep(0.5)


# --------------------------------------------------------------------------- stand-ins


class _Absent(type):
    """Metaclass of stand-in attributes: whatever is asked of one at import time (an attribute, a call, a
    decorator, a subclass, an index) gives another stand-in; nothing real ever happens."""

    def __getattr__(cls, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _absent(f"{cls.__qualname__}.{name}")

    def __call__(cls, *args, **kwargs):
        if len(args) == 1 and not kwargs and isinstance(args[0], type):  # a decorator on a class
            return args[0]
        return _absent(f"{cls.__qualname__}()")

    def __getitem__(cls, key):
        return cls

    def __or__(cls, other):
        return cls

    __ror__ = __or__

    def __iter__(cls):
        return iter(())


def _absent(qualname: str) -> type:
    return _Absent(qualname.rsplit(".", 1)[-1], (), {"__qualname__": qualname})


class StandIn(types.ModuleType):
    """A module that is not installed: importable, each attribute a stand-in (see _Absent). The codec's
    path never uses one; gpu.json lists the stand-ins a run had."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _absent(f"{self.__name__}.{name}")


class _Norm:
    """scipy.stats.norm as far as compressai uses it (ppf, for its Gaussian tables' tail bound)."""

    @staticmethod
    def ppf(q):
        return statistics.NormalDist().inv_cdf(float(q))


class StandInFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds stand-ins for the given top-level modules and every module below them."""

    def __init__(self, names):
        self.names = set(names)

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] not in self.names:
            return None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

    def create_module(self, spec):
        module = StandIn(spec.name)
        module.__path__ = []
        if spec.name == "scipy.stats":
            module.norm = _Norm
        return module

    def exec_module(self, module):
        pass


def _broken(name: str) -> bool:
    """Whether importing a present module fails (torchvision built for another torch does)."""
    try:
        importlib.import_module(name)
        return False
    except Exception:  # noqa: BLE001 - any failure to import means: use the stand-in
        for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            del sys.modules[key]
        return True


def install_standins(names=STANDINS) -> list[str]:
    """Put stand-ins in place of those ``names`` that are missing (or, torchvision, broken); returns them."""
    absent = [n for n in names if missing(n) or (n == "torchvision" and _broken(n))]
    if absent:
        sys.meta_path.insert(0, StandInFinder(absent))
    return absent


def prepare(wheels: str | Path | None, site: str | Path) -> dict:
    """Make this Python fit for the codec: carried wheels, then stand-ins, then check what is needed.
    Returns what was done; EnvError (one line) when a need is still missing."""
    site = Path(site).resolve()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    installed: list[str] = []
    if wheels and Path(wheels).is_dir():
        if local_rank == 0:
            installed = install_wheels(Path(wheels), site)
        else:
            wait_for_install(site)
    if site.is_dir() and str(site) not in sys.path:
        sys.path.append(str(site))
        importlib.invalidate_caches()
    standins = install_standins()
    lacking = [n for n in NEEDED if missing(n)]
    if lacking:
        what = ("numpy (carry its wheel: make gpu-wheels GPU_WHEEL_EXTRA=numpy==VERSION)" if lacking[0] == "numpy"
                else f"{lacking[0]} (carry the wheels: make gpu-wheels, and carry={wheels})")
        raise EnvError(f"this Python ({sys.executable}) lacks {what}")
    return {"python": sys.version.split()[0], "installed": installed, "standins": standins, "site": str(site)}


# --------------------------------------------------------------------------- what comes back


def check_return(out: str | Path) -> list[str]:
    """What in the output folder breaks the return limits (files, sizes, names, depth); [] when none."""
    out = Path(out)
    files = [p for p in out.rglob("*") if p.is_file()]
    problems = []
    if len(files) > MAX_FILES:
        problems.append(f"{len(files)} files, over {MAX_FILES}")
    total = sum(p.stat().st_size for p in files)
    if total > MAX_TOTAL_BYTES:
        problems.append(f"{total / 2**20:.1f} MiB in all, over {MAX_TOTAL_BYTES // 2**20}")
    for p in files:
        rel = p.relative_to(out)
        if p.stat().st_size > MAX_FILE_BYTES:
            problems.append(f"{rel} is {p.stat().st_size / 2**20:.1f} MiB, over {MAX_FILE_BYTES // 2**20}")
        if len(rel.parts) - 1 > MAX_DEPTH or not all(NAME_RE.match(x) for x in rel.parts):
            problems.append(f"{rel}: too deep or a name other than letters, digits, '.', '_', '-'")
    return problems
