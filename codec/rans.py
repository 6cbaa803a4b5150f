"""A bounds-checked decoder for compressai's rANS streams (torch-free, compiled by numba).

Why our own decoder of compressai's format: compressai 1.2.8's ``RansDecoder.decode_with_indexes`` reads
its input with no bounds checks (a crafted stream crashes the process, docs/robustness.md, so it had to run
in a helper process), takes and returns Python lists (about half its time on a 150k-symbol stream) and finds
each symbol by a linear scan of its CDF. This one decodes the same streams to the same symbols (tests
compare the two on real and random streams), reads past the end of the stream as zeros, refuses escape
chains no encoder writes, and looks symbols up by binary search. Encoding stays compressai's.

Format (compressai/cpp_exts/rans, ryg_rans' rans64): 64-bit state, 32-bit words, 16-bit probabilities;
a symbol at a table's last slot is an escape, followed by 4-bit "bypass" nibbles: a count (15 = more follows),
then the raw value, zig-zag coded.
"""
from __future__ import annotations

import numpy as np
from numba import njit

PRECISION = 16   # codec.entropy.PRECISION (codec.entropy imports this module, so not the other way round)
BYPASS_BITS = 4
MAX_BYPASS = (1 << BYPASS_BITS) - 1
MAX_NIBBLES = 8  # a raw escape value is an int32: compressai's encoder never writes more nibbles

STATUS_OK, STATUS_LONG_ESCAPE = 0, 1


def padded_tables(cdfs: list, lengths: list) -> np.ndarray:
    """The CDF tables as one int32 array, a row per table, each padded with its last value."""
    width = max(int(n) for n in lengths)
    out = np.empty((len(cdfs), width), np.int32)
    for i, (c, n) in enumerate(zip(cdfs, lengths)):
        out[i, :n] = np.asarray(c[:n], np.int32)
        out[i, n:] = out[i, n - 1]
    return out


@njit(cache=True, nogil=True)
def _word(words, pos):
    if pos < words.size:
        return np.uint64(words[pos])
    return np.uint64(0)


@njit(cache=True, nogil=True)
def _decode(words, indexes, cdfs, lengths, offsets, out):
    low = np.uint64(1) << np.uint64(31)
    mask = np.uint64((1 << PRECISION) - 1)
    nib_mask = np.uint64(MAX_BYPASS)
    prec = np.uint64(PRECISION)
    nib = np.uint64(BYPASS_BITS)
    x = _word(words, 0) | (_word(words, 1) << np.uint64(32))
    pos = 2
    for i in range(indexes.size):
        t = indexes[i]
        size = lengths[t]
        cum = np.int64(x & mask)
        # first k with cdf[k] > cum; cdf[0] = 0 <= cum and cdf[size - 1] = 2^16 > cum
        lo, hi = 1, size - 1
        while lo < hi:
            mid = (lo + hi) >> 1
            if cdfs[t, mid] > cum:
                hi = mid
            else:
                lo = mid + 1
        s = lo - 1
        start = np.uint64(cdfs[t, s])
        freq = np.uint64(cdfs[t, s + 1] - cdfs[t, s])
        x = freq * (x >> prec) + (x & mask) - start
        if x < low:
            x = (x << np.uint64(32)) | _word(words, pos)
            pos += 1
        value = np.int64(s)
        max_value = size - 2
        if value == max_value:
            count = 0
            while True:
                val = np.int64(x & nib_mask)
                x >>= nib
                if x < low:
                    x = (x << np.uint64(32)) | _word(words, pos)
                    pos += 1
                count += val
                if count > MAX_NIBBLES:
                    return STATUS_LONG_ESCAPE
                if val != MAX_BYPASS:
                    break
            raw = np.int64(0)
            for j in range(count):
                val = np.int64(x & nib_mask)
                x >>= nib
                if x < low:
                    x = (x << np.uint64(32)) | _word(words, pos)
                    pos += 1
                raw |= val << (j * BYPASS_BITS)
            raw &= 0xFFFFFFFF
            if raw >= 1 << 31:  # compressai's int32 raw value
                raw -= 1 << 32
            value = raw >> 1
            if raw & 1:
                value = -value - 1
            else:
                value += max_value
        out[i] = np.int32(value + offsets[t])
    return STATUS_OK


def decode(data: bytes, indexes: np.ndarray, cdfs: np.ndarray, lengths: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Decode one symbol per table index (int32) from a compressai rANS stream; ``cdfs`` from
    ``padded_tables``. Raises ValueError for an escape longer than any encoder writes."""
    n = len(data) // 4
    words = np.frombuffer(data[: 4 * n], "<u4")
    out = np.empty(indexes.size, np.int32)
    status = _decode(words, np.ascontiguousarray(indexes, np.int32), cdfs, np.asarray(lengths, np.int32),
                     np.asarray(offsets, np.int32), out)
    if status == STATUS_LONG_ESCAPE:
        raise ValueError(f"an escape longer than {MAX_NIBBLES} nibbles")
    return out
