"""Which codecs a benchmark runs: the classical ones installed here and every model of ours (registry presets,
weights files, INT8 exports), picked by name."""
from __future__ import annotations


from evaluation.codecs import Codec, LearnedCodec, classical_codecs
from evaluation.rd import ANCHORS
from export.codecs import OnnxInt8Codec, onnx_decoder


def _fp32_decoder(model):
    return onnx_decoder(model, int8=False)


def learned_codecs(extra: dict[str, str] | None = None, int8: dict[str, str] | None = None,
                   onnx: bool = False, rdoq: dict[str, tuple[str, float]] | None = None) -> list[LearnedCodec]:
    """Every registry preset, every other weight file in weights/ (pruned models...), extra NAME ->
    weights pairs, INT8 codecs NAME -> model (preset or weights) decoded by the ONNX INT8 decoder, and
    NAME -> (model, mu) encoded with that RD rounding mu; ``onnx``: also time the ONNX FP32 decoder of
    the torch-decoded models."""
    from codec.registry import list_models
    from codec.weights import WEIGHTS_DIR
    fp32 = _fp32_decoder if onnx else None

    presets = list_models()
    # INT8 codecs first: their export holds the FP32 networks too, which the others then reuse.
    out: list[LearnedCodec] = [OnnxInt8Codec(n, spec) for n, spec in (int8 or {}).items()]
    out += [LearnedCodec(n, onnx=fp32) for n in presets]
    others = sorted(WEIGHTS_DIR.glob("*.safetensors")) if WEIGHTS_DIR.is_dir() else []
    out += [LearnedCodec(p.stem, p, onnx=fp32) for p in others if p.stem not in presets]
    out += [LearnedCodec(n, p, onnx=fp32) for n, p in (extra or {}).items()]
    out += [LearnedCodec(n, spec, onnx=fp32, rdoq=mu) for n, (spec, mu) in (rdoq or {}).items()]
    return out


def select_codecs(names: list[str] | None = None, weights: dict[str, str] | None = None,
                  int8: dict[str, str] | None = None, onnx: bool = False,
                  rdoq: dict[str, tuple[str, float]] | None = None) -> tuple[list[Codec], dict[str, str]]:
    """Pick codecs by name (default: every classical codec and every model) and check them.

    ``weights``: extra models NAME -> weights file; ``int8``: INT8 codecs NAME -> model decoded by the
    ONNX INT8 decoder; ``onnx``: also time the ONNX FP32 decoder of our torch-decoded models; ``rdoq``:
    models NAME -> (model, mu) whose fast encoder uses that RD rounding mu (codec/rdoq.py).
    The anchors 'jpeg' and 'hevc' and the models named by ``weights``, ``int8`` and ``rdoq`` are always added.
    Returns (usable codecs, {skipped name: reason}); raises ValueError for an unknown name.
    """
    pool: dict[str, Codec] = classical_codecs()
    pool.update({c.name: c for c in learned_codecs(weights, int8, onnx, rdoq)})
    if names:
        unknown = [n for n in names if n not in pool]
        if unknown:
            raise ValueError(f"unknown codec {', '.join(unknown)}; known: {', '.join(pool)}")
        named = set(names) | set(weights or {}) | set(int8 or {}) | set(rdoq or {})
        wanted = [n for n in pool if n in named or n in ANCHORS]
    else:
        wanted = list(pool)
    usable, skipped = [], {}
    for name in wanted:
        ok, reason = pool[name].available()
        if ok:
            usable.append(pool[name])
        else:
            skipped[name] = reason
    return usable, skipped
