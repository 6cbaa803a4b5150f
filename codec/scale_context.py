"""Context-adaptive scale index (model option ``ctxscale``): the probability table of each non-anchor
latent element is moved by a fitted integer table, looked up from the decoded residuals of its four
anchor neighbours.

Why: the scale index comes from the hyper-latent alone (the integer scale decoder, so that every runtime
picks the same table), while the checkerboard context only moves the float means. Yet the sizes of the
neighbours' residuals still say how wide a non-anchor residual will be: with every weight fixed, the table
saves 2-2.6% of the bits at equal distortion (``python -m distill.scale_context``, results/scale_context.md;
real files: results/rd_ctxscale).

The rule, in integers only (numpy; the torch coder and the torch-free decoder run this same code, so the
indices are identical on every runtime and the cross-runtime rule of docs/bitstream.md holds):

    A = min(|residual|, 255) at the anchors (row + col even), 0 elsewhere and where skipped
    S = sum of A over the 4 neighbours (same channel, zero outside the picture)
    T = sum of S over the channels of the element's branch (Y or UV), per position
    index' = clip(index + lut[branch, index, bucket(S, S_EDGES), bucket(T, t_edges[branch])], 0, levels - 1)

for the non-anchor elements; anchors keep their index. Which elements are coded (the skip rule) is decided
by the hyper-latent's index before this change. The coded residuals go in two streams, anchors first, so
that the decoder knows every anchor before it needs a non-anchor's table.
"""
from __future__ import annotations

import numpy as np

from .entropy import CdfTables, decode_indexed

S_EDGES = np.array([0, 1, 2, 3, 5, 8, 13, 21], dtype=np.int32)   # lower edges of the S buckets
T_BUCKETS = 8
MAX_DELTA = 6             # the table moves an index by at most this many steps
A_MAX = 255               # anchors' |residual| clipped, so the sums stay small integers
_S_BUCKET = (np.searchsorted(S_EDGES, np.arange(4 * A_MAX + 1), side="right") - 1).astype(np.int32)


def anchor_mask(h: int, w: int) -> np.ndarray:
    """h x w bool, True on anchor positions ((row + col) even, as codec.model.checkerboard)."""
    return (np.add.outer(np.arange(h), np.arange(w)) % 2) == 0


def _four_sum(a: np.ndarray) -> np.ndarray:
    """Sum over the four neighbours of each position (last two axes; zero outside)."""
    s = np.zeros_like(a)
    s[..., 1:, :] += a[..., :-1, :]
    s[..., :-1, :] += a[..., 1:, :]
    s[..., :, 1:] += a[..., :, :-1]
    s[..., :, :-1] += a[..., :, 1:]
    return s


def _activity(residual: np.ndarray, anchor: np.ndarray) -> np.ndarray:
    """min(|residual|, A_MAX) at the anchors, 0 elsewhere (int32)."""
    return np.minimum(np.abs(residual), A_MAX).astype(np.int32) * anchor


def neighbour_sums(residual: np.ndarray, anchor: np.ndarray) -> np.ndarray:
    """S: C x h x w int32, the sum of min(|residual|, A_MAX) over each element's four anchor neighbours."""
    return _four_sum(_activity(residual, anchor))


def context_features(residual: np.ndarray, anchor: np.ndarray, y_channels: int):
    """[(S, T) for the Y branch, (S, T) for the UV branch]: S per element, T (h x w) per position."""
    s = neighbour_sums(residual, anchor)
    return [(b, b.sum(0, dtype=np.int64)) for b in (s[:y_channels], s[y_channels:])]


def s_buckets(s: np.ndarray) -> np.ndarray:
    """Bucket of each S (0 <= S <= 4 * A_MAX) among S_EDGES, by a lookup array."""
    return _S_BUCKET[s]


def t_buckets(t: np.ndarray, t_edges: np.ndarray) -> np.ndarray:
    """Bucket of each T among one branch's ``t_edges`` (below the first edge: bucket 0)."""
    return np.clip(np.searchsorted(t_edges, t, side="right") - 1, 0, T_BUCKETS - 1)


def table_keys(index: np.ndarray, s_bucket: np.ndarray, t_bucket: np.ndarray) -> np.ndarray:
    """Flat cell of the table (index, S bucket, T bucket) of each element (the buckets broadcast)."""
    return (index.astype(np.int32) * len(S_EDGES) + s_bucket) * T_BUCKETS + t_bucket


def _phase_sums(residual: np.ndarray):
    """S at the two non-anchor phases, (rows 0::2, cols 1::2) and (rows 1::2, cols 0::2), from the anchor
    phases alone: each non-anchor's four neighbours are anchors, two in each anchor phase. Same values as
    ``neighbour_sums`` there, on a quarter of the grid each (int32; the leading axes are kept)."""
    h, w = residual.shape[-2:]
    hh, wh = -(-h // 2), -(-w // 2)
    lead = residual.shape[:-2]
    ee = np.zeros(lead + (hh + 1, wh + 1), np.int32)   # ee[i, j]: anchor (2i, 2j); zero beyond the grid
    oo = np.zeros(lead + (hh + 1, wh + 1), np.int32)   # oo[i + 1, j + 1]: anchor (2i + 1, 2j + 1)
    ee[..., :hh, :wh] = np.minimum(np.abs(residual[..., 0::2, 0::2]), A_MAX)
    oo[..., 1: h // 2 + 1, 1: w // 2 + 1] = np.minimum(np.abs(residual[..., 1::2, 1::2]), A_MAX)
    s_eo = ee[..., :hh, : w // 2] + ee[..., :hh, 1: w // 2 + 1] + oo[..., :hh, 1: w // 2 + 1] + oo[..., 1: hh + 1, 1: w // 2 + 1]
    s_oe = oo[..., 1: h // 2 + 1, :wh] + oo[..., 1: h // 2 + 1, 1: wh + 1] + ee[..., : h // 2, :wh] + ee[..., 1: h // 2 + 1, :wh]
    return s_eo, s_oe


_NON_ANCHORS = ((slice(0, None, 2), slice(1, None, 2)), (slice(1, None, 2), slice(0, None, 2)))


def context_index(residual: np.ndarray, index: np.ndarray, y_channels: int, lut: np.ndarray,
                  t_edges: np.ndarray, chunk: int = 16) -> np.ndarray:
    """The coded index of every element of one picture (C x h x w arrays; ``residual`` with only the
    anchors' values needed): non-anchors moved by ``lut`` (2 x levels x len(S_EDGES) x T_BUCKETS, int8),
    anchors unchanged. Returns a new array of ``index``'s dtype. Works on the non-anchor phases only
    (``_phase_sums``: S there is half a grid per branch, int32) and on ``chunk`` channels at a time. The
    arrays may hold one branch only (``y_channels`` = all channels: Y; 0: UV)."""
    levels = lut.shape[1]
    out = index.copy()
    for branch, (c0, c1) in enumerate(((0, y_channels), (y_channels, index.shape[0]))):
        if c0 == c1:
            continue
        blocks = [slice(c, min(c + chunk, c1)) for c in range(c0, c1, chunk)]
        sums = [_phase_sums(residual[b]) for b in blocks]        # a quarter of the branch's grid each
        t_bucket = [t_buckets(sum(x[k].sum(0) for x in sums), t_edges[branch]) for k in range(2)]   # T = sum of S
        flat = lut[branch].reshape(-1)
        for b, phase_sums in zip(blocks, sums):
            for (rows, cols), s, tb in zip(_NON_ANCHORS, phase_sums, t_bucket):
                part = index[b, rows, cols]
                delta = flat[table_keys(part, s_buckets(s), tb)]
                out[b, rows, cols] = np.clip(part.astype(np.int32) + delta, 0, levels - 1)
    return out


def load_table(path) -> tuple[np.ndarray, np.ndarray]:
    """(lut, t_edges) from an export's scale_context.npz."""
    with np.load(path) as a:
        return a["lut"].astype(np.int8), a["t_edges"].astype(np.int64)


def identity_table(levels: int) -> tuple[np.ndarray, np.ndarray]:
    """(lut, t_edges) that change nothing: the table of a model whose context has not been fitted."""
    lut = np.zeros((2, levels, len(S_EDGES), T_BUCKETS), np.int8)
    return lut, np.zeros((2, T_BUCKETS), np.int64)


def stream_masks(coded: np.ndarray, context: bool) -> list[np.ndarray]:
    """Masks of the coded elements each residual stream holds, in order: all of them, or with a scale
    context the anchors, then the others (whose tables the decoded anchors choose)."""
    if not context:
        return [coded]
    anchor = anchor_mask(*coded.shape[-2:])
    return [coded & anchor, coded & ~anchor]


def decode_residuals(streams: list[bytes], index: np.ndarray, coded: np.ndarray, tables: CdfTables,
                     y_channels: int, table: tuple[np.ndarray, np.ndarray] | None = None):
    """(residual int32, coded index) of one picture (index and coded: [1 x] C x h x w) from its residual
    streams (``stream_masks``); with a ctxscale ``table`` (lut, t_edges) the decoded anchors move the
    others' index before their stream is read. Skipped elements get 0."""
    residual = np.zeros(index.shape, np.int32)
    masks = stream_masks(coded, table is not None)
    residual[masks[0]] = decode_indexed(streams[0], index[masks[0]], tables, np.int32)
    if table is not None:
        shape = index.shape
        index = context_index(residual.reshape(shape[-3:]), index.reshape(shape[-3:]), y_channels,
                              *table).reshape(shape)
        residual[masks[1]] = decode_indexed(streams[1], index[masks[1]], tables, np.int32)
    return residual, index
