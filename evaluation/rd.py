"""The RD runner: evaluation images x codecs x quality settings -> rows of rate, quality and decode time.

Rates are the sizes of the files the codecs wrote: bpp = file bytes * 8 / (H * W) of the real picture
(padding a codec may need is paid for, never counted as pixels). Quality is measured on the decoded
8-bit RGB image: PSNR-RGB, PSNR-YUV (BT.709 4:2:0, weights 6:1:1) and MS-SSIM (RGB).
Decode time is the wall time of ``codec.decode`` (for CLI tools: process start, decoding, writing and
reading back the picture) and the CPU time it used, which other load on the machine does not inflate.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from codec.images import load_rgb
from codec.metrics import ms_ssim_rgb, psnr_rgb, psnr_yuv

from .codecs import Codec, CodecError

FIELDS = ["image", "codec", "quality", "bytes", "bpp", "psnr_rgb", "psnr_yuv", "ms_ssim", "decode_s",
          "decode_cpu_s", "decode_onnx_s", "decode_onnx_cpu_s"]
ANCHORS = ("jpeg", "hevc")


def bits_per_pixel(nbytes: int, height: int, width: int) -> float:
    """Rate of a coded file: its bytes * 8 over the picture's pixels."""
    return nbytes * 8.0 / (height * width)


def _cpu_seconds() -> float:
    """CPU seconds used so far by this process and its finished children (the CLI tools).

    Unlike wall time, this does not grow when other work shares the CPU."""
    own = time.process_time()
    try:
        import resource
    except ImportError:  # not on Windows
        return own
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own + ru.ru_utime + ru.ru_stime


def _timed(fn, *args):
    """(result, wall seconds, CPU seconds) of ``fn(*args)``."""
    start, cpu = time.perf_counter(), _cpu_seconds()
    out = fn(*args)
    return out, time.perf_counter() - start, _cpu_seconds() - cpu


def measure(codec: Codec, rgb: np.ndarray, q, image: str) -> dict:
    """Encode, decode (timed) and score one image at one setting; return one result row. Our models with
    an ONNX decoder attached (``codec.onnx``) also get that decoder's times (decode_onnx_s, _cpu_s)."""
    onnx = {}
    with tempfile.TemporaryDirectory(prefix="bench-") as wd:
        path = codec.encode(rgb, q, Path(wd))
        nbytes = path.stat().st_size
        rec, decode_s, decode_cpu_s = _timed(codec.decode, path, Path(wd))
        if getattr(codec, "onnx", False) and codec.onnx_decoder is not None:
            _, onnx["decode_onnx_s"], onnx["decode_onnx_cpu_s"] = _timed(codec.decode_onnx, path)
    if rec.shape != rgb.shape:
        raise CodecError(f"{codec.name} decoded {image} as {rec.shape}, expected {rgb.shape}")
    h, w = rgb.shape[:2]
    return {"image": image, "codec": codec.name, "quality": q, "bytes": nbytes,
            "bpp": bits_per_pixel(nbytes, h, w), "psnr_rgb": psnr_rgb(rgb, rec),
            "psnr_yuv": psnr_yuv(rgb, rec), "ms_ssim": ms_ssim_rgb(rgb, rec), "decode_s": decode_s,
            "decode_cpu_s": decode_cpu_s, **onnx}


def run_rd(images: list[Path], codecs: list[Codec], progress: bool = True,
           ) -> tuple[list[dict], dict[str, str]]:
    """Measure every codec on every image at every setting.

    Returns (rows, {codec: reason}) where a codec whose tool failed is dropped with its reason.
    """
    from tqdm import tqdm

    pictures = {p.stem: load_rgb(p) for p in images}
    rows, failed = [], {}
    bar = tqdm(total=len(pictures) * sum(len(c.qualities) for c in codecs), unit="pt",
               file=sys.stderr, disable=not progress, dynamic_ncols=True)
    with bar:
        for codec in codecs:
            done, mine = 0, []
            try:
                # One untimed pass first, so that no timing pays for loading the tool from disk.
                measure(codec, next(iter(pictures.values())), codec.qualities[0], "warm-up")
                for name, rgb in pictures.items():
                    for q in codec.qualities:
                        bar.set_description(f"{codec.name} {name} q={q}")
                        mine.append(measure(codec, rgb, q, name))
                        done += 1
                        bar.update()
            except CodecError as e:
                failed[codec.name] = str(e)
                bar.update(len(pictures) * len(codec.qualities) - done)
                continue
            rows += mine
    return rows, failed
