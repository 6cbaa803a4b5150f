"""The bitstream half of ``codec.model.YUVCodec``: what writes and reads the coded streams.

``CodingMixin`` holds the encoder and decoder entry points on integers (the exact scale index from the
integer hyper-latent, ``encode_latents``, ``compress_planes``, ``decompress_streams``, ``synthesize``
and ``estimate_bits``); ``YUVCodec`` inherits it, so every method is still reached as
``YUVCodec.<name>``. The mixin relies on the codec's transforms and on its shared two-pass
reconstruction (``_reconstruct``, ``_split``, ``_analyse``, ``_synthesize``), which stay in
codec/model.py; this module imports nothing from it (no cycle).
"""
from __future__ import annotations

import numpy as np
import torch

from .bands import BAND_Z, band_halo, reconstruct_in_bands
from .bitstream import BitstreamError
from .entropy import (LOG_STEP, SCALE_LEVELS, CdfTables, decode_symbols, encode_symbols,
                      estimated_bits, make_scale_table)
from .intnet import INPUT_MAX, INPUT_MIN
from .rdoq import RDOQ_MU, RDQuantizer
from .scale_context import anchor_mask, decode_residuals, stream_masks


# z rows per band of the encoder's latent-grid pass: each band's window adds the halo (2 z rows for the
# students) on both sides, and the encoder's rate-distortion rounding runs on the whole window, so its
# bands are larger than the decoder's (BAND_Z): less repeated work, for memory that matters less there.
ENCODE_BAND_Z = 16


class CodingMixin:
    """Entropy coding of a ``YUVCodec``: integer encoder state, [z stream, residual stream] <-> planes."""

    def _z_symbols_offset(self) -> torch.Tensor:
        """Integer shift that centres z on the entropy bottleneck's table (round of the medians)."""
        return torch.round(self.entropy_bottleneck.quantiles[:, 0, 1].detach()).long()[None, :, None, None]

    def _index(self, z_int: torch.Tensor, q: int, dtype=torch.long, band: int | None = None):
        """Exact integer scale index (gained, as ``dtype``) and skip mask from the integer hyper-latent
        (``band``: the scale decoder in bands of that many z rows)."""
        steps = torch.round(self.gain_steps[q].detach()).long()[None, :, None, None]
        index = self.scale_decoder.int_forward(
            z_int, band, post=lambda t: t.add_(steps).clamp_(0, SCALE_LEVELS - 1).to(dtype))
        gain = torch.exp(LOG_STEP * steps.float())
        return index, index < self.cfg.skip_index, gain

    @torch.no_grad()
    def encode_latents(self, y_plane, uv_plane, q: int, latents: tuple | None = None,
                       rdoq: float | None = None, bands: bool = False) -> dict:
        """Encoder side without entropy coding: integers to code, reconstruction and estimated bits.
        ``latents`` = (latent, hyper-latent) replaces the analysis transforms' output (refinement, tiles).
        ``rdoq``: the rate-distortion rounding's mu (codec/rdoq.py; 0 = nearest integer); by default
        RDOQ_MU for the analysis transforms' latents and 0 for given (refined) ones. ``bands``: the
        latent-grid networks in bands of rows where the model allows it (codec/bands.py; the same integers
        at one thread, less memory; ``mean`` is then None)."""
        if latents is None:
            latent = self._analyse(y_plane, uv_plane)
            z = self.hyper_analysis(latent)
        else:
            latent, z = latents
        if rdoq is None:
            rdoq = RDOQ_MU if latents is None else 0.0
        ly, luv = self._split(latent)
        z_int = torch.clamp(torch.round(z), INPUT_MIN, INPUT_MAX)
        index, skip, gain = self._index(z_int, q)
        target = {"y": ly * gain[:, : self.cfg.y_channels], "uv": luv * gain[:, self.cfg.y_channels:]}
        halo = band_halo(self) if bands else None
        if halo is None:
            r, yh, uvh, mean = self._reconstruct(z_int, gain, (~skip).float(),
                                                 self._quantizer(target, index, skip, rdoq))
        else:
            def band_inputs(rows):
                part = {b: t[..., rows, :] for b, t in target.items()}
                return (~skip[..., rows, :]).float(), self._quantizer(part, index[..., rows, :], skip[..., rows, :], rdoq)

            (yh, uvh, r), mean = reconstruct_in_bands(self, z_int, gain, band_inputs, halo, ENCODE_BAND_Z,
                                                      residuals=True), None
        del target
        index = self._coded_index(r, index)   # the skip mask stays the hyper-latent index's
        return {"z": z_int.long(), "residual": r.long(), "index": index, "skip": skip,
                "y_hat": yh, "uv_hat": uvh, "mean": mean}

    def _quantizer(self, target: dict, index: torch.Tensor, skip: torch.Tensor, mu: float):
        """The encoder's residual_fn: nearest-integer rounding, or with ``mu`` > 0 the RD rounding."""
        if mu <= 0:
            return lambda branch, mug: torch.round(target[branch] - mug)
        parts = {"y": slice(0, self.cfg.y_channels), "uv": slice(self.cfg.y_channels, None)}

        def move(branch, anchors, branch_index):
            # the anchors are already zero where skipped; the table reads this branch's channels only
            return self.scale_context(anchors, branch_index, branch_index.shape[1] if branch == "y" else 0)

        coded = (~skip).float()
        anchor = torch.from_numpy(anchor_mask(*index.shape[-2:])).to(index.device)
        return RDQuantizer(target, {b: index[:, p] for b, p in parts.items()},
                           {b: coded[:, p] for b, p in parts.items()}, anchor,
                           self._symbol_cost("gaussian_conditional"), mu,
                           move if self.scale_context is not None else None)

    @torch.no_grad()
    def synthesize(self, yh: torch.Tensor, uvh: torch.Tensor, mean: torch.Tensor | None = None):
        """Latents -> (luma, chroma) planes; ``mean`` (the predicted mean of both latents) feeds the
        option modules that take it as side information."""
        if self.pre_synthesis is not None:
            yh, uvh = self._split(self.pre_synthesis(torch.cat((yh, uvh), 1), mean))
        return self._synthesize(yh, uvh, mean)

    @torch.no_grad()
    def compress_planes(self, y_plane, uv_plane, q: int, latents: tuple | None = None,
                        rdoq: float | None = None, bands: bool = False) -> tuple[list[bytes], dict]:
        """Code padded planes into [z stream, residual stream]; also returns the encoder-side state.
        ``latents``, ``rdoq``, ``bands``: see ``encode_latents``."""
        if not 0 <= q < self.num_qualities:
            raise ValueError(f"quality must be in 0..{self.num_qualities - 1}, got {q}")
        st = self.encode_latents(y_plane, uv_plane, q, latents, rdoq, bands)
        z_sym = st["z"] - self._z_symbols_offset()
        z_idx = torch.arange(self.cfg.z_channels).view(1, -1, 1, 1).expand_as(z_sym)
        z_stream = encode_symbols(z_sym, z_idx, CdfTables(self.entropy_bottleneck))
        tables = CdfTables(self.gaussian_conditional)
        return [z_stream] + [encode_symbols(st["residual"][part], st["index"][part], tables)
                             for part in self._residual_parts(~st["skip"])], st

    def _rounded(self, target: torch.Tensor, mug: torch.Tensor, index: torch.Tensor, mu: float) -> torch.Tensor:
        """The integers the encoder codes for gained latents ``target`` around known gained means ``mug``
        (what the training rate term counts): nearest, or with ``mu`` > 0 the RD rounding, anchors first."""
        quantize = self._quantizer(dict(zip(("y", "uv"), self._split(target))), index,
                                   index < self.cfg.skip_index, mu)
        out = []
        for branch, m in zip(("y", "uv"), self._split(mug)):
            if mu > 0 and self.scale_context is not None:
                quantize(branch, m)   # the anchors' pass: they move the others' index
            out.append(quantize(branch, m))
        return torch.cat(out, 1)

    def _coded_index(self, residual: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """The scale index the coder uses: the hyper-latent's, or with option ctxscale moved by its table from
        the coded anchors' residuals (training: with the index's gradient)."""
        if self.scale_context is None:
            return index
        return self.scale_context(residual * (index.detach() >= self.cfg.skip_index), index, self.cfg.y_channels)

    def _num_streams(self) -> int:
        return 3 if self.scale_context is not None else 2

    def _residual_parts(self, coded: torch.Tensor) -> list[torch.Tensor]:
        """Masks of the coded elements in each residual stream (codec.scale_context.stream_masks)."""
        return [torch.from_numpy(m) for m in stream_masks(coded.numpy(), self.scale_context is not None)]

    @torch.no_grad()
    def decompress_streams(self, streams: list[bytes], q: int, shape: tuple[int, int], bands: bool = False):
        """Decode [z stream, residual stream] for padded luma size ``shape`` -> (luma, chroma) planes and
        the integer state (``residual`` and gained scale ``index``, int32). ``bands``: run the latent-grid
        networks in bands of rows where the model allows it (codec/bands.py; same latents, less memory;
        the predicted mean is then not kept and the option hooks get None)."""
        if len(streams) != self._num_streams():
            raise BitstreamError(f"expected {self._num_streams()} coded streams, found {len(streams)}")
        if not 0 <= q < self.num_qualities:
            raise BitstreamError(f"rate point {q} does not exist for this model")
        hz, wz = shape[0] // self.cfg.multiple, shape[1] // self.cfg.multiple
        z_idx = torch.arange(self.cfg.z_channels).view(1, -1, 1, 1).expand(1, -1, hz, wz)
        z_int = decode_symbols(streams[0], z_idx, CdfTables(self.entropy_bottleneck)).view(z_idx.shape)
        z_int = torch.clamp(z_int + self._z_symbols_offset(), INPUT_MIN, INPUT_MAX).float()
        # A 12-Mpixel picture has 6 million latent elements: the index is held in uint8 (SCALE_LEVELS
        # <= 256), the residual in int32, and the coded ones are picked in numpy, whose boolean indexing
        # needs no int64 index list (torch's: 32 bytes per element).
        index, skip, gain = self._index(z_int, q, torch.uint8, band=BAND_Z)
        coded = ~skip.numpy()
        del skip
        table = None if self.scale_context is None else self.scale_context.table()
        r, idx = decode_residuals(streams[1:], index.numpy(), coded, CdfTables(self.gaussian_conditional),
                                  self.cfg.y_channels, table)
        residual, index = torch.from_numpy(r), torch.from_numpy(idx)
        del coded, r
        # Skipped elements decode to a zero residual already, so "coded" can be all ones: k * r == r.
        ones = torch.ones(1, index.shape[1], 1, 1)
        halo = band_halo(self) if bands else None
        if halo is None:
            decoded = dict(zip(("y", "uv"), self._split(residual.float())))
            _, yh, uvh, mean = self._reconstruct(z_int, gain, ones, lambda branch, mug: decoded[branch])
            del decoded
        else:
            parts = dict(zip(("y", "uv"), self._split(residual)))
            yh, uvh = reconstruct_in_bands(
                self, z_int, gain, lambda rows: (ones, lambda b, mug: parts[b][..., rows, :].float()), halo)
            mean = None
        planes = self.synthesize(yh, uvh, mean)
        return planes, {"residual": residual, "index": index.to(torch.int32)}

    @torch.no_grad()
    def estimate_bits(self, st: dict) -> float:
        """Bits the entropy models predict for the symbols an encoder state holds (for rate checks)."""
        eb = self.entropy_bottleneck
        z_lik, _, _ = eb._likelihood((st["z"] - self._z_symbols_offset()).float().permute(1, 0, 2, 3)
                                     .reshape(self.cfg.z_channels, 1, -1) + eb.quantiles[:, :, 1:2])
        coded = ~st["skip"]
        scales = torch.tensor(make_scale_table())[st["index"][coded]]
        r_lik = self.gaussian_conditional._likelihood(st["residual"][coded].float(), scales)
        return estimated_bits(z_lik) + estimated_bits(r_lik)
