"""Deployment export: ONNX files, integer tables, INT8, the torch-free decoder and its guarantees."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from codec import bitstream as bsf
from codec.api import decode_image, encode_image, pad_planes
from codec.color import to_tensor
from codec.images import load_rgb
from codec.metrics import psnr_rgb

ROOT = Path(__file__).resolve().parent.parent
TEST_STUDENT = ROOT / "runs" / "test-export-student" / "student-1k.safetensors"
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_WAIT_POLICY": "PASSIVE"}


@pytest.fixture(scope="module")
def student():
    """student-1k after a 30-step training run (done once, cached under runs/)."""
    from codec.weights import load_model

    if not TEST_STUDENT.is_file():
        subprocess.run([sys.executable, "-m", "distill", "--student", "student-1k", "--no-kd", "--steps", "30",
                        "--run-dir", str(TEST_STUDENT.parent), "--threads", "1", "--quiet", "--fresh"],
                       cwd=ROOT, env=ENV, check=True, stdout=subprocess.DEVNULL)
    return load_model(str(TEST_STUDENT))


@pytest.fixture(scope="module")
def exported(student, tmp_path_factory):
    """The student exported with INT8 copies and ORT-format files."""
    from export.exporter import export_model

    out = tmp_path_factory.mktemp("export-student")
    export_model(student, out, int8=True, calib=4, log=lambda *_: None)
    return out


def _manifest(d: Path) -> dict:
    return json.loads((d / "manifest.json").read_text())


def test_files_manifest_and_onnx_checker(student, exported):
    from codec.weights import model_id
    from export.nets import DECODER_NETS

    m = _manifest(exported)
    assert m["model_id"] == model_id(student).hex() and m["multiple"] == 64 and m["opset"] >= 17
    assert m["channels"]["y"] == student.cfg.y_channels and m["skip_index"] == student.cfg.skip_index
    for name in ("hyper_decoder_y", "hyper_decoder_uv", "context_y", "context_uv", "fusion_y", "fusion_uv",
                 "synthesis", "analysis", "hyper_analysis"):
        net = m["networks"][name]
        for file in (net["file"], net["int8"]) if name in DECODER_NETS else (net["file"],):
            model = onnx.load(str(exported / file))
            onnx.checker.check_model(model, full_check=True)
            graph_inputs = {i.name: i.type.tensor_type.shape.dim for i in model.graph.input}
            for port in net["inputs"]:
                dims = graph_inputs[port["name"]]
                assert dims[1].dim_value == port["shape"][1]
                assert dims[2].dim_param and dims[3].dim_param, f"{file}: H and W must be dynamic"
        assert net["max_abs_err"] < 1e-4, name
    y_hat = {"name": "y_hat", "shape": [1, m["channels"]["y"], "H/16", "W/16"]}
    assert m["networks"]["fusion_uv"]["inputs"][2] == y_hat
    for f in ("scale_decoder.npz", "cdf_z.npz", "cdf_residual.npz", "rate.npz"):
        assert (exported / f).is_file()
    with np.load(exported / "scale_decoder.npz") as a:
        assert a["w0"].dtype == np.int8 and a["b0"].dtype == np.int32
    with np.load(exported / "rate.npz") as a:
        assert a["gain_steps"].shape == (student.num_qualities, student.cfg.y_channels + student.cfg.uv_channels)


def test_ort_matches_torch_on_a_real_picture(student, exported, eval_paths):
    from export.nets import build_specs, net_inputs
    from export.to_onnx import max_abs_error

    y, uv = pad_planes(to_tensor(load_rgb(eval_paths[0])), 64)
    feeds = net_inputs(student, y, uv, 2)
    specs = build_specs(student)
    m = _manifest(exported)
    for name, spec in specs.items():
        assert max_abs_error(spec, exported / m["networks"][name]["file"], feeds[name]) < 1e-4, name


def test_numpy_scale_decoder_is_exact(student, exported):
    from export.intnp import IntScaleDecoder

    with np.load(exported / "scale_decoder.npz") as a:
        dec = IntScaleDecoder(a)
    rng = np.random.default_rng(1)
    for shape in ((1, 1), (4, 7)):
        z = rng.integers(-128, 128, (1, student.cfg.z_channels, *shape))
        ref = student.scale_decoder.int_forward(torch.from_numpy(z).float()).numpy()
        assert np.array_equal(dec(z[0]), ref[0])


def test_ort_format_files_load_and_run(exported):
    from export.to_onnx import session

    m = _manifest(exported)
    if m["ort_format"] is None:
        pytest.skip("ORT format conversion failed at export (see the export log)")
    files = m["ort_format"]["files"]
    assert len(files) == 16
    feed = {"y_hat": np.random.default_rng(0).normal(size=(1, m["channels"]["y"], 4, 6)).astype(np.float32),
            "uv_hat": np.random.default_rng(1).normal(size=(1, m["channels"]["uv"], 4, 6)).astype(np.float32)}
    ort_file = next(f for f in files if f.startswith("synthesis.") and "int8" not in f)
    a = session(exported / "ort" / ort_file).run(None, feed)
    b = session(exported / "synthesis.onnx").run(None, feed)
    assert all(np.abs(x - y).max() < 1e-5 for x, y in zip(a, b))


def _symbols_and_psnr(model, onnx_dir, paths, enc_threads, int8_too=True):
    """Encode with torch at ``enc_threads`` threads; decode with ONNX FP32 (and INT8) at 1 and 2 threads."""
    from export.runtime import OnnxDecoder

    decoders = {(i8, t): OnnxDecoder(onnx_dir, int8=i8, threads=t)
                for i8 in ((False, True) if int8_too else (False,)) for t in (1, 2)}
    for i, path in enumerate(paths):
        img = load_rgb(path)
        q = (i * 2 + enc_threads) % model.num_qualities
        prev = torch.get_num_threads()
        torch.set_num_threads(enc_threads)
        try:
            data = encode_image(model, img, q)
            y, uv = pad_planes(to_tensor(img), model.cfg.multiple)
            enc = model.encode_latents(y, uv, q)
        finally:
            torch.set_num_threads(prev)
        ref = psnr_rgb(img, decode_image(model, data))
        for (int8, threads), dec in decoders.items():
            out = dec.decode(data)
            where = f"{path.name} q{q} {'INT8' if int8 else 'FP32'} {threads} threads"
            assert np.array_equal(out.z, enc["z"].numpy()), where
            assert np.array_equal(out.index, enc["index"].numpy()), where
            assert np.array_equal(out.residual, enc["residual"].numpy()), where
            got = psnr_rgb(img, out.rgb)
            assert abs(got - ref) <= (1.0 if int8 else 0.1), (where, got, ref)


@pytest.mark.parametrize("enc_threads", [1, 2])
def test_symbols_identical_torch_encoder_onnx_decoder(student, exported, eval_paths, enc_threads):
    _symbols_and_psnr(student, exported, eval_paths[:3], enc_threads)


def test_teacher_cross_runtime(teacher, eval_paths, tmp_path):
    """The real-size model: FP32 export, symbols identical and PSNR within 0.1 dB of torch."""
    from export.exporter import export_model

    export_model(teacher, tmp_path, ort_format=False, encoder=False, log=lambda *_: None)
    _symbols_and_psnr(teacher, tmp_path, eval_paths[:2], 2, int8_too=False)


BLOCK_TORCH = textwrap.dedent("""
    import runpy, sys

    class BlockTorch:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "torchvision"):
                raise ImportError(name + " is blocked: the ONNX decoder must not import it")

    sys.meta_path.insert(0, BlockTorch())
    sys.argv = ["export.decode"] + sys.argv[1:]
    try:
        runpy.run_module("export.decode", run_name="__main__", alter_sys=True)
    finally:
        assert not any(m.split(".")[0] == "torch" for m in sys.modules)
""")


def test_decoder_cli_runs_without_torch(student, exported, eval_paths, tmp_path):
    from PIL import Image

    from export.runtime import OnnxDecoder

    img = load_rgb(eval_paths[1])
    bin_path = tmp_path / "a.bin"
    bin_path.write_bytes(encode_image(student, img, 3))
    (tmp_path / "block.py").write_text(BLOCK_TORCH)
    for flags in ([], ["--int8", "--threads", "2"]):
        r = subprocess.run([sys.executable, str(tmp_path / "block.py"), str(bin_path), "-o", str(tmp_path / "a.png"),
                            "--onnx", str(exported), *flags], env=ENV, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        out = np.asarray(Image.open(tmp_path / "a.png"))
        ref = OnnxDecoder(exported, int8="--int8" in flags).decode(bin_path.read_bytes()).rgb
        assert np.array_equal(out, ref)


def test_decode_keeps_numpy_blas_on_one_thread(student, exported, eval_paths):
    """OpenBLAS's idle threads spin: a decode must not start more, on one thread or several (those run synthesis
    tiles), and gives them back after."""
    from threadpoolctl import ThreadpoolController

    from export.runtime import OnnxDecoder

    def blas_threads() -> list[int]:
        return [c.num_threads for c in ThreadpoolController().select(user_api="blas").lib_controllers]

    before = blas_threads()
    if not before:
        pytest.skip("numpy without a BLAS library")
    seen = []

    class Watched:                           # the scale decoder, noting BLAS's threads at each call
        def __getattr__(self, name):
            return getattr(scale, name)

        def __call__(self, z):
            seen.append(blas_threads())
            return scale(z)
    data = encode_image(student, load_rgb(eval_paths[0])[:128, :192], 2)
    for threads in (1, 2):
        dec = OnnxDecoder(exported, threads=threads)
        scale, dec.scale_decoder = dec.scale_decoder, Watched()
        dec.decode(data)
    assert len(seen) == 2 and all(n == [1] * len(before) for n in seen)
    assert blas_threads() == before


def test_decoder_cli_one_line_errors(student, teacher, exported, eval_paths, tmp_path, capsys):
    from export.decode import main

    img = load_rgb(eval_paths[0])[:40, :70]
    good = encode_image(student, img, 1)
    (tmp_path / "good.bin").write_bytes(good)
    (tmp_path / "short.bin").write_bytes(good[:30])
    (tmp_path / "other.bin").write_bytes(encode_image(teacher, img, 1))
    bs = bsf.unpack(good)
    (tmp_path / "q.bin").write_bytes(bsf.pack(bsf.Bitstream(bs.model_id, 99, bs.height, bs.width, bs.streams)))
    (tmp_path / "empty.bin").write_bytes(bsf.pack(bsf.Bitstream(bs.model_id, 1, bs.height, bs.width, (b"", b""))))
    cases = {"short.bin": "truncated", "other.bin": "another model", "q.bin": "rate point 99",
             "missing.bin": "no such file", "empty.bin": "corrupt"}
    for name, words in cases.items():
        assert main([str(tmp_path / name), "-o", str(tmp_path / "x.png"), "--onnx", str(exported)]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and len(err.splitlines()) == 1 and words in err.lower(), err
    assert main([str(tmp_path / "good.bin"), "-o", str(tmp_path / "x.png"), "--onnx", str(tmp_path)]) == 1
    assert "manifest.json" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
    assert main([str(tmp_path / "good.bin"), "-o", str(tmp_path / "x.png"), "--onnx", str(exported)]) == 0
    assert np.asarray(__import__("PIL.Image").Image.open(tmp_path / "x.png")).shape == img.shape


def test_bench_writes_reports(student, exported, tmp_path):
    from export.bench import main

    out = tmp_path / "deployment"
    assert main(["--model", str(TEST_STUDENT), "--onnx", str(exported), "--int8", "-n", "1", "--threads", "1",
                 "--out", str(out)]) == 0
    res = json.loads(out.with_suffix(".json").read_text())
    assert [r["precision"] for r in res["runs"]] == ["FP32", "INT8"]
    assert res["width"] == 768 and res["height"] == 512
    assert "| ONNX INT8 | 1 |" in out.with_suffix(".md").read_text()


def test_qat_changes_decoder_weights_and_int8_symbols_stay_identical(student, eval_paths, tmp_path, capsys):
    """Two QAT steps move only the decoder-side networks; their INT8 export decodes the QAT model's
    bitstreams with the torch encoder's symbols."""
    from photos import train_images
    from codec.weights import load_model, model_id
    from export.exporter import export_model
    from export.qat import TRAINED, main, qat_finetune

    model = load_model(str(TEST_STUDENT))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    qat_finetune(model, 2, train_images()[:2], tmp_path / "run", batch=2, crop=64, progress=False, calib=2)
    after = model.state_dict()
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert changed and changed <= set(TRAINED), changed
    assert model_id(model) != model_id(load_model(str(TEST_STUDENT)))     # a new model, its own id
    export_model(model, tmp_path / "onnx", int8=True, calib=2, ort_format=False, encoder=False, log=lambda *_: None)
    _symbols_and_psnr(model, tmp_path / "onnx", eval_paths[:1], 1)
    capsys.readouterr()
    assert main(["--model", "no-such-model", "-o", str(tmp_path / "x.safetensors")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1


def test_deployment_table_rows(student, tmp_path, monkeypatch, capsys):
    """python -m export.bench --row ...: accuracy from real bitstreams, sizes and decode times per row."""
    import export.cache as export_cache
    from export.bench import main

    monkeypatch.setattr(export_cache, "CACHE", tmp_path / "cache")
    out = tmp_path / "table"
    assert main(["--row", f"s={TEST_STUDENT}", "--row", f"s-int8={TEST_STUDENT}:int8", "--images", "1", "-n", "1",
                 "--out", str(out)]) == 0
    res = json.loads(out.with_suffix(".json").read_text())
    s, s8 = res["rows"]
    assert s["vs_anchor"]["codec"] == s["vs_anchor"]["anchor"] == "s" and s8["int8"] and not s["int8"]
    assert s["bytes"] == s8["bytes"] and s["weights_bytes"] == TEST_STUDENT.stat().st_size
    assert s8["decoder_bytes"] < s["decoder_bytes"] and s8["torch_ms"] == {} and set(s["torch_ms"]) == {"1", "2"}
    assert all(ms > 0 for r in (s, s8) for ms in r["onnx_ms"].values())
    assert "| s-int8 | ONNX INT8 |" in out.with_suffix(".md").read_text()
    capsys.readouterr()
    for argv in (["--row", "no-equals"], ["--row", "a=student-1k", "--anchor", "b"], []):
        assert main(argv) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and len(err.splitlines()) == 1, err


def test_refined_stream_decodes_alike_in_torch_and_onnx(student, exported, eval_paths):
    """A stream made with --effort (refined latents) is an ordinary stream: the torch-free ONNX decoder
    (FP32 and INT8) reads it to the torch decoder's picture."""
    from codec.refine import Effort, refine_latents
    from codec.weights import model_id
    from export.runtime import OnnxDecoder

    img = np.ascontiguousarray(load_rgb(eval_paths[2])[:128, :128])
    y, uv = pad_planes(to_tensor(img), student.cfg.multiple)
    found = refine_latents(student, y, uv, 2, Effort("test", iterations=8, time_limit_s=60), size=(128, 128))
    streams, _ = student.compress_planes(y, uv, 2, latents=found.latents)
    data = bsf.pack(bsf.Bitstream(model_id(student), 2, 128, 128, tuple(streams)))
    assert data != encode_image(student, img, 2)
    ref = decode_image(student, data)
    for int8 in (False, True):
        got = OnnxDecoder(exported, int8=int8).decode(data).rgb
        assert got.shape == ref.shape
        if int8:
            assert abs(psnr_rgb(img, got) - psnr_rgb(img, ref)) < 1.0
        else:
            assert np.abs(got.astype(int) - ref.astype(int)).max() <= 1


def test_cached_export_is_redone_when_an_earlier_exporter_wrote_it(tmp_path):
    """runs/onnx-cache entries from an earlier exporter revision are re-exported, not fed to today's decoder."""
    from codec.weights import load_model
    from export.cache import cached_export
    from export.exporter import EXPORT_REVISION

    model = load_model("student-1k")
    out = cached_export(model, cache=tmp_path)
    manifest = out / "manifest.json"
    m = json.loads(manifest.read_text())
    m["export_revision"] = EXPORT_REVISION - 1
    manifest.write_text(json.dumps(m))
    assert cached_export(model, cache=tmp_path) == out
    assert json.loads(manifest.read_text())["export_revision"] == EXPORT_REVISION


@pytest.fixture(scope="module")
def gmm_student(student, tmp_path_factory):
    """student-1k+gmm: the test student's weights (partial load), the mixture moved off its Gaussian start and
    the global context's zero last layer made non-zero (offsets of a few tenths), tables rebaked, saved and
    loaded back. Returns (model, weights path)."""
    from codec.registry import create_model
    from codec.weights import load_model, load_weights, rate_points_of, save_weights

    model = create_model("student-1k+gmm").set_rate_points(rate_points_of(TEST_STUDENT))
    load_weights(model, TEST_STUDENT, partial=True)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        model.gaussian_conditional.logits.copy_(torch.tensor([2.0, 0.5, 0.0]))
        model.gaussian_conditional.shift.copy_(torch.tensor([0.0, 0.3, -0.2]))
        last = model.global_context.net[-1]
        last.weight.normal_(0, 0.01, generator=g)
        last.bias.normal_(0, 0.1, generator=g)
    model.update(force=True)
    path = save_weights(model, tmp_path_factory.mktemp("gmm") / "student-1k+gmm.safetensors")
    return load_model(str(path)), path


def test_gmm_model_exports_and_decodes_with_the_encoders_symbols(student, gmm_student, eval_paths, tmp_path,
                                                                 monkeypatch):
    """python -m export on student-1k+gmm: the mixture's baked tables are the residual tables, the global
    context one more (FP32) network; torch-encoded streams decode in ONNX (FP32, INT8) with the encoder's
    symbols, its offsets added where torch adds them, and the same latents in bands of z rows as on the whole
    grid; a stream of the base model is refused."""
    import export.runtime
    from export.__main__ import main
    from export.runtime import ExportError, OnnxDecoder

    model, path = gmm_student
    out = tmp_path / "onnx"
    assert main(["--model", str(path), "-o", str(out), "--int8", "--calib", "4",
                 "--threads", str(torch.get_num_threads())]) == 0
    m = _manifest(out)
    net = m["networks"]["global_context"]
    assert m["options"] == ["gmm"] and m["model"] == "student-1k+gmm" and "global_context" in m["decoder_networks"]
    assert m["version"] == 2      # a version-1 decoder refuses it instead of decoding without the offsets
    assert net["outputs"][0]["shape"] == [1, model.cfg.y_channels + model.cfg.uv_channels, 1, 1]
    assert net["max_abs_err"] < 1e-4 and net["int8_recipe"]["format"] == "FP32 (not quantised)"
    if m["ort_format"] is not None:
        assert {"global_context.with_runtime_opt.ort", "global_context.int8.with_runtime_opt.ort"} <= set(
            m["ort_format"]["files"])
    gc = model.gaussian_conditional
    with np.load(out / "cdf_residual.npz") as a:
        assert np.array_equal(a["cdf"], gc._quantized_cdf.numpy()) and np.array_equal(a["length"], gc._cdf_length)
        assert np.array_equal(a["offset"], gc._offset)
        assert a["cdf"].shape[1] != student.gaussian_conditional._quantized_cdf.shape[1]   # not the Gaussian's
    _symbols_and_psnr(model, out, eval_paths[:2], 1)
    # The offsets matter and are added where torch adds them: whole-picture planes as torch's, not without them.
    img = load_rgb(eval_paths[0])
    data = encode_image(model, img, 2)
    y, uv = pad_planes(to_tensor(img), model.cfg.multiple)
    (ty, _), _ = model.decompress_streams(list(bsf.unpack(data).streams), 2, tuple(y.shape[-2:]))
    dec = OnnxDecoder(out, tile=None)
    ref = ty[0, 0, : img.shape[0], : img.shape[1]].numpy()
    err = lambda: float(np.abs(dec.decode(data).y - ref).max())  # noqa: E731
    with_offsets = err()
    assert np.array_equal(OnnxDecoder(out, tile=128).decode(data).rgb, dec.decode(data).rgb)   # tiles: one offset
    assert m["bands"]["halo"] >= 1 and dec.halo == m["bands"]["halo"]
    monkeypatch.setattr(export.runtime, "BAND_Z", 1)      # one z row per band, with the halo around it
    banded = dec.decode(data).y
    dec.halo = None
    assert np.array_equal(dec.decode(data).y, banded)
    dec.global_context = False
    assert with_offsets < 1e-3 < err(), with_offsets
    with pytest.raises(bsf.BitstreamError, match="another model"):
        OnnxDecoder(out).decode(encode_image(student, img[:64, :64], 1))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "manifest.json").write_text(json.dumps({**m, "options": ["gmm", "hda"]}))
    with pytest.raises(ExportError, match="option hda is not implemented"):
        OnnxDecoder(tmp_path / "other")
    (tmp_path / "other" / "manifest.json").write_text(json.dumps({**m, "version": 1}))
    with pytest.raises(ExportError, match="version-1 manifest"):
        OnnxDecoder(tmp_path / "other")


def test_ctxscale_model_codes_decodes_and_exports_with_the_encoders_symbols(student, eval_paths, tmp_path):
    """student-1k+ctxscale with a non-identity table: three streams (z, anchors, non-anchors); the torch
    decoder and the ONNX decoder (FP32, 1 and 2 threads) get the encoder's symbols and moved indices; a
    two-stream file is refused; a base-model stream is refused."""
    from codec.registry import create_model
    from codec.weights import load_model, load_weights, rate_points_of, save_weights
    from export.__main__ import main
    from export.runtime import OnnxDecoder

    model = create_model("student-1k+ctxscale").set_rate_points(rate_points_of(TEST_STUDENT))
    load_weights(model, TEST_STUDENT, partial=True)
    rng = np.random.default_rng(0)
    lut = rng.integers(-2, 3, tuple(model.scale_context.lut.shape)).astype(np.int8)
    model.scale_context.set_table(lut, np.array([[0, 2, 4, 8, 16, 32, 64, 128]] * 2))
    path = save_weights(model, tmp_path / "student-1k+ctxscale.safetensors")
    model = load_model(str(path))
    img = load_rgb(eval_paths[0])[:128, :192]
    y, uv = pad_planes(to_tensor(img), model.cfg.multiple)
    streams, st = model.compress_planes(y, uv, 1)
    assert len(streams) == 3
    base_index, _, _ = model._index(st["z"].float(), 1)
    assert not torch.equal(st["index"], base_index)   # the table moved some non-anchor tables
    (_, _), dec = model.decompress_streams(streams, 1, tuple(y.shape[-2:]))
    assert torch.equal(dec["residual"].long(), st["residual"]) and torch.equal(dec["index"].long(), st["index"].long())
    with pytest.raises(bsf.BitstreamError, match="expected 3 coded streams"):
        model.decompress_streams(streams[:2], 1, tuple(y.shape[-2:]))
    out = tmp_path / "onnx"
    assert main(["--model", str(path), "-o", str(out), "--no-ort", "--decoder-only",
                 "--threads", str(torch.get_num_threads())]) == 0
    m = _manifest(out)
    assert m["options"] == ["ctxscale"] and m["version"] == 2 and m["scale_context"]["file"] == "scale_context.npz"
    _symbols_and_psnr(model, out, eval_paths[:2], 1, int8_too=False)
    with pytest.raises(bsf.BitstreamError, match="another model"):
        OnnxDecoder(out).decode(encode_image(student, img[:64, :64], 1))
