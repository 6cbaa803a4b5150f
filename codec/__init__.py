"""Shared codec core: colour conversion, metrics, bitstream format, entropy path, registry, CLI."""
import warnings

# compressai uses torch.jit.script at import time, which torch 2.14 deprecates loudly.
warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)
