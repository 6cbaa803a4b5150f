"""codec.rans, our bounds-checked decoder of compressai's rANS streams, against compressai's own decoder."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from compressai.entropy_models import GaussianConditional

from codec import entropy, rans
from codec.bitstream import BitstreamError


@pytest.fixture(autouse=True)
def _native(monkeypatch):
    monkeypatch.setattr(entropy, "DECODER", "native")


@pytest.fixture(scope="module")
def tables() -> entropy.CdfTables:
    gc = GaussianConditional(None)
    gc.update_scale_table(torch.tensor(entropy.make_scale_table()))
    return entropy.CdfTables(gc)


def _compressai(data: bytes, idx: np.ndarray, tables, monkeypatch) -> np.ndarray:
    monkeypatch.setattr(entropy, "DECODER", "compressai")
    try:
        return entropy.decode_indexed(data, idx, tables, np.int32)
    finally:
        monkeypatch.setattr(entropy, "DECODER", "native")


@pytest.mark.parametrize("seed", range(4))
def test_native_decoder_reads_compressais_streams_escapes_included(tables, seed, monkeypatch):
    rng = np.random.default_rng(seed)
    n = 20000
    idx = rng.integers(0, len(tables), n).astype(np.int32)
    scale = np.asarray(entropy.make_scale_table())[idx]
    symbols = np.round(rng.laplace(0, scale * 3)).astype(np.int64)     # wider than the tables: escapes
    # and some long ones (compressai's encoder loops forever from |raw| >= 2^28: its n_bypass loop shifts by 32)
    symbols[:: 997] = rng.integers(-2**26, 2**26, symbols[:: 997].size)
    data = entropy.encode_symbols(torch.from_numpy(symbols), torch.from_numpy(idx), tables)
    got = entropy.decode_indexed(data, idx, tables)
    np.testing.assert_array_equal(got, symbols)
    np.testing.assert_array_equal(got, _compressai(data, idx, tables, monkeypatch))


@pytest.mark.parametrize("seed", range(12))
def test_garbage_gives_compressais_symbols_or_a_one_line_error(tables, seed, monkeypatch):
    """Random bytes: the native decoder either decodes what compressai's decodes (same symbols) or refuses
    an escape chain no encoder writes; it never reads outside the stream."""
    rng = np.random.default_rng(100 + seed)
    data = rng.integers(0, 256, 4 * int(rng.integers(2, 400)), dtype=np.uint8).tobytes()
    idx = rng.integers(0, len(tables), len(data) // 4).astype(np.int32)  # few enough to pass the length check
    try:
        got = entropy.decode_indexed(data, idx, tables, np.int32)
    except BitstreamError as e:
        assert "escape longer" in str(e) and "\n" not in str(e)
        return
    np.testing.assert_array_equal(got, _compressai(data, idx, tables, monkeypatch))


def test_the_stream_that_crashes_compressai_is_refused(tables):
    with pytest.raises(BitstreamError, match="escape longer than 8 nibbles: the coded data is corrupt"):
        entropy.decode_indexed(b"\xff" * (1 << 20), np.arange(len(tables)), tables)


def test_unknown_decoder_is_refused(tables, monkeypatch):
    monkeypatch.setattr(entropy, "DECODER", "fast")
    with pytest.raises(ValueError, match="unknown entropy decoder"):
        entropy.decode_indexed(b"\0" * 64, np.zeros(4, np.int32), tables)


def test_padded_tables_repeat_the_last_value():
    t = rans.padded_tables([[0, 5, 65536], [0, 1, 2, 65536]], [3, 4])
    assert t.tolist() == [[0, 5, 65536, 65536], [0, 1, 2, 65536]] and t.dtype == np.int32


def test_encoder_fed_in_chunks_writes_the_one_call_stream(tables, monkeypatch):
    """codec.entropy.encode_symbols feeds compressai's buffered encoder ENCODE_CHUNK symbols at a time: the
    stream is byte for byte the one a single call of compressai's RansEncoder writes."""
    from compressai.ans import RansEncoder

    rng = np.random.default_rng(7)
    idx = rng.integers(0, len(tables), 30001).astype(np.int32)
    symbols = np.round(rng.laplace(0, np.asarray(entropy.make_scale_table())[idx] * 2)).astype(np.int64)
    one_call = RansEncoder().encode_with_indexes(symbols.tolist(), idx.tolist(), tables.cdfs, tables.lengths,
                                                 tables.offsets)
    for chunk in (1000, 29999, 1 << 20):
        monkeypatch.setattr(entropy, "ENCODE_CHUNK", chunk)
        assert entropy.encode_symbols(torch.from_numpy(symbols), torch.from_numpy(idx), tables) == one_call
