"""Write a model's deployment directory: ONNX networks, integer tables, INT8 copies, ORT format, manifest."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from codec.api import pad_planes
from codec.bands import band_halo
from codec.color import to_tensor
from codec.entropy import LOG_STEP, SCALE_LEVELS, SCALE_MAX, SCALE_MIN
from codec.tiling import ONNX_TILE, probe_footprints
from codec.weights import model_id

from .crops import add_crops
from .nets import EXPORTABLE_OPTIONS, build_specs, decoder_nets, net_inputs
from .runtime import FORMAT, MANIFEST
from .tables import write_tables
from .to_onnx import OPSET, export_net, max_abs_error

# What this exporter writes, beyond the version-1 format the decoder reads: 2 = tile footprints and in-graph
# crops, the context computed on the 2x2 phases, ShuffleUp / ChannelPermute synthesis; 3 = a linear luma tail
# folded into two transposed convolutions (LinearTail); 4 = the latent-grid networks' band halo ("bands").
# The decoder reads version-1 exports of earlier exporters too (revision 1 whole-picture only; before 4 the
# latent grid whole).
EXPORT_REVISION = 4


def check_picture(seed: int = 0, size: tuple[int, int] = (192, 256)) -> np.ndarray:
    """A smooth test picture (no data needed) whose size differs from the export example's."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0: size[0], 0: size[1]] / 32.0
    img = np.stack([np.sin(xx + c) * np.cos(yy * (c + 1)) for c in range(3)], -1) * 0.4 + 0.5
    img += rng.normal(0, 0.03, img.shape)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def export_model(model, out: str | Path, int8: bool = False, calib: int = 16, ort_format: bool = True,
                 encoder: bool = True, log=print) -> dict:
    """Export ``model`` (a loaded YUVCodec) into ``out``; returns the manifest (also written there).

    ``int8``: also INT8 copies of the decoder networks, calibrated on ``calib`` training crops;
    ``encoder``: also the encoder-side networks (analysis, hyper analysis)."""
    options = tuple(getattr(model, "options", ()))
    other = [o for o in options if o not in EXPORTABLE_OPTIONS]
    if other:
        raise ValueError(f"cannot export {model.name}: export/ builds only the base networks and the option "
                         f"modules {'+'.join(EXPORTABLE_OPTIONS)}, not {'+'.join(other)} (codec.modules)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # ORT warns at load that the crop bounds (export/crops.py) are initializers that are also inputs:
    # they are, on purpose (overridable defaults).
    ort.set_default_logger_severity(3)
    decoder = decoder_nets(model)
    specs = {k: v for k, v in build_specs(model.eval()).items() if encoder or k in decoder}
    y, uv = pad_planes(to_tensor(check_picture()), model.cfg.multiple)
    q_check = model.num_qualities // 2
    checks = net_inputs(model, y, uv, q_check)
    networks = {}
    channels = (model.cfg.y_channels, model.cfg.uv_channels)
    for name, spec in specs.items():
        path = export_net(spec, out / f"{name}.onnx")
        crops = add_crops(path, spec.module, channels) if name == "synthesis" else None
        err = max_abs_error(spec, path, checks[name])
        log(f"{path.name:24s} {path.stat().st_size / 1024:9.1f} KiB  checker ok  ORT vs torch max abs err {err:.2e}"
            + (f"  (tile crops at {len(crops['levels'])} levels)" if crops else ""))
        networks[name] = {"file": path.name, "side": spec.side, "int8": None, "max_abs_err": err,
                          "inputs": [{"name": p.name, "shape": p.shape()} for p in spec.inputs],
                          "outputs": [{"name": p.name, "shape": p.shape()} for p in spec.outputs]}
        if crops:
            networks[name]["crops"] = crops
    manifest = {
        # version 2 when the model has options: a decoder written for version 1 knows no global context
        # and must refuse the export rather than decode a picture without its mean offsets
        "format": FORMAT, "version": 2 if options else 1, "export_revision": EXPORT_REVISION,
        "model": model.name, "model_id": model_id(model).hex(), "bitstream_version": 1,
        "options": list(options),
        "opset": OPSET, "multiple": model.cfg.multiple,
        "rate_points": model.num_qualities, "lambdas": list(model.cfg.lambdas),
        "channels": {"y": model.cfg.y_channels, "uv": model.cfg.uv_channels, "z": model.cfg.z_channels,
                     **{f"{k}_{b}": specs[f"{net}_{b}"].outputs[0].channels for b in ("y", "uv")
                        for k, net in (("hyper", "hyper_decoder"), ("ctx", "context"))}},
        "skip_index": model.cfg.skip_index,
        "scale_table": {"min": SCALE_MIN, "max": SCALE_MAX, "levels": SCALE_LEVELS, "log_step": LOG_STEP,
                        "scale": "min * exp(log_step * index)", "gain": "exp(log_step * gain_steps[q])"},
        "colour": "YCbCr BT.709 full range, 4:2:0, chroma sited at the centre of each 2x2 luma block",
        "decoder_networks": list(decoder), "encoder_networks": [n for n in specs if n not in decoder],
        "networks": networks,
        "error_check": f"max_abs_err: ORT vs torch on a {y.shape[-1]}x{y.shape[-2]} synthetic picture, "
                       f"rate point {q_check}, every input the codec feeds (both checkerboard passes)",
        "context": "computed on the 2x2 phases (export.nets.PackedContext); zero at the anchors",
        "tiling": {"footprints": {k: f.to_json() for k, f in probe_footprints(
                       specs["synthesis"].module, channels).items()},
                   "default_tile": ONNX_TILE,
                   "rule": "codec/tiling.py: output pixels [p0, p1) of a plane need latent cells "
                           "[ceil((p0 - hi) / scale), floor((p1 - 1 - lo) / scale) + 1), per axis"},
    }
    halo = band_halo(model)
    if halo is not None:
        manifest["bands"] = {"halo": halo, "rule": "codec/bands.py: the hyper decoders, context and fusion "
                             "of z rows [z0, z1) need z rows [z0 - halo, z1 + halo) (and those latent rows)"}
    manifest.update(write_tables(model, out))
    _check_scale_decoder(model, out / "scale_decoder.npz", checks["hyper_decoder_y"][0]["z"])
    log("scale_decoder.npz, cdf_z.npz, cdf_residual.npz, rate.npz written; numpy scale decoder == torch (exact)")
    if int8:
        from .int8 import RECIPES_REVISION
        _int8(model, specs, decoder, out, networks, checks, calib, log)
        manifest["int8_revision"] = RECIPES_REVISION
    files = [n[k] for n in networks.values() for k in ("file", "int8") if n.get(k)]
    manifest["ort_format"] = _ort_format(out, files, log) if ort_format else None
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1))
    log(f"{out / MANIFEST} written ({model.name}, id {manifest['model_id']})")
    return manifest


@torch.no_grad()
def _check_scale_decoder(model, path: Path, z: np.ndarray) -> None:
    """The numpy integer decoder must give torch's integers exactly, on real and on extreme inputs."""
    from .intfast import FastIntScaleDecoder
    from .intnp import IntScaleDecoder

    with np.load(path) as a:
        dec = IntScaleDecoder(a)
    fast = FastIntScaleDecoder(dec)
    rng = np.random.default_rng(0)
    extreme = rng.integers(-128, 128, (1, z.shape[1], 3, 5))
    corners = rng.choice(np.array([-128, 0, 127]), (1, z.shape[1], 4, 6))
    for zi in (z, extreme, corners):
        ref = model.scale_decoder.int_forward(torch.from_numpy(zi).float()).numpy()
        if not (np.array_equal(dec(zi[0]), ref[0]) and np.array_equal(fast(zi[0]), ref[0])):
            raise RuntimeError("numpy integer scale decoder disagrees with codec.intnet: export aborted")


def _int8(model, specs, decoder, out: Path, networks: dict, checks: dict, calib: int, log) -> None:
    from .int8 import calibration_crops, calibration_samples, quantize, recipe_for

    samples = calibration_samples(model, calibration_crops(calib))
    for name in decoder:
        path = quantize(out / f"{name}.onnx", out / f"{name}.int8.onnx", samples[name], name)
        onnx.checker.check_model(onnx.load(str(path)), full_check=True)
        err = max_abs_error(specs[name], path, checks[name])
        networks[name].update(int8=path.name, int8_max_abs_err=err,
                              int8_recipe={**recipe_for(name).describe(), "calibration_crops": calib})
        kind = "INT8" if recipe_for(name).enabled else "FP32 copy (recipe keeps it float)"
        log(f"{path.name:24s} {path.stat().st_size / 1024:9.1f} KiB  checker ok  {kind} vs torch max abs err {err:.2e}")


def _ort_format(out: Path, files: list[str], log) -> dict | None:
    """Convert the ONNX files to ONNX Runtime's .ort format (ORT Mobile) under out/ort, with the operator
    list a reduced ORT build takes (``required_operators.with_runtime_opt.config``, for
    ``build.sh --include_ops_by_config``; export/mobile.py checks it).

    The "Runtime" optimisation style keeps the files portable: platform-specific fusions (x86 NCHWc
    layouts, say) are applied when the phone loads the model, not baked in here; ``--target_platform arm``
    lets the INT8 (QDQ) networks keep int8 kernels on ARM phones."""
    dest = out / "ort"
    shutil.rmtree(dest, ignore_errors=True)
    with tempfile.TemporaryDirectory() as tmp:
        for f in files:
            (Path(tmp) / f).symlink_to((out / f).resolve())
        r = subprocess.run([sys.executable, "-m", "onnxruntime.tools.convert_onnx_models_to_ort", tmp,
                            "--output_dir", str(dest), "--optimization_style", "Runtime", "--target_platform", "arm"],
                           capture_output=True, text=True)
    if r.returncode != 0:
        lines = [ln for ln in (r.stderr or r.stdout).strip().splitlines() if ln.strip()]
        log(f"ORT format conversion failed, skipped: {lines[-1] if lines else 'exit ' + str(r.returncode)}")
        return None
    configs = sorted(dest.glob("required_operators*.config"))
    for c in configs:   # the tool lists the converted files by their (temporary) absolute paths
        lines = c.read_text().splitlines()
        head = sorted({f"# - {Path(ln[4:]).name}" for ln in lines if ln.startswith("# - ")})
        c.write_text("\n".join(["# Generated from model/s:", *head, *(ln for ln in lines if not ln.startswith("#"))]) + "\n")
    files = sorted(p.name for p in dest.glob("*.ort"))
    log(f"ORT format: {len(files)} files in {dest}" + (f", operators in {configs[0].name}" if configs else ""))
    return {"dir": "ort", "files": files, "required_operators": configs[0].name if configs else None,
            "optimization_style": "Runtime", "target_platform": "arm",
            "session_options": {"session.enable_saved_runtime_optimizations": "1"}}
