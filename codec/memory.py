"""Keeping a large decode's memory down on glibc: freed blocks handed back to the system.

Both decoders (torch, ``codec.tiling``; ONNX, ``export.runtime``) free large arrays between stages; glibc
would otherwise keep much of that memory for the process's life. Torch-free (ctypes only); every
function is a no-op where there is no glibc (or, for ``prefer_huge_pages``, no transparent huge pages).
"""
from __future__ import annotations

import functools
import os

TRIM_PIXELS = 1 << 22  # pictures from 4 Mpixel on hand freed memory back between stages
BAND_Z = 8              # z rows per band of the latent-grid networks and of the integer scale decoder
                        # (32 latent rows, 512 picture rows), in both decoders


def band_windows(hz: int, band: int, halo: int):
    """Bands of ``band`` z rows of a grid of ``hz`` rows, each with its window of context: yields (z0, z1,
    e0, e1), the band's rows [z0, z1) and the window [e0, e1) it is computed on (``halo`` rows each side
    where the grid has them). Every window has the same size (grown away from the grid's edge where its
    context is cut short), so that each band reuses the previous one's memory instead of fragmenting the
    heap. Shared by both decoders' latent-grid bands (codec/bands.py, export/runtime.py)."""
    win = min(hz, band + 2 * halo)
    for z0 in range(0, hz, band):
        z1 = min(hz, z0 + band)
        e1 = min(hz, max(z1 + halo, max(0, z0 - halo) + win))
        yield z0, z1, max(0, e1 - win), e1


@functools.lru_cache(maxsize=None)
def _libc():
    import ctypes
    import ctypes.util
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def release_memory() -> None:
    """Hand freed heap memory back to the system (glibc's malloc_trim; a no-op elsewhere): a decode's
    stages free large arrays that glibc would otherwise keep for the process's life."""
    try:
        _libc().malloc_trim(0)
    except (OSError, AttributeError):
        pass


def limit_heap(threshold: int = 1 << 22, keep: int = 1 << 26) -> None:
    """Make glibc serve allocations of ``threshold`` bytes and more with their own mappings, returned to
    the system when freed (its default adapts the threshold upward, up to 32 MiB, and keeps such blocks
    on the heap), and keep up to ``keep`` bytes of freed heap for reuse instead of trimming the heap at
    every free (``release_memory`` still hands it all back between a decode's stages). For processes
    that decode pictures; both decoder CLIs set it.

    Why ``keep``: fixing the mmap threshold also fixes glibc's trim threshold at its 128 KiB default, so
    every strip's arrays below ``threshold`` came from freshly trimmed heap and faulted their pages in
    again: a 768x512 ONNX decode (in-process, one thread, loaded machine) took 4,200 page faults and 14 ms
    of system time per picture, the colour conversion alone 20 CPU ms; with 64 MiB kept, 23 faults, 0.4 ms
    and 7 ms. The 12-Mpixel peak RSS of python -m export.decode stays at 241 MiB."""
    try:
        _libc().mallopt(-1, int(keep))        # M_TRIM_THRESHOLD
        _libc().mallopt(-3, int(threshold))   # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def prefer_huge_pages() -> None:
    """Have torch, if it is imported after this call, back tensors of 2 MiB and more with transparent huge
    pages where the system allows it (torch's THP_MEM_ALLOC_ENABLE). With ``limit_heap`` every large tensor
    gets fresh pages from the system; 2 MiB pages take 512x fewer page faults (measured on a 12-Mpixel
    torch decode, tile 512: 10 s of system time with 4 KiB pages, 4-5.5 s with these; glibc's default heap
    needs 1.2 s but peaks 20-80 MiB higher, and differently from run to run)."""
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
