"""A decoder that needs no torch: numpy, ONNX Runtime and compressai's rANS extension.

It reads the directory written by ``python -m export`` and decodes LIC1 bitstreams exactly like
``codec.model.YUVCodec.decompress_streams``: everything the entropy decoder consumes (z, the integer
scale index, skip, residuals) is computed in integers and is identical to the torch encoder's; the
float networks (means and synthesis) run in ORT, FP32 or INT8.
"""
from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

# Both torch-free: bitstream.py uses struct and zlib; entropy.py loads compressai's compiled rANS
# extension by file path, because ``import compressai.ans`` runs compressai/__init__.py, which imports
# torch. entropy.decode_indexed also checks each stream's length against its symbols and runs the C++
# decoder (which has no bounds checks) in a helper process, so a crafted stream ends in a one-line error.
from codec.bitstream import Bitstream, BitstreamError, unpack
from codec.entropy import CdfTables, decode_indexed

from .colour import yuv420_to_rgb
from .intnp import IntScaleDecoder

MANIFEST = "manifest.json"
FORMAT = "lightcodec-onnx"


class ExportError(ValueError):
    """An export directory that is missing files or was written for another format version."""


@dataclass
class Decoded:
    """A decoded picture and the integer state the entropy decoder used."""

    rgb: np.ndarray          # H x W x 3 uint8
    y: np.ndarray            # cropped luma plane, float32 H x W
    uv: np.ndarray           # cropped chroma planes, float32 2 x ceil(H/2) x ceil(W/2)
    z: np.ndarray            # int64 1 x Cz x H/64 x W/64
    index: np.ndarray        # int64 1 x M x H/16 x W/16 (gained scale index)
    residual: np.ndarray     # int64, same shape, zero where skipped


def load_tables(path: Path) -> CdfTables:
    """CDF tables from an export's npz, as the rANS coder takes them (zero-padded rows, lengths, offsets)."""
    with np.load(path) as a:
        return CdfTables(cdfs=a["cdf"].tolist(), lengths=a["length"].tolist(), offsets=a["offset"].tolist())


def checkerboard(h: int, w: int) -> np.ndarray:
    """1 x 1 x h x w float32 mask, 1 on anchors ((row + col) even)."""
    return ((np.arange(h)[:, None] + np.arange(w)[None, :]) % 2 == 0).astype(np.float32)[None, None]


def session_options(threads: int = 1, spin: bool = False) -> ort.SessionOptions:
    """ORT options: ``threads`` intra-op threads, sequential execution, quiet logs.

    Idle pool threads sleep unless ``spin``: on a loaded CPU spinning workers steal the cores the busy
    ones need (2 threads were 4x slower than 1 here); the same policy as OMP_WAIT_POLICY=PASSIVE."""
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    return so


class OnnxDecoder:
    """Decoder for one exported model; ``int8`` picks the quantised networks where they exist, ``threads``
    sets ORT's intra-op threads and ``spin`` lets idle ORT threads busy-wait (faster on an idle CPU)."""

    def __init__(self, onnx_dir: str | Path, int8: bool = False, threads: int = 1, spin: bool = False):
        self.dir = Path(onnx_dir)
        path = self.dir / MANIFEST
        if not path.is_file():
            raise ExportError(f"no {MANIFEST} in {self.dir}: not an export directory (run python -m export)")
        m = json.loads(path.read_text())
        if m.get("format") != FORMAT or m.get("version") != 1:
            raise ExportError(f"{path} is not a version-1 {FORMAT} manifest")
        self.manifest, self.threads = m, threads
        self.model_id = bytes.fromhex(m["model_id"])
        self.multiple, self.skip_index = m["multiple"], m["skip_index"]
        self.my = m["channels"]["y"]
        self.levels, self.log_step = m["scale_table"]["levels"], m["scale_table"]["log_step"]
        so = session_options(threads, spin)
        if int8 and not any(m["networks"][n].get("int8") for n in m["decoder_networks"]):
            raise ExportError(f"{self.dir} has no INT8 networks: export with --int8")
        self.files = {}
        self.sessions = {}
        for name in m["decoder_networks"]:
            net = m["networks"][name]
            file = net["int8"] if int8 and net.get("int8") else net["file"]
            self.files[name] = file
            try:
                self.sessions[name] = ort.InferenceSession(str(self._file(file)), so,
                                                           providers=["CPUExecutionProvider"])
            except ExportError:
                raise
            except Exception as e:  # ORT's own exception classes derive from Exception only
                raise ExportError(f"cannot load {file}: {str(e).splitlines()[0]}") from None
        sd = m["scale_decoder"]
        with np.load(self._file(sd["file"])) as a:
            self.scale_decoder = IntScaleDecoder(a, sd["input_min"], sd["input_max"], sd["act_max"], sd["acc_limit"])
        self.cdf_z = load_tables(self._file(m["entropy"]["z"]))
        self.cdf_r = load_tables(self._file(m["entropy"]["residual"]))
        with np.load(self._file(m["entropy"]["rate"])) as a:
            self.gain_steps, self.z_offset = a["gain_steps"].astype(np.int64), a["z_offset"].astype(np.int64)
        self.timings: dict[str, float] = defaultdict(float)

    def _file(self, name: str) -> Path:
        p = self.dir / name
        if not p.is_file():
            raise ExportError(f"export file missing: {p}")
        return p

    def _run(self, name: str, **feeds: np.ndarray) -> np.ndarray:
        t = time.perf_counter()
        out = self.sessions[name].run(None, {k: np.ascontiguousarray(v, np.float32) for k, v in feeds.items()})
        dt = time.perf_counter() - t
        self.timings["networks"] += dt
        self.timings[f"net:{name}"] += dt
        return out if len(out) > 1 else out[0]

    # ---- integer part ------------------------------------------------------------------------
    def entropy_decode(self, bs: Bitstream):
        """Integer decoding of a parsed bitstream: (z, gained index, skip, residual), all int64/bool."""
        if bs.model_id != self.model_id:
            raise BitstreamError(f"bitstream was made by another model (id {bs.model_id.hex()}), not "
                                 f"{self.manifest['model']!r} ({self.model_id.hex()})")
        if len(bs.streams) != 2:
            raise BitstreamError(f"expected 2 coded streams, found {len(bs.streams)}")
        if not 0 <= bs.quality < len(self.gain_steps):
            raise BitstreamError(f"rate point {bs.quality} does not exist for this model")
        hz, wz = -(-bs.height // self.multiple), -(-bs.width // self.multiple)
        cz = len(self.z_offset)
        t = time.perf_counter()
        z_idx = np.broadcast_to(np.arange(cz)[:, None, None], (cz, hz, wz))
        z = decode_indexed(bs.streams[0], z_idx, self.cdf_z).reshape(cz, hz, wz) + self.z_offset[:, None, None]
        z = np.clip(z, self.scale_decoder.input_min, self.scale_decoder.input_max)
        self.timings["entropy"] += time.perf_counter() - t
        t = time.perf_counter()
        index = np.clip(self.scale_decoder(z) + self.gain_steps[bs.quality][:, None, None], 0, self.levels - 1)
        skip = index < self.skip_index
        self.timings["scale_decoder"] += time.perf_counter() - t
        t = time.perf_counter()
        residual = np.zeros(index.shape, np.int64)
        residual[~skip] = decode_indexed(bs.streams[1], index[~skip], self.cdf_r)
        self.timings["entropy"] += time.perf_counter() - t
        return z[None], index[None], skip[None], residual[None]

    # ---- float part --------------------------------------------------------------------------
    def _two_pass(self, branch: str, hyper, gain, residual, *extra):
        """Checkerboard passes of one latent (as YUVCodec._reconstruct); fusion runs densely."""
        h, w = residual.shape[-2:]
        anchor = checkerboard(h, w)
        ctx_ch = self.manifest["networks"][f"context_{branch}"]["outputs"][0]["shape"][1]
        names = ("hyper", "ctx", "y_hat")[: 2 + len(extra)]
        fuse = lambda ctx: self._run(f"fusion_{branch}", **dict(zip(names, (hyper, ctx, *extra))))  # noqa: E731
        mug_a = fuse(np.zeros((1, ctx_ch, h, w), np.float32)) * gain * anchor
        ctx = self._run(f"context_{branch}", latent=(residual * anchor + mug_a) / gain * anchor) * (1 - anchor)
        mug = np.where(anchor.astype(bool), mug_a, fuse(ctx) * gain)
        return ((residual + mug) / gain).astype(np.float32)

    def reconstruct(self, z, residual, quality: int):
        """Decoded latents (y_hat, uv_hat) from the integer state."""
        steps = self.gain_steps[quality].astype(np.float32)[None, :, None, None]
        gain = np.exp(np.float32(self.log_step) * steps).astype(np.float32)
        r = residual.astype(np.float32)
        my = self.my
        zf = z.astype(np.float32)
        yh = self._two_pass("y", self._run("hyper_decoder_y", z=zf), gain[:, :my], r[:, :my])
        uvh = self._two_pass("uv", self._run("hyper_decoder_uv", z=zf), gain[:, my:], r[:, my:], yh)
        return yh, uvh

    def decode(self, data: bytes, verify_crc: bool = True) -> Decoded:
        """Bitstream bytes -> Decoded (picture and integer state). Raises BitstreamError on bad input."""
        bs = unpack(data, verify_crc=verify_crc)
        try:
            z, index, skip, residual = self.entropy_decode(bs)
            yh, uvh = self.reconstruct(z, residual, bs.quality)
            y, uv = self._run("synthesis", y_hat=yh, uv_hat=uvh)
        except (RuntimeError, IndexError, OverflowError) as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise BitstreamError(f"corrupt coded data: {reason}") from None
        t = time.perf_counter()
        y, uv = y[0, 0, : bs.height, : bs.width], uv[0, :, : (bs.height + 1) // 2, : (bs.width + 1) // 2]
        rgb = yuv420_to_rgb(y, uv)
        self.timings["colour"] += time.perf_counter() - t
        return Decoded(rgb, y, uv, z, index, residual)

