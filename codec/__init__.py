"""The codec core: colour conversion, bitstream format, entropy coding, the model skeleton (YUVCodec),
the preset registry, weights I/O and the encode/decode API. It imports no other package of this project.

The public API, importable from here (loaded on first use, so that the torch-free ONNX decoder can use
codec.bitstream and codec.entropy without importing torch):

    create_model, list_models, register          codec.registry
    load_model, save_weights, load_weights, ...  codec.weights
    encode_image, decode_image                   codec.api
    load_rgb, ImageError                         codec.images
    RUNS_DIR                                     codec.paths
"""
import importlib
import warnings

# compressai uses torch.jit.script at import time, which torch 2.14 deprecates loudly.
warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)

_API = {
    "registry": ("create_model", "list_models", "list_options", "register"),
    "weights": ("WeightsError", "load_model", "load_weights", "save_weights", "shipped_models", "shipped_weights",
                "weights_metadata"),
    "api": ("encode_image", "decode_image"),
    "images": ("ImageError", "load_rgb"),
    "bitstream": ("BitstreamError",),
    "paths": ("REPO_ROOT", "RUNS_DIR"),
}
_WHERE = {name: module for module, names in _API.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    """Load a public name from its module on first use (PEP 562)."""
    if name not in _WHERE:
        raise AttributeError(f"module 'codec' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"codec.{_WHERE[name]}"), name)
    globals()[name] = value
    return value
