"""Image-level coding: RGB image <-> bitstream bytes, for any YUVCodec."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from . import bitstream as bsf
from .color import rgb_to_yuv420, to_tensor, to_uint8, yuv420_to_rgb
from .encode_tiles import analyse_tiled
from .rdoq import RDOQ_MU
from .refine import effort_level, refine_latents
from .weights import model_id


def pad_planes(rgb: torch.Tensor, multiple: int):
    """RGB 1x3xHxW -> (luma, chroma) planes edge-padded so H and W are multiples of ``multiple``."""
    h, w = rgb.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    padded = F.pad(rgb, (0, pw, 0, ph), mode="replicate") if ph or pw else rgb
    return rgb_to_yuv420(padded)


def crop_planes(y: torch.Tensor, uv: torch.Tensor, height: int, width: int):
    """Crop padded planes back to the picture size (chroma to the rounded-up half size)."""
    return y[..., :height, :width], uv[..., : (height + 1) // 2, : (width + 1) // 2]


def encode_image(model, image: np.ndarray, quality: int, effort: str = "fast", progress: bool = False,
                 rdoq: float | None = None) -> bytes:
    """Encode an HxWx3 uint8 RGB image at rate point ``quality`` into bitstream bytes.

    ``effort`` (codec.refine.EFFORTS): "fast" is the amortized encoder; "slow" and "max" spend encoding
    time optimising this picture's latents for the same decoder (same format, same weights).
    ``rdoq``: mu of the rate-distortion rounding (codec/rdoq.py; 0 = nearest; None = the encoder's default)."""
    level = effort_level(effort)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError("expected an HxWx3 uint8 RGB image")
    h, w = image.shape[:2]
    bsf.check_size(h, w)
    if not 0 <= quality < model.num_qualities:
        raise ValueError(f"quality must be in 0..{model.num_qualities - 1}, got {quality}")
    y = uv = latents = None
    if level is None:   # large pictures: the analysis in tiles, the same latents (codec/encode_tiles.py)
        latent = analyse_tiled(model, image)
        if latent is not None:
            latents, rdoq = (latent, model.hyper_analysis(latent)), RDOQ_MU if rdoq is None else rdoq
            del latent
    if latents is None:
        y, uv = pad_planes(to_tensor(image), model.cfg.multiple)
    if level is not None:
        with torch.inference_mode(False), torch.enable_grad():
            latents = refine_latents(model, y, uv, quality, level, size=(h, w), progress=progress).latents
    tiled = y is None   # then also the latent-grid networks in bands of rows (codec/bands.py)
    streams, _ = model.compress_planes(y, uv, quality, latents, rdoq, bands=tiled)
    return bsf.pack(bsf.Bitstream(model_id(model), quality, h, w, tuple(streams)))


def decode_planes(model, bs: bsf.Bitstream):
    """Decode a parsed bitstream into cropped (luma, chroma) planes and the decoder's integer state."""
    if bs.model_id != model_id(model):
        raise bsf.BitstreamError(f"bitstream was made by another model (id {bs.model_id.hex()}), "
                                 f"not {model.name!r} ({model_id(model).hex()})")
    m = model.cfg.multiple
    shape = (-(-bs.height // m) * m, -(-bs.width // m) * m)
    try:
        (y, uv), state = model.decompress_streams(list(bs.streams), bs.quality, shape)
    except bsf.BitstreamError:
        raise
    except (RuntimeError, ValueError, IndexError) as e:
        raise bsf.BitstreamError(f"corrupt coded data: {str(e).splitlines()[0]}") from None
    return crop_planes(y, uv, bs.height, bs.width), state


def decode_image(model, data: bytes, tile: int | None = None) -> np.ndarray:
    """Decode bitstream bytes into an HxWx3 uint8 RGB image (the model must match the stream's id).

    ``tile``: run the synthesis in tile x tile-pixel tiles, converting to RGB strip by strip, so that
    memory stays bounded for any picture size; the same picture, bit for bit (codec/tiling.py)."""
    if tile:
        from .tiling import decode_rgb
        return decode_rgb(model, bsf.unpack(data), tile)
    (y, uv), _ = decode_planes(model, bsf.unpack(data))
    return to_uint8(yuv420_to_rgb(y, uv))


def reconstruct(model, image: np.ndarray, quality: int) -> np.ndarray:
    """The model's own quantised pass without entropy coding (what decode(encode(x)) must give)."""
    h, w = image.shape[:2]
    y, uv = pad_planes(to_tensor(image), model.cfg.multiple)
    st = model.encode_latents(y, uv, quality)
    y_rec, uv_rec = model.synthesize(st["y_hat"], st["uv_hat"], st["mean"])
    return to_uint8(yuv420_to_rgb(*crop_planes(y_rec, uv_rec, h, w)))
