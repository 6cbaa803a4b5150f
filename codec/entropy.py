"""Entropy coding: compressai's rANS coder driven by CDF tables and per-element table indexes.

Decoding untrusted streams. compressai's C++ rANS decoder reads its input with no bounds checks: on a
truncated, corrupt or crafted stream it reads past the end of its buffer, and with enough symbols to
decode it crashes the process (SIGSEGV, measured on 1.2.8). So ``decode_indexed`` (1) checks the
stream's shape and an honest lower bound on its length (every symbol costs at least ``min_bits`` of its
table) before anything is decoded, and (2) runs the C++ decoder in a small helper process that loads only
compressai's extension (``DECODER = "compressai"``, the default; no torch): a crash or a run past the time
limit ends as a one-line ``BitstreamError`` and the helper is restarted on the next call. ``DECODER =
"native"`` decodes with ``codec.rans`` instead, a bounds-checked decoder of the same format, in-process.
Importing this module needs no torch.
"""
from __future__ import annotations

import atexit
import functools
import hashlib
import importlib.machinery
import importlib.util
import math
import os
import select
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from .bitstream import BitstreamError

PRECISION = 16                  # compressai's CDF precision: frequencies sum to 2**16
# Which decoder reads the streams (the same symbols either way): "compressai" (its C++ decoder, in a helper
# process when ISOLATE; the default: lean to start) or "native" (codec.rans: bounds-checked, in-process, several
# times faster per symbol, but numba and LLVM add ~150 MB and ~2 s to a process's start; for long-running ones).
DECODERS = ("compressai", "native")
DECODER = "compressai"
RANS_HELP = ("rANS decoder: compressai (default; its C++ decoder in a helper process, lean to start) or native "
             "(codec.rans, in-process and faster per symbol; numba adds ~150 MB and ~2 s of start-up)")
# Decode in the helper process (needs a Python executable and select() on pipes); False: in-process,
# for trusted streams only.
ISOLATE = bool(sys.executable) and os.name == "posix"
ENCODE_CHUNK = 1 << 20          # symbols per call into compressai's encoder
TIME_LIMIT_S = 10.0             # helper time limit: this plus 2 microseconds per symbol

# The Gaussian scales the integer scale index selects (a geometric table, shared by every model).
SCALE_MIN, SCALE_MAX, SCALE_LEVELS = 0.11, 256.0, 64
LOG_STEP = math.log(SCALE_MAX / SCALE_MIN) / (SCALE_LEVELS - 1)


def make_scale_table() -> list[float]:
    """The geometric table of Gaussian scales indexed by the integer scale index."""
    return [SCALE_MIN * math.exp(LOG_STEP * i) for i in range(SCALE_LEVELS)]


class CdfTables:
    """Quantised CDF tables of a compressai entropy model (EntropyBottleneck or GaussianConditional)."""

    def __init__(self, entropy_model=None, *, cdfs=None, lengths=None, offsets=None):
        if entropy_model is not None:
            cdfs = entropy_model._quantized_cdf.tolist()
            lengths = entropy_model._cdf_length.reshape(-1).int().tolist()
            offsets = entropy_model._offset.reshape(-1).int().tolist()
        self.cdfs, self.lengths, self.offsets = cdfs, [int(v) for v in lengths], [int(v) for v in offsets]
        if not self.cdfs or not self.cdfs[0]:
            raise RuntimeError("entropy model has no CDF tables: call model.update() after training")
        self._min_bits = self._key = self._arrays = self._trimmed = None

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def min_bits(self) -> np.ndarray:
        """Fewest bits any symbol of each table can cost: -log2(largest frequency / 2**16)."""
        if self._min_bits is None:
            top = [int(np.diff(np.asarray(c[:n], np.int64)).max()) for c, n in zip(self.cdfs, self.lengths)]
            self._min_bits = np.array([PRECISION - math.log2(f) for f in top])
        return self._min_bits

    @property
    def trimmed(self) -> list[list[int]]:
        """Each CDF table cut to its length, for compressai's decoder: it reads no further (its search stops
        at the length, whose value 2**16 exceeds every cumulative frequency), and pybind11 copies every value
        it is given into C++ vectors at each call; the residual tables come padded to the longest (64 x 7255
        values where the lengths add up to 62,856 on student-2k-wide: ~4 ms per 768x512 picture)."""
        if self._trimmed is None:
            self._trimmed = [list(c[:n]) for c, n in zip(self.cdfs, self.lengths)]
        return self._trimmed

    @property
    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(padded CDF rows, lengths, offsets) as int32 arrays, for ``codec.rans``."""
        if self._arrays is None:
            from .rans import padded_tables

            self._arrays = (padded_tables(self.cdfs, self.lengths), np.asarray(self.lengths, np.int32),
                            np.asarray(self.offsets, np.int32))
        return self._arrays

    @property
    def key(self) -> bytes:
        """Content hash of the tables (the helper process caches tables by it)."""
        if self._key is None:
            h = hashlib.blake2b(digest_size=16)
            for part in (self.lengths, self.offsets, [len(c) for c in self.cdfs]):
                h.update(np.asarray(part, np.int32).tobytes())
            for c in self.cdfs:
                h.update(np.asarray(c, np.int32).tobytes())
            self._key = h.digest()
        return self._key


def encode_symbols(symbols, indexes, tables: CdfTables) -> bytes:
    """rANS-encode integer symbols, each with the table chosen by its index (flattened, same length)."""
    from compressai.ans import BufferedRansEncoder

    s, i = symbols.reshape(-1), indexes.reshape(-1)
    if s.numel() == 0:
        return b""  # compressai's coder crashes on an empty symbol list
    # compressai's coder takes Python lists (about 36 bytes per symbol each): fed a chunk at a time, its
    # buffered encoder writes the same stream as one call (tests/test_entropy.py) without lists of the whole.
    encoder = BufferedRansEncoder()
    for k in range(0, s.numel(), ENCODE_CHUNK):
        encoder.encode_with_indexes(s[k: k + ENCODE_CHUNK].int().tolist(), i[k: k + ENCODE_CHUNK].int().tolist(),
                                    tables.cdfs, tables.lengths, tables.offsets)
    return encoder.flush()


def decode_symbols(data: bytes, indexes, tables: CdfTables):
    """Decode as many symbols as the index tensor holds from an rANS stream; returns an int64 tensor."""
    import torch

    return torch.from_numpy(decode_indexed(data, indexes.reshape(-1).int().numpy(), tables))


def decode_indexed(data: bytes, indexes, tables: CdfTables, dtype=np.int64) -> np.ndarray:
    """Decode one symbol per table index from an rANS stream (torch-free); returns numpy of ``dtype``
    (int64, or np.int32: the coder's own type, then without a copy).

    Raises BitstreamError (one line) for a stream that cannot hold the symbols or that crashes or stalls
    the C++ decoder."""
    idx = np.ascontiguousarray(np.asarray(indexes).reshape(-1), dtype=np.int32)
    n = idx.size
    if n == 0:
        if data:
            raise BitstreamError(f"a coded stream holds {len(data)} bytes where no symbols are coded")
        return np.zeros(0, dtype)
    # compressai's encoder writes whole 32-bit words and ends with its 64-bit state.
    if len(data) < 8 or len(data) % 4:
        raise BitstreamError(f"a coded stream of {len(data)} bytes is not an rANS stream "
                             "(a multiple of 4 bytes, at least 8): truncated or corrupt")
    if idx.min() < 0 or idx.max() >= len(tables):
        raise ValueError("table index out of range")
    # 1e-4 bits per symbol: rANS rounding slack, so that no real stream is ever refused
    need = float(np.bincount(idx, minlength=len(tables)) @ np.maximum(tables.min_bits - 1e-4, 0))
    if need > 8 * len(data) + 64:
        raise BitstreamError(f"{n} symbols need at least {math.ceil(need / 8)} bytes but the coded stream "
                             f"holds {len(data)}: truncated or corrupt")
    if DECODER == "native":
        from . import rans

        try:
            out = rans.decode(data, idx, *tables.arrays)
        except ValueError as e:
            raise BitstreamError(f"entropy decoder: {e}: the coded data is corrupt") from None
        return out.astype(dtype, copy=False)
    if DECODER != "compressai":
        raise ValueError(f"unknown entropy decoder {DECODER!r}; choose one of {', '.join(DECODERS)}")
    if not ISOLATE:
        out = _ans().RansDecoder().decode_with_indexes(data + bytes(64 + 4 * n), idx.tolist(), tables.trimmed,
                                                       tables.lengths, tables.offsets)
        return np.asarray(out, dtype)
    return _HELPER.decode(data, idx, tables).astype(dtype, copy=False)


# ---- the helper process ---------------------------------------------------------------------------
def _ans_path() -> str:
    """Path of compressai's rANS extension, found without importing compressai (which imports torch)."""
    spec = importlib.util.find_spec("compressai")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("compressai is not installed (its rANS extension is needed)")
    base = Path(list(spec.submodule_search_locations)[0])
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        if (base / f"ans{suffix}").is_file():
            return str(base / f"ans{suffix}")
    raise ImportError(f"compressai's rANS extension (ans*.so) not found in {base}")


@functools.lru_cache(maxsize=None)
def _ans():
    if "compressai.ans" in sys.modules:
        return sys.modules["compressai.ans"]
    loader = importlib.machinery.ExtensionFileLoader("compressai.ans", _ans_path())
    spec = importlib.util.spec_from_file_location("compressai.ans", loader.path, loader=loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


# Requests on stdin: kind (b"T" tables, b"D" decode, b"B" decode with one byte per table index), 16-byte table
# key, two counts, then the payload (int32, or for b"B" the indexes as bytes: a quarter of the pipe's traffic).
# Streams are zero-padded so that the usual over-read of a truncated stream reads zeros, not memory.
_HELPER_SRC = r"""
import importlib.machinery, importlib.util, struct, sys
from array import array
loader = importlib.machinery.ExtensionFileLoader("compressai.ans", sys.argv[1])
spec = importlib.util.spec_from_file_location("compressai.ans", sys.argv[1], loader=loader)
ans = importlib.util.module_from_spec(spec)
loader.exec_module(ans)
rd, wr, tables = sys.stdin.buffer, sys.stdout.buffer, {}
def read(n):
    b = rd.read(n)
    if len(b) != n:
        sys.exit(0)
    return b
def ints(n):
    a = array("i")
    a.frombytes(read(4 * n))
    return a.tolist()
while True:
    kind, key, n, m = struct.unpack("=c16sQQ", read(33))
    if kind == b"T":
        lengths, offsets, flat = ints(n), ints(n), ints(m)
        cdfs, p = [], 0
        for s in lengths:
            cdfs.append(flat[p:p + s])
            p += s
        tables[key] = (cdfs, lengths, offsets)
        continue
    idx = ints(n) if kind == b"D" else list(read(n))
    data = read(m) + bytes(64 + 4 * n)
    out = ans.RansDecoder().decode_with_indexes(data, idx, *tables[key])
    wr.write(array("i", out).tobytes())
    wr.flush()
"""
_HEAD = struct.Struct("=c16sQQ")


class _Helper:
    """One helper process per parent process, shared by threads, restarted after a crash."""

    def __init__(self):
        self.lock = threading.Lock()
        self.proc, self.pid, self.known = None, None, set()

    def _start(self):
        if self.proc is not None and self.pid == os.getpid() and self.proc.poll() is None:
            return self.proc
        self.proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", _HELPER_SRC, _ans_path()],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.pid, self.known = os.getpid(), set()
        return self.proc

    def close(self):
        if self.proc is not None and self.pid == os.getpid():
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=2)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
        self.proc = None

    def _fail(self, why: str):
        self.proc.kill()
        rc = self.proc.wait()
        self.proc = None
        if rc < 0:
            why = f"{why} (signal {-rc})"
        raise BitstreamError(f"entropy decoder {why}: the coded data is corrupt")

    def decode(self, data: bytes, idx: np.ndarray, tables: CdfTables) -> np.ndarray:
        with self.lock:
            proc = self._start()
            try:
                if tables.key not in self.known:
                    flat = np.concatenate([np.asarray(c, np.int32) for c in tables.trimmed])
                    proc.stdin.write(_HEAD.pack(b"T", tables.key, len(tables), flat.size))
                    for part in (tables.lengths, tables.offsets, flat):
                        proc.stdin.write(np.asarray(part, np.int32).tobytes())
                    self.known.add(tables.key)
                narrow = len(tables) <= 256
                proc.stdin.write(_HEAD.pack(b"B" if narrow else b"D", tables.key, idx.size, len(data)))
                proc.stdin.write(idx.astype(np.uint8).tobytes() if narrow else idx.tobytes())
                proc.stdin.write(data)
                proc.stdin.flush()
            except OSError:  # BrokenPipeError: it died
                self._fail("crashed")
            out = np.empty(idx.size, np.int32)
            view, got, want = memoryview(out).cast("B"), 0, 4 * idx.size
            fd, deadline = proc.stdout.fileno(), time.monotonic() + TIME_LIMIT_S + 2e-6 * idx.size
            while got < want:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([fd], [], [], left)[0]:
                    self._fail(f"stopped after {TIME_LIMIT_S + 2e-6 * idx.size:.0f} s")
                n = os.readv(fd, [view[got: got + min(want - got, 1 << 20)]])
                if not n:
                    self._fail("crashed")
                got += n
            return out


_HELPER = _Helper()
atexit.register(_HELPER.close)


def estimated_bits(likelihoods) -> float:
    """Information content in bits of a tensor of likelihoods."""
    import torch

    return float(-torch.log2(likelihoods.double().clamp_min(1e-12)).sum())
