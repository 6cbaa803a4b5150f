"""A decoder that needs no torch: numpy, ONNX Runtime and compressai's rANS extension.

It reads the directory written by ``python -m export`` and decodes LIC1 bitstreams exactly like
``codec.model.YUVCodec.decompress_streams``: everything the entropy decoder consumes (z, the integer
scale index, skip, residuals) is computed in integers and is identical to the torch encoder's; the
float networks (means and synthesis) run in ORT, FP32 or INT8.

Memory stays bounded for any picture size: the synthesis runs in tiles whose overlap covers its
receptive field (``codec.tiling``; the 8-bit picture equals the whole-picture decode's), each strip of
tiles is converted to 8-bit RGB as soon as it is complete and handed to a sink (``codec.writers``
streams it into the output file), and the integer scale decoder and the latent-grid networks run in bands
of rows (the latter where the export gives their halo).
The numpy array helpers (phase layout, strips -> RGB) are in ``export.arrays``.
"""
from __future__ import annotations

import collections
import contextlib
import json
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnxruntime as ort
from threadpoolctl import ThreadpoolController

# Both torch-free: bitstream.py uses struct and zlib; entropy.py loads compressai's compiled rANS
# extension by file path, because ``import compressai.ans`` runs compressai/__init__.py, which imports
# torch. entropy.decode_indexed also checks each stream's length against its symbols and runs the C++
# decoder (which has no bounds checks) in a helper process, so a crafted stream ends in a one-line error.
from codec.bitstream import Bitstream, BitstreamError, unpack
from codec.entropy import CdfTables, decode_indexed
from codec.scale_context import decode_residuals, load_table
from codec.memory import BAND_Z, TRIM_PIXELS, band_windows, release_memory
from codec.tiling import ONNX_TILE, Footprint, plan_tiles

from .arrays import checkerboard, phases, strip_to_rgb, unphase
from .intfast import FastIntScaleDecoder
from .intnp import IntScaleDecoder
from .sessions import session_options, wide_activations

__all__ = ["MANIFEST", "FORMAT", "ExportError", "Decoded", "load_tables", "session_options", "OnnxDecoder",
           "wide_activations",
           # re-exported from export.arrays
           "checkerboard", "phases", "unphase", "strip_to_rgb"]

MANIFEST = "manifest.json"
FORMAT = "lightcodec-onnx"
# Model options (codec.modules) this decoder implements: gmm (CDF tables, and its global context: one more network,
# z_hat -> per-channel mean offsets); ctxscale (an integer table, scale_context.npz, run by codec/scale_context.py).
OPTIONS = ("gmm", "ctxscale")


class ExportError(ValueError):
    """An export directory that is missing files or was written for another format version."""


@dataclass
class Decoded:
    """A decoded picture and the integer state the entropy decoder used."""

    rgb: np.ndarray | None   # H x W x 3 uint8 (None when a sink took the rows)
    y: np.ndarray | None     # cropped luma plane, float32 H x W (whole-picture decodes only, else None)
    uv: np.ndarray | None    # cropped chroma planes, float32 2 x ceil(H/2) x ceil(W/2) (likewise)
    z: np.ndarray            # int64 1 x Cz x H/64 x W/64
    index: np.ndarray        # uint8 1 x M x H/16 x W/16 (gained scale index)
    residual: np.ndarray     # int32, same shape, zero where skipped


def load_tables(path: Path) -> CdfTables:
    """CDF tables from an export's npz, as the rANS coder takes them (zero-padded rows, lengths, offsets)."""
    with np.load(path) as a:
        return CdfTables(cdfs=a["cdf"].tolist(), lengths=a["length"].tolist(), offsets=a["offset"].tolist())


class OnnxDecoder:
    """Decoder for one exported model; ``int8`` picks the quantised networks where they exist, ``threads``
    sets ORT's intra-op threads, ``spin`` lets idle ORT threads busy-wait (faster on an idle CPU) and
    ``tile`` is the side of the synthesis tiles in output pixels (0 or None: the whole picture at once)."""

    def __init__(self, onnx_dir: str | Path, int8: bool = False, threads: int = 1, spin: bool = False,
                 tile: int | None = ONNX_TILE):
        self.dir = Path(onnx_dir)
        path = self.dir / MANIFEST
        if not path.is_file():
            raise ExportError(f"no {MANIFEST} in {self.dir}: not an export directory (run python -m export)")
        m = json.loads(path.read_text())
        if m.get("format") != FORMAT or m.get("version") not in (1, 2):
            raise ExportError(f"{path} is not a version-1 or -2 {FORMAT} manifest")
        if m.get("options") and m["version"] < 2:
            raise ExportError(f"{path} lists options {m['options']} in a version-1 manifest")
        other = [o for o in m.get("options", []) if o not in OPTIONS]
        if other:
            raise ExportError(f"{path}: model option {'+'.join(other)} is not implemented by this decoder")
        self.global_context = "gmm" in m.get("options", [])
        if self.global_context and "global_context" not in m["decoder_networks"]:
            raise ExportError(f"{path}: option gmm without its global_context network")
        self.manifest, self.threads, self.tile = m, threads, tile
        self.halo = m["bands"]["halo"] if m.get("bands") else None   # z rows; absent: the whole grid at once
        self.model_id = bytes.fromhex(m["model_id"])
        self.multiple, self.skip_index = m["multiple"], m["skip_index"]
        self.my = m["channels"]["y"]
        self.levels, self.log_step = m["scale_table"]["levels"], m["scale_table"]["log_step"]
        tiling = m.get("tiling")
        self.footprints = ({k: Footprint.from_json(v) for k, v in tiling["footprints"].items()}
                           if tiling else None)
        crops = m["networks"]["synthesis"].get("crops")
        self.crop_levels = [(lv["positions_per_cell"], lv["starts"], lv["ends"],
                             {p: Footprint.from_json(f) for p, f in lv["footprints"].items()})
                            for lv in (crops["levels"] if crops else [])]
        if int8 and not any(m["networks"][n].get("int8") for n in m["decoder_networks"]):
            raise ExportError(f"{self.dir} has no INT8 networks: export with --int8")
        self.files = {}
        self.sessions = {}
        for name in m["decoder_networks"]:
            net = m["networks"][name]
            file = net["int8"] if int8 and net.get("int8") else net["file"]
            self.files[name] = file
            # One session per network for the decoder's life. The latent-grid networks run once per
            # picture and return their memory at once; the synthesis keeps its arena for the next tile.
            # With several threads the synthesis runs several tiles at once, each on one thread (ORT's own
            # threads split one tile's small convolutions too finely to pay: docs/deployment.md, Speed).
            so = session_options(1 if name == "synthesis" and threads > 1 else threads, spin, arena=name == "synthesis")
            if file == net.get("int8") and wide_activations(net.get("int8_recipe")):
                # 16-bit QDQ has no integer kernels on the CPU provider: let ORT fold the weights'
                # DequantizeLinear into float constants instead of dequantising them at every run.
                so.add_session_config_entry("session.disable_quant_qdq", "1")
            try:
                self.sessions[name] = ort.InferenceSession(str(self._file(file)), so,
                                                           providers=["CPUExecutionProvider"])
            except ExportError:
                raise
            except Exception as e:  # ORT's own exception classes derive from Exception only
                raise ExportError(f"cannot load {file}: {str(e).splitlines()[0]}") from None
        sd = m["scale_decoder"]
        with np.load(self._file(sd["file"])) as a:
            self.scale_decoder = FastIntScaleDecoder(
                IntScaleDecoder(a, sd["input_min"], sd["input_max"], sd["act_max"], sd["acc_limit"]))
        # z rows of context each scale-decoder band needs: every layer reads k // 2 rows around.
        self.z_halo = sum(int(w.shape[-1]) // 2 for w in self.scale_decoder.base.weights)
        self.upscale = int(np.prod(self.scale_decoder.base.shuffle))
        self.cdf_z = load_tables(self._file(m["entropy"]["z"]))
        self.cdf_r = load_tables(self._file(m["entropy"]["residual"]))
        with np.load(self._file(m["entropy"]["rate"])) as a:
            self.gain_steps, self.z_offset = a["gain_steps"].astype(np.int64), a["z_offset"].astype(np.int64)
        self.scale_context = load_table(self._file("scale_context.npz")) if "ctxscale" in m.get("options", []) else None
        # numpy's BLAS (the scale decoder's matrix products) would start a thread per core whose idle spinning
        # kept a second core busy (97 ms of CPU for 52 ms of wall time at 768x512, 45 when limited). Each decode
        # keeps BLAS on one thread at any thread count: the decoder's other threads run synthesis tiles.
        self.blas = ThreadpoolController()
        self.timings: dict[str, float] = defaultdict(float)       # wall seconds per phase
        self.cpu_timings: dict[str, float] = defaultdict(float)   # this process's CPU seconds per phase

    def reset_timings(self) -> None:
        self.timings.clear()
        self.cpu_timings.clear()

    @contextlib.contextmanager
    def _phase(self, *names: str):
        t, c = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            dt, dc = time.perf_counter() - t, time.process_time() - c
            for n in names:
                self.timings[n] += dt
                self.cpu_timings[n] += dc

    def _file(self, name: str) -> Path:
        p = self.dir / name
        if not p.is_file():
            raise ExportError(f"export file missing: {p}")
        return p

    @staticmethod
    def _feeds(**feeds: np.ndarray) -> dict[str, np.ndarray]:
        """Network inputs as ORT takes them: contiguous, float32 (int64 crop bounds as they are)."""
        return {k: np.ascontiguousarray(v, None if v.dtype == np.int64 else np.float32) for k, v in feeds.items()}

    def _run(self, name: str, **feeds: np.ndarray) -> np.ndarray:
        with self._phase("networks", f"net:{name}"):
            out = self.sessions[name].run(None, self._feeds(**feeds))
        return out if len(out) > 1 else out[0]

    # ---- integer part ------------------------------------------------------------------------
    def scale_index(self, z: np.ndarray) -> np.ndarray:
        """Integer scale index before the gains (M x 4h x 4w, int32) from z (Cz x h x w), in bands of
        ``BAND_Z`` z rows with the layers' context around each (integers: exactly the whole-array result)."""
        hz = z.shape[1]
        out = None
        for r0 in range(0, hz, BAND_Z):
            r1 = min(hz, r0 + BAND_Z)
            i0, i1 = max(0, r0 - self.z_halo), min(hz, r1 + self.z_halo)
            band = self.scale_decoder(z[:, i0:i1])
            if out is None:
                out = np.empty((band.shape[0], hz * self.upscale, band.shape[2]), np.int32)
            s = self.upscale
            out[:, r0 * s: r1 * s] = band[:, (r0 - i0) * s: (r1 - i0) * s]
        return out

    def entropy_decode(self, bs: Bitstream):
        """Integer decoding of a parsed bitstream: (z int64, gained index uint8, skip bool, residual int32)."""
        if bs.model_id != self.model_id:
            raise BitstreamError(f"bitstream was made by another model (id {bs.model_id.hex()}), not "
                                 f"{self.manifest['model']!r} ({self.model_id.hex()})")
        if len(bs.streams) != 2 + (self.scale_context is not None):
            raise BitstreamError(f"expected {2 + (self.scale_context is not None)} coded streams, found {len(bs.streams)}")
        if not 0 <= bs.quality < len(self.gain_steps):
            raise BitstreamError(f"rate point {bs.quality} does not exist for this model")
        hz, wz = -(-bs.height // self.multiple), -(-bs.width // self.multiple)
        cz = len(self.z_offset)
        with self._phase("entropy"):
            z_idx = np.broadcast_to(np.arange(cz, dtype=np.int32)[:, None, None], (cz, hz, wz))
            z = decode_indexed(bs.streams[0], z_idx, self.cdf_z).reshape(cz, hz, wz) + self.z_offset[:, None, None]
            z = np.clip(z, self.scale_decoder.input_min, self.scale_decoder.input_max)
        with self._phase("scale_decoder"):
            index = self.scale_index(z)
            index += self.gain_steps[bs.quality].astype(np.int32)[:, None, None]
            np.clip(index, 0, self.levels - 1, out=index)
            index = index.astype(np.uint8)
            skip = index < self.skip_index
        with self._phase("entropy"):
            residual, index = decode_residuals(bs.streams[1:], index, ~skip, self.cdf_r, self.my, self.scale_context)
        return z[None], index[None], skip[None], residual[None]

    # ---- float part --------------------------------------------------------------------------
    def _passes(self, branch: str, hyper, gain, residual, luma=None, offset=None):
        """Both checkerboard passes of one latent (as YUVCodec._reconstruct), the pointwise fusion fed only
        the positions its pass needs (anchors, then the others, as ``phases`` lays them out). ``luma``: the
        decoded luma latent as (anchors, others), for chroma; ``offset``: the global context's per-channel
        offset of the means (1 x C x 1 x 1), added to the fusion's output before the gain. Returns the
        latent as (anchors, others)."""
        ra, ro = phases(residual)
        ha, ho = phases(hyper)
        ctx_ch = self.manifest["networks"][f"context_{branch}"]["outputs"][0]["shape"][1]
        names = ("hyper", "ctx", "y_hat")

        def fuse(*x):
            mu = self._run(f"fusion_{branch}", **dict(zip(names, x)))
            return mu if offset is None else mu + offset

        mug_a = fuse(ha, np.zeros((1, ctx_ch) + ra.shape[2:], np.float32), *(luma[:1] if luma else ())) * gain
        anchors = (ra + mug_a) / gain
        # the context network reads the anchor-masked latent and is read at the other positions
        ctx = phases(self._run(f"context_{branch}", latent=unphase(anchors, np.zeros_like(anchors))))[1]
        others = (ro + fuse(ho, ctx, *(luma[1:] if luma else ())) * gain) / gain
        return anchors, others

    def reconstruct(self, z, residual, quality: int):
        """Decoded latents (y_hat, uv_hat) from the integer state: in bands of ``BAND_Z`` z rows where the
        export gives the latent-grid networks' halo (codec/bands.py: a few bands' arrays in memory instead
        of the whole grid's), else on the whole grid."""
        steps = self.gain_steps[quality].astype(np.float32)[None, :, None, None]
        gain = np.exp(np.float32(self.log_step) * steps).astype(np.float32)
        zf = z.astype(np.float32)
        # gmm: one offset per channel and picture, from the whole z (before any band or tile)
        offset = self._run("global_context", z=zf) if self.global_context else None
        if self.halo is None:
            return self._reconstruct(zf, residual, gain, offset)
        rows, width = residual.shape[-2:]
        yh = np.empty((1, self.my, rows, width), np.float32)
        uvh = np.empty((1, residual.shape[1] - self.my, rows, width), np.float32)
        for z0, z1, e0, e1 in band_windows(zf.shape[-2], BAND_Z, self.halo):
            y, uv = self._reconstruct(zf[..., e0:e1, :], residual[..., 4 * e0: 4 * e1, :], gain, offset)
            keep = slice(4 * (z0 - e0), 4 * (z1 - e0))
            yh[..., 4 * z0: 4 * z1, :], uvh[..., 4 * z0: 4 * z1, :] = y[..., keep, :], uv[..., keep, :]
        return yh, uvh

    def _reconstruct(self, zf, residual, gain, offset):
        my = self.my
        o_y, o_uv = (None, None) if offset is None else (offset[:, :my], offset[:, my:])
        ry = residual[:, :my].astype(np.float32)
        luma = self._passes("y", self._run("hyper_decoder_y", z=zf), gain[:, :my], ry, offset=o_y)
        del ry
        ruv = residual[:, my:].astype(np.float32)
        chroma = self._passes("uv", self._run("hyper_decoder_uv", z=zf), gain[:, my:], ruv, luma, o_uv)
        return unphase(*luma), unphase(*chroma)

    def synthesize(self, yh: np.ndarray, uvh: np.ndarray, height: int, width: int,
                   sink: Callable[[np.ndarray], None], tile: int | None):
        """Latents -> 8-bit RGB rows handed to ``sink`` strip by strip (top to bottom). Returns the cropped
        float planes of a whole-picture decode (tile None), else (None, None)."""
        tiles = self.footprints is not None and tile
        strips = plan_tiles(height, width, tile if tiles else None, self.footprints or {}, self.multiple)
        cw = (width + 1) // 2

        def tile_planes(t):
            r0, r1, c0, c1 = t.lat
            crops, origin, k = self._crops(t, yh.shape[-2:]) if tiles else ({}, (r0, c0), 1)
            feeds = self._feeds(y_hat=yh[..., r0:r1, c0:c1], uv_hat=uvh[..., r0:r1, c0:c1], **crops)
            return self.sessions["synthesis"].run(None, feeds), origin, k

        planes = (None, None)
        with ThreadPoolExecutor(self.threads) if tiles and self.threads > 1 else contextlib.nullcontext() as pool:
            results = self._in_order(tile_planes, [t for strip in strips for t in strip], pool)
            for strip in strips:
                with self._phase("networks", "net:synthesis"):
                    done = [next(results) for _ in strip]
                planes = self._strip(strip, done, width, cw, sink, tiles)
        return planes

    def _in_order(self, fn, items: list, pool):
        """fn(item) for each item, in order; with a pool, up to twice its threads run ahead (across strips),
        so that memory stays bounded by a few tiles' outputs."""
        if pool is None:
            yield from map(fn, items)
            return
        ahead = collections.deque()
        for item in items:
            ahead.append(pool.submit(fn, item))
            if len(ahead) >= 2 * self.threads:
                yield ahead.popleft().result()
        while ahead:
            yield ahead.popleft().result()

    def _strip(self, strip, results, width: int, cw: int, sink, tiles: bool):
        """One strip's tile outputs to 8-bit RGB rows for ``sink``; returns its float planes when the strip is
        the whole picture."""
        a0, a1 = strip[0].y[:2]
        u0, u1 = strip[0].uv[:2]
        ys = np.empty((a1 - a0, width), np.float32)
        uvs = np.empty((2, u1 - u0, cw), np.float32)
        for t, ((y, uv), (oy, ox), k) in zip(strip, results):
            _, _, b0, b1 = t.y
            _, _, v0, v1 = t.uv
            ly, lc = 16 // k, 8 // k      # output pixels per position of the last cropped grid
            ys[:, b0:b1] = y[0, 0, a0 - ly * oy: a1 - ly * oy, b0 - ly * ox: b1 - ly * ox]
            uvs[:, :, v0:v1] = uv[0, :, u0 - lc * oy: u1 - lc * oy, v0 - lc * ox: v1 - lc * ox]
        del results, y, uv
        with self._phase("colour"):
            rows = strip_to_rgb(ys, uvs, a0 - 2 * u0)
        with self._phase("write"):
            sink(rows)
        return (None, None) if tiles else (ys, uvs)

    def _crops(self, t, grid: tuple[int, int]):
        """In-graph crop bounds of one tile (export/crops.py): (feeds, origin of the last cropped grid in
        its positions (rows, cols), positions per latent cell of that grid)."""
        r0, r1, c0, c1 = t.lat
        have, k0, feeds = ((r0, r1), (c0, c1)), 1, {}
        kept = (((t.y[0], t.y[1]), (t.uv[0], t.uv[1])), ((t.y[2], t.y[3]), (t.uv[2], t.uv[3])))
        for k, starts, ends, fps in self.crop_levels:
            have = tuple((lo * k // k0, hi * k // k0) for lo, hi in have)
            need = []
            for axis in (0, 1):
                ly = fps["y"].latents(*kept[axis][0], axis, grid[axis] * k)
                lc = fps["uv"].latents(*kept[axis][1], axis, grid[axis] * k)
                lo, hi = min(ly[0], lc[0]), max(ly[1], lc[1])
                if not have[axis][0] <= lo <= hi <= have[axis][1]:
                    raise RuntimeError(f"tile plan inconsistent with the crop footprints at {k} per cell")
                need.append((lo, hi))
            feeds[starts] = np.array([need[0][0] - have[0][0], need[1][0] - have[1][0]], np.int64)
            feeds[ends] = np.array([need[0][1] - have[0][0], need[1][1] - have[1][0]], np.int64)
            have, k0 = tuple(need), k
        return feeds, (have[0][0], have[1][0]), k0

    def decode(self, data: bytes, verify_crc: bool = True, tile: int | None | str = "default",
               sink: Callable[[np.ndarray], None] | None = None) -> Decoded:
        """Bitstream bytes -> Decoded (picture and integer state). Raises BitstreamError on bad input.

        ``tile``: synthesis tile side in pixels (default: the decoder's; 0 or None: whole picture).
        ``sink``: called with each strip of 8-bit RGB rows, top to bottom; then ``Decoded.rgb`` is None."""
        bs = unpack(data, verify_crc=verify_crc)
        tile = self.tile if tile == "default" else tile
        rgb = None
        if sink is None:
            rgb = np.empty((bs.height, bs.width, 3), np.uint8)
            done = [0]

            def sink(rows):
                rgb[done[0]: done[0] + rows.shape[0]] = rows
                done[0] += rows.shape[0]
        try:
            with self.blas.limit(limits=1, user_api="blas"):
                z, index, skip, residual = self.entropy_decode(bs)
                del skip
                big = bs.height * bs.width >= TRIM_PIXELS
                if big:
                    with self._phase("other"):
                        release_memory()
                yh, uvh = self.reconstruct(z, residual, bs.quality)
                if big:
                    with self._phase("other"):
                        release_memory()
                y, uv = self.synthesize(yh, uvh, bs.height, bs.width, sink, tile)
        except (RuntimeError, IndexError, OverflowError) as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise BitstreamError(f"corrupt coded data: {reason}") from None
        return Decoded(rgb, y, uv, z, index, residual)
