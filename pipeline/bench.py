"""What the `make distill` pipeline measures, on objects it already holds (loaded models, export folders).

- codecs for the RD stage: our loaded models (torch encoder and decoder, or the ONNX INT8 decoder of an
  export folder the pipeline wrote), and the classical anchors, with WebP through Pillow where the
  ``cwebp`` tool is missing;
- RD rows of a fixed model (the shipped teacher) kept in a cache keyed by its model id and the images,
  since the 70 kMAC/px teacher codes at about 1 s per picture;
- the ONNX decode time of one 768x512 picture.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np

from evaluation.codecs import Codec, LearnedCodec, PillowCodec, WebP, classical_codecs

# ---- codecs ---------------------------------------------------------------------------------------


class PillowWebP(PillowCodec):
    """Lossy WebP (VP8 intra, 4:2:0) through Pillow's libwebp, with the settings of the cwebp codec."""

    name = "webp"
    qualities = WebP.qualities
    settings = "Pillow save(format='WEBP', quality=q, method=6), decoded in-process"
    pil_format, suffix, save_options = "WEBP", "webp", {"method": 6}

    def available(self) -> tuple[bool, str]:
        from PIL import features
        if not features.check("webp"):
            return False, "Pillow was built without WebP support"
        return True, ""

    def version(self) -> str:
        from PIL import __version__, features
        return f"Pillow {__version__}, libwebp {features.version('webp')}"


def webp_codec() -> Codec:
    """WebP through cwebp/dwebp when installed, else through Pillow (both named 'webp')."""
    cli = classical_codecs()["webp"]
    return cli if cli.available()[0] else PillowWebP()


def classical(names: str | list[str]) -> tuple[list[Codec], dict[str, str]]:
    """The classical codecs to run: 'installed' (every one whose tools are here) or a list of names;
    JPEG and WebP always come (WebP through Pillow when cwebp is missing). Returns (codecs, {left out: why})."""
    pool = classical_codecs()
    pool["webp"] = webp_codec()
    wanted = list(pool) if names == "installed" else (names.split(",") if isinstance(names, str) else list(names))
    wanted = [n.strip() for n in wanted if n.strip()]
    unknown = [n for n in wanted if n not in pool]
    if unknown:
        raise ValueError(f"unknown classical codec {', '.join(unknown)}; known: {', '.join(pool)}")
    out, left = [], {}
    for name, codec in pool.items():
        ok, why = codec.available()
        if name in ("jpeg", "webp") or name in wanted:
            if not ok:
                raise RuntimeError(f"{name} is not usable: {why}")
            out.append(codec)
        elif ok:
            left[name] = "installed, not asked for (--classical installed runs it)"
    return out, left


class ModelCodec(LearnedCodec):
    """A model the pipeline already holds, behind the benchmark's Codec interface: torch encodes; torch
    decodes, or the ONNX INT8 networks of ``int8_dir`` (an export folder of this very model) do."""

    def __init__(self, name: str, model, weights: str | Path, int8_dir: str | Path | None = None):
        super().__init__(name, weights)
        self.model = model
        self.qualities = list(range(model.num_qualities))
        self.int8_dir = Path(int8_dir) if int8_dir else None
        if self.int8_dir:
            self.decoder = "ONNX INT8"
            self.settings = (f"codec.api encode_image (torch), export.runtime OnnxDecoder(int8=True) of "
                             f"{self.int8_dir}, 1 thread; weights {weights}")

    def available(self) -> tuple[bool, str]:
        if self.int8_dir and self.onnx_decoder is None:
            from export.runtime import OnnxDecoder
            self.onnx_decoder = OnnxDecoder(self.int8_dir, int8=True, threads=1)
        return True, ""

    def decode(self, path, workdir):
        if self.int8_dir:
            return self.decode_onnx(path)
        return super().decode(path, workdir)


def codec_info(c: Codec) -> dict:
    """What benchmarks.report needs to know about a codec (as ``python -m benchmarks rd`` records it)."""
    return {"kind": c.kind, "chroma": c.chroma, "settings": c.settings, "decoder": getattr(c, "decoder", ""),
            "version": c.version(), "qualities": list(c.qualities),
            "kmac_px": getattr(c, "kmac_px", None)}


# ---- cached RD rows of a fixed model ----------------------------------------------------------------
def _images_key(images: list[Path]) -> str:
    h = hashlib.sha256()
    for p in images:
        h.update(p.name.encode())
        h.update(hashlib.sha256(Path(p).read_bytes()).digest())
    return h.hexdigest()[:16]


def cached_rd(codec: LearnedCodec, images: list[Path], cache: Path | None, progress: bool = True,
              log=print) -> tuple[list[dict], dict]:
    """RD rows of a fixed model on ``images``: from ``cache`` when it holds this very model (model id) on
    these very images (their bytes), else measured now (and stored). Returns (rows, provenance) where
    provenance says {"cached": bool, "date": when measured, "seconds": measuring time}."""
    from evaluation.rd import run_rd
    from codec.weights import model_id

    path = None
    if cache is not None:
        key = f"{codec.name}-{model_id(codec.model).hex()}-{_images_key(images)}"
        path = Path(cache) / f"{key}.json"
        if path.is_file():
            data = json.loads(path.read_text())
            log(f"{codec.name}: RD rows of this model id on these {len(images)} images cached in {path} "
                f"(measured {data['date']})")
            return data["rows"], {"cached": True, "date": data["date"], "seconds": data["seconds"], "file": str(path)}
    start = time.monotonic()
    rows, failed = run_rd(images, [codec], progress=progress)
    if failed:
        raise RuntimeError(f"{codec.name}: {failed[codec.name]}")
    prov = {"cached": False, "date": time.strftime("%Y-%m-%d %H:%M"), "seconds": round(time.monotonic() - start, 1)}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"rows": rows, "date": prov["date"], "seconds": prov["seconds"]}))
        prov["file"] = str(path)
    return rows, prov


# ---- decode time ------------------------------------------------------------------------------------
def onnx_decode_ms(model, onnx_dir: Path, int8: bool, picture: np.ndarray, n: int = 5,
                   quality: int = 3) -> float:
    """Wall ms of the torch-free ONNX decoder (1 thread) on ``picture`` coded at ``quality``: the fastest
    of ``n`` decodes after a warm-up (on a machine shared with other jobs the fastest run is the one
    least slowed down by them; a median moves with their load)."""
    import torch

    from codec.api import encode_image
    from export.runtime import OnnxDecoder

    with torch.inference_mode():
        data = encode_image(model, picture, min(quality, model.num_qualities - 1))
    dec = OnnxDecoder(onnx_dir, int8=int8, threads=1)
    dec.decode(data)
    times = []
    for _ in range(max(1, n)):
        t = time.perf_counter()
        dec.decode(data)
        times.append(time.perf_counter() - t)
    return 1000 * min(times)
