"""Deployment: export a model to ONNX + exact integer tables, INT8, and a decoder without torch.

    python -m export --model SPEC -o DIR [--int8]          write the deployment directory (exporter.py)
    python -m export.decode IN.bin -o OUT.png --onnx DIR   decode with numpy + ONNX Runtime (runtime.py)
    python -m export.bench --model SPEC [--int8]           decode latency table (bench.py)

Modules that the decoder imports (runtime, arrays, intnp, colour, decode, and codec.bitstream, codec.entropy)
must never import torch; tests/test_export.py runs the decoder with torch blocked. This file imports nothing.
"""
