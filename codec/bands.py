"""The decoder's latent grid in bands of rows: bounded memory for the two checkerboard passes.

``YUVCodec._reconstruct`` turns the hyper-latent and the decoded residuals into the latents: hyper
decoders, context models and fusion on the whole H/16 grid, a dozen tensors of 10-20 MB each at 12
Mpixel. Those networks are local, so the tiled decoder (codec/tiling.py) runs them in bands of z rows,
each with the rows of context its outputs depend on, and keeps only the band's own rows.

The context a band needs is measured, as the synthesis's footprint is (``tiling.probe_footprints``): on
a positive float64 copy of the six networks (codec/positive.py), raising one row of z (or of the
residuals) raises exactly the latent rows that depend on it. A kept row then depends only on rows inside
its band's window, and the window's cut edges (zero-padded there) cannot reach it: the same values as
the whole-grid passes (bit for bit at one torch thread, like the synthesis's tiles; tests/test_tiling.py).
Bands start on z rows, so the checkerboard keeps its phase. The global context (option gmm: per-channel
offsets of the means from the whole z) is computed once on the whole z and handed to every band; models
whose decoder hooks read the predicted mean (pre_synthesis, post_filter), or whose networks reach further
than the probe looks (attention), run whole.
"""
from __future__ import annotations

import copy

import torch

from .positive import positive_copy
from .memory import BAND_Z, band_windows

_NETS = ("hyper_decoder_y", "hyper_decoder_uv", "context_y", "context_uv", "fusion_y", "fusion_uv")
_CACHE: dict = {}


def _probe_copy(model):
    """A shallow copy of ``model`` whose six latent-grid networks are positive float64 copies (the
    original's modules are left untouched)."""
    shim = copy.copy(model)
    shim.__dict__["_modules"] = dict(model._modules)
    for i, name in enumerate(_NETS):
        shim._modules[name] = positive_copy(getattr(model, name), seed=i)
    return shim


def band_halo(model, limit: int = 64) -> int | None:
    """z rows of context each band needs on either side (cached per model id), or None when the model
    cannot be run in bands (a decoder hook that reads the predicted mean; or an influence that reaches
    ``limit`` z rows). The global context is left out of the probe: bands get its offsets from the whole z."""
    from .weights import model_id

    if getattr(model, "pre_synthesis", None) is not None or getattr(model, "post_filter", None) is not None:
        return None
    key = model_id(model)
    if key in _CACHE:
        return _CACHE[key]
    shim, cls, n, halo = _probe_copy(model), type(model), 4, None
    g = torch.Generator().manual_seed(0)
    while halo is None and n <= limit:
        z = torch.rand(1, model.cfg.z_channels, 2 * n + 1, 3, generator=g, dtype=torch.float64) + 0.5
        res = torch.rand(1, model.cfg.y_channels + model.cfg.uv_channels, 4 * z.shape[-2], 12, generator=g,
                         dtype=torch.float64)
        ones = torch.ones(1, res.shape[1], 1, 1, dtype=torch.float64)

        def rows(z_in, r_in):
            parts = dict(zip(("y", "uv"), cls._split(shim, r_in)))
            with torch.no_grad():
                _, yh, uvh, _ = cls._reconstruct(shim, z_in, ones, ones, lambda branch, mug: parts[branch],
                                                 offsets=(None, None))
            return torch.cat((yh, uvh), 1)

        base = rows(z, res)
        z2, r2 = z.clone(), res.clone()
        z2[..., n, :] += 100.0              # z row n, and the residual rows it covers (4n .. 4n + 3)
        r2[..., 4 * n: 4 * n + 4, :] += 100.0
        reach = 0
        for moved in (rows(z2, res), rows(z, r2)):
            hit = torch.nonzero((moved != base).any(3).any(1)[0]).flatten()
            first, last = int(hit[0]), int(hit[-1])
            reach = max(reach, 4 * n + 3 - first, last - 4 * n)
            if first == 0 or last == base.shape[-2] - 1:
                reach = None
                break
        if reach is None:
            n *= 2
        else:
            halo = -(-reach // 4)           # every latent row a kept row depends on lies in its window
    _CACHE[key] = halo
    return halo


def reconstruct_in_bands(model, z_int, gain, band_inputs, halo: int, band: int | None = None,
                         residuals: bool = False):
    """``model._reconstruct`` run on bands of ``band`` z rows (default ``BAND_Z``) with ``halo`` rows of
    context each side (``codec.memory.band_windows``). ``band_inputs(rows)`` gives, for the latent rows
    ``rows`` of a band's window, ``(coded, residual_fn)`` as ``_reconstruct`` takes them (the decoder: its
    decoded residuals; the encoder: its quantizer on those rows). Returns (y_hat, uv_hat), and with
    ``residuals`` the residuals too: the whole grid's values."""
    hz, wz = z_int.shape[-2:]
    offsets = model._mean_offsets(z_int)      # the global context reads the whole z
    yh = z_int.new_empty(z_int.shape[0], model.cfg.y_channels, 4 * hz, 4 * wz)
    uvh = z_int.new_empty(z_int.shape[0], model.cfg.uv_channels, 4 * hz, 4 * wz)
    r = z_int.new_empty(z_int.shape[0], yh.shape[1] + uvh.shape[1], 4 * hz, 4 * wz) if residuals else None
    for z0, z1, e0, e1 in band_windows(hz, band or BAND_Z, halo):
        res, y, uv, _ = model._reconstruct(z_int[..., e0:e1, :], gain, *band_inputs(slice(4 * e0, 4 * e1)),
                                           offsets)
        keep, rows = slice(4 * (z0 - e0), 4 * (z1 - e0)), slice(4 * z0, 4 * z1)
        yh[..., rows, :], uvh[..., rows, :] = y[..., keep, :], uv[..., keep, :]
        if residuals:
            r[..., rows, :] = res[..., keep, :]
        del res, y, uv
    return (yh, uvh, r) if residuals else (yh, uvh)
