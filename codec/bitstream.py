"""The container format of a coded image (documented in docs/bitstream.md).

Layout, all integers big-endian:

    magic      4 bytes  b"LIC1"
    version    u8       FORMAT_VERSION
    model_id   8 bytes  hash of the model preset and weights (codec.weights.model_id)
    quality    u8       rate point index
    height     u32      picture height in pixels
    width      u32      picture width in pixels
    n_streams  u8       number of coded streams that follow
    lengths    n * u32  byte length of each stream
    streams    ...      the streams, back to back
    crc32      u32      CRC-32 (zlib) of every byte before it

Parsing is strict: every field is checked against the limits below before anything is allocated.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

MAGIC = b"LIC1"
FORMAT_VERSION = 1
MAX_SIDE = 16384            # pixels, per dimension
MAX_PIXELS = 64 * 1024 * 1024
MAX_STREAMS = 8
MAX_STREAM_BYTES = 256 * 1024 * 1024

_HEAD = struct.Struct(">4sB8sBIIB")
MAX_FILE_BYTES = _HEAD.size + MAX_STREAMS * (4 + MAX_STREAM_BYTES) + 4  # the largest valid file


class BitstreamError(ValueError):
    """A bitstream that is malformed, truncated, corrupt or made for another model."""


@dataclass(frozen=True)
class Bitstream:
    """A parsed coded image: header fields and the coded streams."""

    model_id: bytes
    quality: int
    height: int
    width: int
    streams: tuple[bytes, ...]


def overhead_bytes(streams: int = 2) -> int:
    """Bytes a file spends outside its coded streams: header, stream lengths and CRC."""
    return _HEAD.size + 4 * streams + 4


def check_size(height: int, width: int) -> None:
    """Raise BitstreamError if a picture size is outside the supported limits."""
    if not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE):
        raise BitstreamError(f"picture size {width}x{height} is outside 1..{MAX_SIDE} per side")
    if height * width > MAX_PIXELS:
        raise BitstreamError(f"picture size {width}x{height} exceeds {MAX_PIXELS} pixels")


def pack(bs: Bitstream) -> bytes:
    """Serialise a Bitstream to bytes, CRC included."""
    if len(bs.model_id) != 8:
        raise ValueError("model_id must be 8 bytes")
    if not 0 <= bs.quality <= 255:
        raise ValueError("quality must fit in one byte")
    check_size(bs.height, bs.width)
    if len(bs.streams) > MAX_STREAMS:
        raise ValueError("too many streams")
    body = bytearray(_HEAD.pack(MAGIC, FORMAT_VERSION, bs.model_id, bs.quality, bs.height, bs.width,
                                len(bs.streams)))
    for s in bs.streams:
        if len(s) > MAX_STREAM_BYTES:
            raise ValueError("stream too long")
        body += struct.pack(">I", len(s))
    for s in bs.streams:
        body += s
    body += struct.pack(">I", zlib.crc32(body))
    return bytes(body)


def unpack(data: bytes, verify_crc: bool = True) -> Bitstream:
    """Parse bytes into a Bitstream, raising BitstreamError with a one-line reason on any defect."""
    if len(data) < _HEAD.size + 4:
        raise BitstreamError(f"bitstream too short ({len(data)} bytes): truncated or not a LIC file")
    magic, version, model_id, quality, height, width, n = _HEAD.unpack_from(data, 0)
    if magic != MAGIC:
        raise BitstreamError("not a LIC bitstream (bad magic number)")
    if version != FORMAT_VERSION:
        raise BitstreamError(f"unsupported format version {version} (this decoder reads {FORMAT_VERSION})")
    if verify_crc:
        (crc,) = struct.unpack_from(">I", data, len(data) - 4)
        if zlib.crc32(memoryview(data)[:-4]) != crc:
            raise BitstreamError("CRC mismatch: the bitstream is corrupt or truncated")
    check_size(height, width)
    if not 1 <= n <= MAX_STREAMS:
        raise BitstreamError(f"bad stream count {n}")
    pos = _HEAD.size
    if len(data) < pos + 4 * n + 4:
        raise BitstreamError("bitstream truncated in the stream table")
    lengths = struct.unpack_from(f">{n}I", data, pos)
    pos += 4 * n
    if max(lengths) > MAX_STREAM_BYTES:
        raise BitstreamError(f"stream length {max(lengths)} exceeds the limit of {MAX_STREAM_BYTES} bytes")
    if sum(lengths) != len(data) - pos - 4:
        raise BitstreamError("stream lengths do not match the file size: truncated or corrupt")
    streams = []
    for length in lengths:
        streams.append(bytes(data[pos: pos + length]))
        pos += length
    return Bitstream(model_id, quality, height, width, tuple(streams))
