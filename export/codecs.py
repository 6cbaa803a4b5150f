"""Our models decoded by the torch-free ONNX decoder of export/: the exports they need (cached) and the
INT8 codec (torch encoder, ONNX INT8 decoder networks; the integer entropy path is the same)."""
from __future__ import annotations

from pathlib import Path

from evaluation.codecs import LearnedCodec


def onnx_decoder(model, int8: bool, cache: Path | None = None):
    """An ``export.runtime.OnnxDecoder`` (1 thread) for ``model``, FP32 or INT8 networks, from its cached
    export (``export.cache``; written first when missing)."""
    from .cache import cached_export
    from .runtime import OnnxDecoder

    return OnnxDecoder(cached_export(model, int8, cache), int8=int8, threads=1)


class OnnxInt8Codec(LearnedCodec):
    """One of our models encoded by torch and decoded by the ONNX decoder with its INT8 (QDQ) networks."""

    decoder = "ONNX INT8"

    def __init__(self, name: str, spec: str | Path):
        is_file = str(spec).endswith(".safetensors")
        super().__init__(name, spec if is_file else None)
        self.spec = str(spec)
        self.settings = (f"codec.api encode_image (torch), export.runtime OnnxDecoder(int8=True), 1 thread; "
                         f"model {spec}")

    def available(self) -> tuple[bool, str]:
        """Load the model and build its INT8 export; (False, reason) when either fails."""
        from codec.weights import WeightsError, load_model
        try:
            self.model = load_model(self.spec)
            self.onnx_decoder = onnx_decoder(self.model, int8=True)
        except WeightsError as e:
            return False, str(e)
        except (ValueError, RuntimeError, OSError) as e:
            return False, f"INT8 export failed: {str(e).splitlines()[0]}"
        self.qualities = list(range(self.model.num_qualities))
        return True, ""

    def decode(self, path, workdir):
        return self.decode_onnx(path)
