"""The codecs the benchmark compares: classical ones through their command-line tools, and ours.

Every codec has a ``name``, ``available() -> (ok, reason)``, ``qualities`` (settings spanning about
0.1-2 bpp on the evaluation photos), ``encode(rgb_u8, q, workdir) -> Path`` (the coded file; its size
is the rate) and ``decode(path, workdir) -> rgb_u8`` (what the runner times). Classical encoders and
decoders run as the Debian CLI tools do, one thread each, reading and writing PNG/PPM/raw YUV files.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image

from codec.images import load_rgb

INSTALL_HINT = "benchmarks/install_codecs.sh"


class CodecError(RuntimeError):
    """A codec tool that failed on an image."""


def _run(cmd: list) -> None:
    """Run a tool; raise CodecError with its last line of output when it fails."""
    cmd = [str(c) for c in cmd]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace")
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines() or [f"exit status {proc.returncode}"]
        raise CodecError(f"{Path(cmd[0]).name} failed: {lines[-1]}")


def _save(rgb: np.ndarray, path: Path) -> Path:
    Image.fromarray(rgb, "RGB").save(path)
    return path


def package_version(package: str) -> str:
    """Installed Debian package version, or '' where dpkg does not know it."""
    if not package or shutil.which("dpkg-query") is None:
        return ""
    proc = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else ""


class Codec:
    """Base class of a classical codec run through CLI tools."""

    name = ""
    kind = "classical"
    tools: tuple[str, ...] = ()   # executables that must be on PATH
    package = ""                  # Debian package that ships them
    qualities: list = []
    chroma = "4:2:0"              # what the codec really codes (shown in the table)
    settings = ""                 # the command line, for the report

    def available(self) -> tuple[bool, str]:
        """Return (True, '') when every tool is on PATH, else (False, why and how to install)."""
        missing = [t for t in self.tools if shutil.which(t) is None]
        if missing:
            return False, (f"{', '.join(missing)} not found on PATH "
                           f"(apt-get install -y {self.package}, or run {INSTALL_HINT})")
        return True, ""

    def version(self) -> str:
        """Version of the tool package (for the report)."""
        return package_version(self.package)

    def encode(self, rgb: np.ndarray, q, workdir: Path) -> Path:
        """Encode an HxWx3 uint8 image at setting q; return the coded file."""
        raise NotImplementedError

    def decode(self, path: Path, workdir: Path) -> np.ndarray:
        """Decode a coded file back to an HxWx3 uint8 image."""
        raise NotImplementedError


class PillowCodec(Codec):
    """A codec Pillow writes and reads in-process: ``pil_format`` saved with ``save_options`` and the quality."""

    pil_format = ""
    suffix = ""
    save_options: dict = {}

    def encode(self, rgb, q, workdir):
        out = Path(workdir) / f"q{q}.{self.suffix}"
        Image.fromarray(rgb, "RGB").save(out, self.pil_format, quality=int(q), **self.save_options)
        return out

    def decode(self, path, workdir):
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))


class PillowJPEG(PillowCodec):
    """JPEG through Pillow (libjpeg-turbo), 4:2:0, standard tables: the project's reference JPEG."""

    name = "jpeg"
    qualities = [5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 95]
    settings = "Pillow save(quality=q, subsampling=2), decoded in-process"
    pil_format, suffix, save_options = "JPEG", "jpg", {"subsampling": 2}

    def available(self) -> tuple[bool, str]:
        return True, ""

    def version(self) -> str:
        from PIL import __version__, features
        return f"Pillow {__version__}, libjpeg-turbo {features.version('libjpeg_turbo')}"


class CJpeg(Codec):
    """JPEG through libjpeg-turbo's cjpeg/djpeg, 4:2:0, optimised Huffman tables."""

    name = "cjpeg"
    tools = ("cjpeg", "djpeg")
    package = "libjpeg-turbo-progs"
    qualities = [5, 10, 15, 25, 35, 50, 65, 80, 90, 95]
    settings = "cjpeg -quality q -sample 2x2 -optimize; djpeg -ppm"

    def encode(self, rgb, q, workdir):
        out = Path(workdir) / f"q{q}.jpg"
        _run(["cjpeg", "-quality", q, "-sample", "2x2", "-optimize", "-outfile", out,
              _save(rgb, Path(workdir) / "in.ppm")])
        return out

    def decode(self, path, workdir):
        out = Path(workdir) / "out.ppm"
        _run(["djpeg", "-ppm", "-outfile", out, path])
        return load_rgb(out)


class WebP(Codec):
    """Lossy WebP (VP8 intra, always 4:2:0) through cwebp/dwebp."""

    name = "webp"
    tools = ("cwebp", "dwebp")
    package = "webp"
    qualities = [0, 10, 25, 40, 55, 70, 80, 90, 95]
    settings = "cwebp -q q -m 6; dwebp -ppm"

    def encode(self, rgb, q, workdir):
        out = Path(workdir) / f"q{q}.webp"
        _run(["cwebp", "-quiet", "-q", q, "-m", "6", _save(rgb, Path(workdir) / "in.png"), "-o", out])
        return out

    def decode(self, path, workdir):
        out = Path(workdir) / "out.ppm"
        _run(["dwebp", "-quiet", path, "-ppm", "-o", out])
        return load_rgb(out)


class JPEG2000(Codec):
    """JPEG 2000 (OpenJPEG), irreversible 9/7 wavelet with the RGB->YCbCr transform (no subsampling)."""

    name = "jpeg2000"
    tools = ("opj_compress", "opj_decompress")
    package = "libopenjp2-tools"
    qualities = [240, 160, 100, 70, 48, 34, 24, 17, 12]  # compression ratios: 24/q bpp
    chroma = "4:4:4"
    settings = "opj_compress -I -r q (raw .j2k codestream); opj_decompress"

    def encode(self, rgb, q, workdir):
        out = Path(workdir) / f"r{q}.j2k"
        _run(["opj_compress", "-i", _save(rgb, Path(workdir) / "in.ppm"), "-o", out, "-r", q, "-I"])
        return out

    def decode(self, path, workdir):
        out = Path(workdir) / "out.ppm"
        _run(["opj_decompress", "-i", path, "-o", out, "-quiet"])
        return load_rgb(out)


class AVIF(Codec):
    """AVIF (libavif with the aom AV1 encoder), 8-bit 4:2:0, one fixed quantizer per point."""

    name = "avif"
    tools = ("avifenc", "avifdec")
    package = "libavif-bin"
    qualities = [56, 50, 44, 38, 32, 26, 20, 14, 9, 5]  # AV1 quantizer 0-63 (lower is better)
    settings = "avifenc -c aom -s 6 -y 420 -d 8 --min q --max q -j 1; avifdec -j 1 (default AV1 decoder)"

    def encode(self, rgb, q, workdir):
        out = Path(workdir) / f"q{q}.avif"
        _run(["avifenc", "-j", "1", "-c", "aom", "-s", "6", "-y", "420", "-d", "8",
              "--min", q, "--max", q, _save(rgb, Path(workdir) / "in.png"), out])
        return out

    def decode(self, path, workdir):
        out = Path(workdir) / "out.png"
        _run(["avifdec", "-j", "1", "--png-compress", "0", path, out])
        return load_rgb(out)


class JPEGXL(Codec):
    """JPEG XL (libjxl) VarDCT in XYB; JPEG XL has no chroma subsampling for pixel input."""

    name = "jxl"
    tools = ("cjxl", "djxl")
    package = "libjxl-tools"
    qualities = [15, 10, 7, 5, 3.5, 2.5, 1.7, 1.2, 0.8, 0.5]  # butteraugli distances
    chroma = "XYB 4:4:4"
    settings = "cjxl -d q -e 7 --num_threads 1; djxl --num_threads 1"

    def encode(self, rgb, q, workdir):
        out = Path(workdir) / f"d{q}.jxl"
        _run(["cjxl", _save(rgb, Path(workdir) / "in.ppm"), out, "-d", q, "-e", "7",
              "--num_threads", "1", "--quiet"])
        return out

    def decode(self, path, workdir):
        out = Path(workdir) / "out.ppm"
        _run(["djxl", path, out, "--num_threads", "1", "--quiet"])
        return load_rgb(out)


class HEVC(Codec):
    """HEVC intra (x265, Main Still Picture, 8-bit 4:2:0) as BPG uses it; decoded with ffmpeg.

    As bpgenc does, the RGB -> YCbCr 4:2:0 conversion happens outside the encoder: here with the
    project's own BT.709 full-range conversion (codec.color), the one the learned codecs see. The
    rate is the raw Annex-B .hevc stream (parameter sets included, no container, no info SEI).
    """

    name = "hevc"
    tools = ("x265", "ffmpeg")
    package = "x265 ffmpeg"
    qualities = [42, 38, 34, 31, 28, 25, 22, 19, 16, 13]  # QP of the intra frame
    settings = ("x265 --preset medium --tune psnr --keyint 1 --qp q --ipratio 1 --range full "
                "--colormatrix bt709 --no-info; ffmpeg -threads 1 -f rawvideo (decoder's 4:2:0 planes)")

    def version(self) -> str:
        return f"x265 {package_version('x265')}, ffmpeg {package_version('ffmpeg')}"

    def encode(self, rgb, q, workdir):
        from codec.color import rgb_to_yuv420, to_tensor
        h, w = rgb.shape[:2]
        # x265 codes 4:2:0 only at even sizes: replicate the last row/column, crop after decoding.
        even = np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        y, uv = rgb_to_yuv420(to_tensor(even))
        planes = [y[0, 0], uv[0, 0], uv[0, 1]]
        raw = Path(workdir) / "in.yuv"
        raw.write_bytes(b"".join(p.mul(255).round().clamp(0, 255).byte().numpy().tobytes() for p in planes))
        out = Path(workdir) / f"qp{q}.hevc"
        _run(["x265", "--input", raw, "--input-res", f"{even.shape[1]}x{even.shape[0]}",
              "--input-csp", "i420", "--fps", "1", "--frames", "1", "--preset", "medium",
              "--tune", "psnr", "--keyint", "1", "--qp", q, "--ipratio", "1", "--range", "full",
              "--colormatrix", "bt709", "--no-info", "--pools", "1", "--frame-threads", "1",
              "--log-level", "error", "--no-progress", "--output", out])
        # The real size travels beside the stream, as BPG's header carries it (a few bytes, not counted).
        (Path(workdir) / "size").write_text(f"{h} {w}")
        return out

    def decode(self, path, workdir):
        import torch

        from codec.color import to_uint8, yuv420_to_rgb
        h, w = map(int, (Path(workdir) / "size").read_text().split())
        he, we = h + h % 2, w + w % 2
        out = Path(workdir) / "out.yuv"
        # No -pix_fmt: raw output in the decoder's own full-range 4:2:0 format, with no rescaling.
        _run(["ffmpeg", "-v", "error", "-threads", "1", "-y", "-i", path, "-f", "rawvideo", out])
        data = np.frombuffer(out.read_bytes(), np.uint8)
        if data.size != he * we * 3 // 2:
            raise CodecError(f"ffmpeg decoded {data.size} bytes, expected {he * we * 3 // 2}")
        y = torch.from_numpy(data[:he * we].reshape(1, 1, he, we).astype(np.float32) / 255)
        uv = torch.from_numpy(data[he * we:].reshape(1, 2, he // 2, we // 2).astype(np.float32) / 255)
        return to_uint8(yuv420_to_rgb(y, uv))[:h, :w]


CLASSICAL = (PillowJPEG, CJpeg, WebP, JPEG2000, AVIF, JPEGXL, HEVC)


def classical_codecs() -> dict[str, Codec]:
    """One instance of every classical codec, by name."""
    return {cls.name: cls() for cls in CLASSICAL}


class LearnedCodec(Codec):
    """One of our models (a registry preset, or a .safetensors file) behind the Codec interface, decoded
    by torch; with ``onnx`` its FP32 ONNX export's decoder (export/, torch-free) is timed too."""

    kind = "learned"
    chroma = "4:2:0"
    decoder = "torch"

    def __init__(self, name: str, weights: str | Path | None = None, onnx=None, rdoq: float | None = None):
        self.name, self.weights, self.model = name, weights, None
        self.rdoq = rdoq   # the fast encoder's RD rounding mu (codec/rdoq.py); None: the encoder's default
        # onnx: a function model -> ONNX FP32 decoder (export.codecs.onnx_decoder) to time as well
        self.onnx, self.onnx_decoder = onnx, None
        self.qualities = []
        self.settings = f"codec.api encode_image/decode_image (torch), weights {weights or 'shipped'}"
        if rdoq is not None:
            self.settings += f", RD rounding mu {rdoq:g}"

    def available(self) -> tuple[bool, str]:
        """Load the model (and export it for the ONNX decoder); (False, reason) when it has no trained
        weights. A model that does not export keeps its torch decoder and says why in its settings."""
        from codec.weights import WeightsError, load_model
        try:
            self.model = load_model(str(self.weights) if self.weights else self.name)
        except WeightsError as e:
            return False, str(e)
        self.qualities = list(range(self.model.num_qualities))
        if self.onnx:
            try:
                self.onnx_decoder = self.onnx(self.model)
                self.settings += "; also the ONNX FP32 decoder (export.runtime, 1 thread)"
            except (ValueError, RuntimeError, OSError) as e:
                self.settings += f"; no ONNX decoder: {str(e).splitlines()[0]}"
        return True, ""

    def version(self) -> str:
        from codec.weights import model_id
        return f"model id {model_id(self.model).hex()}" if self.model is not None else ""

    def encode(self, rgb, q, workdir):
        import torch

        from codec.api import encode_image
        with torch.inference_mode():
            data = encode_image(self.model, rgb, int(q), rdoq=self.rdoq)
        out = Path(workdir) / f"q{q}.bin"
        out.write_bytes(data)
        return out

    def decode(self, path, workdir):
        import torch

        from codec.api import decode_image
        with torch.inference_mode():
            return decode_image(self.model, Path(path).read_bytes())

    def decode_onnx(self, path) -> np.ndarray:
        """Decode with the exported ONNX FP32 networks (``available`` must have built the decoder)."""
        return self.onnx_decoder.decode(Path(path).read_bytes()).rgb

    def decoder_kmac(self) -> float | None:
        """Decoder kMAC per pixel from the profiling package, or None when it cannot say."""
        try:
            from profiling import profile_model
            report = profile_model(self.model, teacher=False, check_size=None)  # 768x512 picture
            return float(report.total("decoder"))
        except Exception:  # noqa: BLE001 - another package, API still moving: leave the column blank
            return None
