"""The measurements behind ``python -m export.sensitivity`` (see that module) and its report."""
from __future__ import annotations

import contextlib
import datetime
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

# Operator types whose nodes the per-layer phase quantises one at a time (ORT QDQ quantises these).
LAYER_OPS = ("Conv", "ConvTranspose", "Add", "Mul", "HardSigmoid", "HardSwish", "LeakyRelu", "Concat", "Gather")


def screening_streams(model, paths: list[Path], qualities: list[int], progress: bool = True) -> list[dict]:
    """Encode every picture at every rate point with torch: dicts of image, quality, rgb, data, bpp."""
    import torch
    from tqdm import tqdm

    from codec.api import encode_image
    from codec.images import load_rgb

    out = []
    jobs = [(p, q) for p in paths for q in qualities]
    for path, q in tqdm(jobs, desc="encode", disable=not progress, leave=False):
        rgb = load_rgb(path)
        with torch.inference_mode():
            data = encode_image(model, rgb, q)
        out.append({"image": path.name, "quality": q, "rgb": rgb, "data": data,
                    "bpp": 8 * len(data) / (rgb.shape[0] * rgb.shape[1])})
    return out


def decode_rows(decoder, streams: list[dict], label: str) -> list[dict]:
    """Decode every stream; rows (codec ``label``, image, quality, bpp, psnr_yuv) as evaluation.bdrate reads them."""
    from codec.metrics import psnr_yuv

    rows = []
    for s in streams:
        rgb = decoder.decode(s["data"], tile=0).rgb
        rows.append({"codec": label, "image": s["image"], "quality": s["quality"], "bpp": s["bpp"],
                     "psnr_yuv": float(psnr_yuv(s["rgb"], rgb))})
    return rows


@contextlib.contextmanager
def swapped(decoder, files: dict[str, Path]):
    """``decoder`` with the networks named in ``files`` read from those ONNX files instead (restored after)."""
    from .sessions import session_options

    saved = {n: decoder.sessions[n] for n in files}
    try:
        for name, path in files.items():
            so = session_options(decoder.threads, arena=name == "synthesis")
            decoder.sessions[name] = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        yield decoder
    finally:
        decoder.sessions.update(saved)


def bd_vs(anchor: list[dict], rows: list[dict]) -> tuple[float, float, int]:
    """(BD-rate %, BD-PSNR-YUV dB, images used) of ``rows`` against ``anchor`` (same bitstreams), mean over
    the images whose two curves overlap (a curve that is no longer increasing loses points)."""
    from evaluation.bdrate import bd_summary

    s = bd_summary(anchor + rows, anchor[0]["codec"], rows[0]["codec"], "psnr_yuv")
    return s["bd_rate"], s["bd_quality_db"], s["n_images"]


def layer_nodes(fp32: Path, exclude: list[str]) -> list[tuple[str, str]]:
    """(name, op type) of the nodes of the pre-processed ``fp32`` graph that the per-layer phase visits."""
    from .int8 import preprocess

    with tempfile.TemporaryDirectory() as tmp:
        g = onnx.load(str(preprocess(fp32, Path(tmp) / "pre.onnx"))).graph
    return [(n.name, n.op_type) for n in g.node if n.op_type in LAYER_OPS and n.name not in exclude]


class Probe:
    """Quantises pieces of an FP32 export and measures each against the all-FP32 decode of the same streams."""

    def __init__(self, model, onnx_dir: Path, streams: list[dict], samples: dict, work: Path):
        from .runtime import OnnxDecoder

        self.dir, self.streams, self.samples, self.work = onnx_dir, streams, samples, work
        self.decoder = OnnxDecoder(onnx_dir, threads=1, tile=0)
        self.anchor = decode_rows(self.decoder, streams, "fp32")
        self.n = 0

    def quantized(self, name: str, recipe=None, only_nodes=None) -> Path:
        """An INT8 copy of network ``name`` (ranges calibrated once per network and method, then cached)."""
        from .int8 import quantize, recipe_for

        recipe = recipe or recipe_for(name)
        self.n += 1
        out = self.work / f"{name}.{self.n}.onnx"
        method = recipe.method + (str(recipe.percentile) if recipe.method == "percentile" else "")
        cache = self.work / f"{name}.{method}.{len(self.samples[name])}.calib.json"
        return quantize(self.dir / f"{name}.onnx", out, self.samples[name], name, recipe, only_nodes, cache)

    def measure(self, files: dict[str, Path]) -> dict:
        """BD-rate / BD-PSNR and decode seconds with ``files`` swapped in (the files are deleted after)."""
        t = time.perf_counter()
        with swapped(self.decoder, files):
            rows = decode_rows(self.decoder, self.streams, "test")
        rate, db, used = bd_vs(self.anchor, rows)
        for f in files.values():
            f.unlink(missing_ok=True)
        return {"bd_rate": rate, "bd_psnr": db, "bd_images": used, "decode_s": time.perf_counter() - t,
                "psnr_delta": float(np.mean([r["psnr_yuv"] - a["psnr_yuv"] for r, a in zip(rows, self.anchor)]))}


def run_sensitivity(model, images: int, qualities: list[int], calib: int, layer_nets: int, candidates: list[str] | None,
                    layers: list[str] = (), layer_recipe: str = "", data: str | None = None, progress: bool = True,
                    work: Path | None = None) -> dict:
    """The measurement of ``python -m export.sensitivity``; returns the result dict (rows and settings).

    Per-layer phase on the ``layer_nets`` worst networks and on ``layers``, each node quantised with the
    network's recipe, or with the candidate ``layer_recipe`` (export.int8.CANDIDATES) applied to it.
    ``candidates``: labels of export.int8.CANDIDATES to measure on each network alone and on all at once
    (None: all of them)."""
    from tqdm import tqdm

    from evaluation.machine import machine
    from photos import eval_images

    from .cache import cached_export
    from .int8 import CANDIDATES, calibration_crops, calibration_samples, float_nodes, preprocess, recipe_for
    from .nets import DECODER_NETS

    t0 = time.perf_counter()
    ort.set_default_logger_severity(3)   # the synthesis's crop bounds are initializers and inputs, on purpose
    paths = eval_images(data)
    if images and images < len(paths):
        paths = [paths[round(i * (len(paths) - 1) / max(images - 1, 1))] for i in range(images)]
    bad = [q for q in qualities if not 0 <= q < model.num_qualities]
    if bad or len(qualities) < 2:
        raise ValueError(f"--qualities wants at least 2 rate points in 0..{model.num_qualities - 1}, got {qualities}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(work or tmp)
        tmp.mkdir(parents=True, exist_ok=True)
        # (default: runs/onnx-cache, shared with the benchmarks)
        onnx_dir = cached_export(model, int8=False, cache=Path(work) / "onnx" if work else None)
        samples = calibration_samples(model, calibration_crops(calib), quiet=not progress)
        probe = Probe(model, onnx_dir, screening_streams(model, paths, qualities, progress), samples, tmp)
        rows = []
        bar = tqdm(total=len(DECODER_NETS) + 1, desc="networks", disable=not progress)

        def add(scope, net, node, op, recipe, files):
            rows.append({"scope": scope, "network": net, "node": node, "op": op, "recipe": recipe,
                         **probe.measure(files)})
            bar.update()

        for net in DECODER_NETS:
            add("network", net, "", "", "default", {net: probe.quantized(net)})
        add("all", "all", "", "", "default", {n: probe.quantized(n) for n in DECODER_NETS})
        labels = list(CANDIDATES) if candidates is None else candidates
        unknown = [c for c in labels if c not in CANDIDATES]
        if unknown:
            raise ValueError(f"unknown candidate {unknown}; known: {' | '.join(CANDIDATES)}")
        bar.total += (len(DECODER_NETS) + 1) * len(labels)
        for label in labels:
            for net in DECODER_NETS:
                add("candidate", net, "", "", label, {net: probe.quantized(net, CANDIDATES[label](net))})
            add("candidate all", "all", "", "", label,
                {n: probe.quantized(n, CANDIDATES[label](n)) for n in DECODER_NETS})
        unknown = [n for n in layers if n not in DECODER_NETS]
        if unknown or (layer_recipe and layer_recipe not in CANDIDATES):
            raise ValueError(f"unknown network {unknown} or layer recipe {layer_recipe!r}")
        worst = sorted((r for r in rows if r["scope"] == "network"), key=lambda r: -r["bd_rate"])[:layer_nets]
        for net in dict.fromkeys([r["network"] for r in worst] + list(layers)):
            rec = CANDIDATES[layer_recipe](net) if layer_recipe else recipe_for(net)
            if not rec.enabled:       # a network the recipe keeps FP32 has no quantised layer to probe
                continue
            with tempfile.TemporaryDirectory() as t2:
                pre = onnx.load(str(preprocess(onnx_dir / f"{net}.onnx", Path(t2) / "pre.onnx")))
            nodes = layer_nodes(onnx_dir / f"{net}.onnx", float_nodes(pre, rec))
            bar.total += len(nodes)
            for node, op in nodes:
                add("layer", net, node, op, layer_recipe or "default", {net: probe.quantized(net, rec, [node])})
        bar.close()
    return {"model": model.name, "machine": machine(), "date": datetime.date.today().isoformat(),
            "images": [p.name for p in paths], "whole_set": len(paths) == len(eval_images(data)),
            "qualities": qualities, "calibration_crops": calib,
            "seconds": round(time.perf_counter() - t0, 1), "rows": rows}


def write_report(res: dict, out: str | Path) -> Path:
    """OUT.json (everything) and OUT.md (the tables, worst first); returns the .md path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=1))
    n = len(res["images"]) * len(res["qualities"])
    which = "Evaluation set" if res.get("whole_set") else "Screening set"
    caveat = ("" if res.get("whole_set") else
              "A screening figure on few pictures, not the evaluation-set figure.")
    lines = [f"# INT8 sensitivity: {res['model']}", "",
             f"Made by `{res.get('command', 'python -m export.sensitivity')}` on {res['date']} "
             f"({res['seconds']:.0f} s); "
             f"machine: {res['machine']}.", "",
             f"{which}: {len(res['images'])} evaluation images ({', '.join(res['images'])}) x rate points "
             f"{', '.join(map(str, res['qualities']))} = {n} torch-encoded bitstreams, decoded by the ONNX decoder "
             f"(1 thread) with one piece quantised (export.int8, {res['calibration_crops']} calibration crops) and "
             "everything else FP32. BD-rate / BD-PSNR (PSNR-YUV) against the all-FP32 ONNX decode of the same "
             "bitstreams (same bytes, so only the reconstruction differs), averaged over the images whose curves "
             f"still overlap (BD images); mean PSNR change over all the bitstreams. {caveat}".rstrip(), ""]
    for scope, title in (("network", "One network quantised (its recipe), the others FP32"),
                         ("all", "Every decoder network quantised"),
                         ("candidate", "Candidate recipes (export.int8.CANDIDATES), one network at a time"),
                         ("candidate all", "Candidate recipes on every network at once"),
                         ("layer", "One node quantised (weights and activations), everything else FP32")):
        sel = sorted((r for r in res["rows"] if r["scope"] == scope), key=lambda r: -r["bd_rate"])
        if not sel:
            continue
        lines += [f"## {title}", "",
                  "| network | node | op | recipe | BD-rate | BD-PSNR dB | BD images | mean dPSNR dB |",
                  "|---|---|---|---|---:|---:|---:|---:|"]
        lines += [f"| {r['network']} | {r['node']} | {r['op']} | {r['recipe']} | {r['bd_rate']:+.2f}% | "
                  f"{r['bd_psnr']:+.3f} | {r.get('bd_images', '')} | {r['psnr_delta']:+.3f} |" for r in sel]
        lines.append("")
    md = out.with_suffix(".md")
    md.write_text("\n".join(lines))
    return md
