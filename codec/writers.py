"""Picture writers that take the decoded rows strip by strip, so no full picture is ever held.

PNG (8-bit RGB, each row filtered with PNG's "Up" filter, zlib ``level``) and binary PPM (P6) are written
as the rows arrive; any other format Pillow writes goes through one in-memory picture. Only numpy and
zlib (Pillow for the other formats): both decoder CLIs use them, the torch-free one included.
"""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

STREAMED = (".png", ".ppm", ".pnm")


class RowWriter:
    """Write an H x W RGB picture to ``path`` from successive row blocks (``write(rows)``, uint8
    n x W x 3, top to bottom), then ``close()``. The file is written under a temporary name and renamed
    when complete, so a failed decode leaves no output file."""

    def __init__(self, path: str | Path, height: int, width: int, png_level: int = 1):
        self.path, self.height, self.width = Path(path), height, width
        self.suffix = self.path.suffix.lower()
        self.tmp = self.path.with_name(self.path.name + ".part")
        self.rows = 0
        self.buffer = None
        if self.suffix not in STREAMED:
            from PIL import Image
            self.format = Image.registered_extensions().get(self.suffix)
            if self.format is None or self.format not in Image.SAVE:
                raise ValueError(f"cannot write {self.path.name}: unknown picture format {self.suffix or '(none)'}")
            self.buffer = np.empty((height, width, 3), np.uint8)
            return
        self.f = open(self.tmp, "wb")
        if self.suffix == ".png":
            self.z = zlib.compressobj(png_level)
            self.prev = np.zeros((width, 3), np.uint8)
            self.f.write(b"\x89PNG\r\n\x1a\n")
            self._chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        else:
            self.f.write(b"P6\n%d %d\n255\n" % (width, height))

    def _chunk(self, kind: bytes, data: bytes) -> None:
        self.f.write(struct.pack(">I", len(data)) + kind + data
                     + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)) & 0xFFFFFFFF))

    def write(self, rows: np.ndarray) -> None:
        n = rows.shape[0]
        if rows.shape[1:] != (self.width, 3) or self.rows + n > self.height:
            raise ValueError(f"row block {rows.shape} does not fit a {self.width}x{self.height} picture")
        if self.buffer is not None:
            self.buffer[self.rows: self.rows + n] = rows
        elif self.suffix == ".png":
            # "Up" filter: each byte minus the byte above (mod 256), a leading 2 per row.
            up = np.empty((n, 1 + 3 * self.width), np.uint8)
            up[:, 0] = 2
            body = up[:, 1:].reshape(n, self.width, 3)
            np.subtract(rows[:1], self.prev[None], out=body[:1])
            np.subtract(rows[1:], rows[:-1], out=body[1:])
            self.prev = rows[-1].copy()
            data = self.z.compress(up.tobytes())
            if data:
                self._chunk(b"IDAT", data)
        else:
            self.f.write(np.ascontiguousarray(rows).tobytes())
        self.rows += n

    def close(self) -> None:
        if self.rows != self.height:
            self.abort()
            raise ValueError(f"picture incomplete: {self.rows} of {self.height} rows written")
        if self.buffer is not None:
            from PIL import Image
            Image.fromarray(self.buffer).save(self.tmp, format=self.format)
            self.buffer = None
        else:
            if self.suffix == ".png":
                self._chunk(b"IDAT", self.z.flush())
                self._chunk(b"IEND", b"")
            self.f.close()
        self.tmp.replace(self.path)

    def abort(self) -> None:
        """Drop the partial file."""
        if self.buffer is None and not self.f.closed:
            self.f.close()
        self.buffer = None
        self.tmp.unlink(missing_ok=True)
