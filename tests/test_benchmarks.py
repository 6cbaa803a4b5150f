"""Benchmark wiring: BD figures, bpp accounting, skipped codecs, the CLI (needs no Debian codec tools)."""
import csv

import numpy as np
import pytest
from PIL import Image

import benchmarks.selection as bselection
import evaluation.codecs as bcodecs
from benchmarks.__main__ import main
from evaluation.bdrate import bd_pair, bd_summary, rd_curve
from evaluation.codecs import PillowJPEG, WebP
from evaluation.rd import bits_per_pixel, measure
from benchmarks.selection import select_codecs

RATES = np.array([0.1, 0.2, 0.4, 0.8, 1.6])
PSNR = np.array([28.0, 31.5, 34.5, 37.0, 39.0])


def _image(h=48, w=64, seed=0):
    """A smooth gradient plus texture: compresses like a photo, more bytes at higher quality."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (h + w)], -1)
    return np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)


def _rows(codec, image, rates, psnrs):
    return [{"codec": codec, "image": image, "quality": i, "bpp": r, "psnr_rgb": p, "psnr_yuv": p,
             "ms_ssim": 1 - 10 ** (-p / 10)} for i, (r, p) in enumerate(zip(rates, psnrs))]


def test_bd_rate_of_scaled_rates_is_minus_20_percent():
    rate, quality = bd_pair((RATES, PSNR), (RATES * 0.8, PSNR))
    assert rate == pytest.approx(-20.0, abs=0.1)
    assert quality > 0


def test_bd_psnr_of_shifted_curve_is_plus_1_db():
    rate, quality = bd_pair((RATES, PSNR), (RATES, PSNR + 1.0))
    assert quality == pytest.approx(1.0, abs=1e-6)
    assert rate < 0


def test_bd_summary_averages_over_images_and_counts_skipped_pairs():
    rows = (_rows("jpeg", "a", RATES, PSNR) + _rows("x", "a", RATES * 0.8, PSNR)
            + _rows("jpeg", "b", RATES, PSNR) + _rows("x", "b", RATES * 0.6, PSNR)
            + _rows("jpeg", "c", RATES, PSNR) + _rows("x", "c", RATES * 100, PSNR + 30))  # no overlap
    for metric in ("psnr_rgb", "psnr_yuv", "ms_ssim"):
        s = bd_summary(rows, "jpeg", "x", metric)
        assert s["bd_rate"] == pytest.approx((-20.0 - 40.0) / 2, abs=0.1)
        assert (s["n_images"], s["n_skipped"]) == (2, 1)
    assert bd_summary(rows, "jpeg", "x", "psnr_yuv", images=["a"])["bd_rate"] == pytest.approx(-20, abs=0.1)


def test_rd_curve_keeps_only_improving_points():
    rows = _rows("x", "a", [0.4, 0.1, 0.2, 0.3], [30.0, 25.0, 27.0, 26.0])
    rates, dists = rd_curve(rows, "psnr_yuv")
    assert rates.tolist() == [0.1, 0.2, 0.4] and dists.tolist() == [25.0, 27.0, 30.0]


def test_bpp_is_file_bytes_times_8_over_pixels(tmp_path):
    rgb = _image(23, 37)  # odd sizes: pixels are the real picture's
    path = PillowJPEG().encode(rgb, 50, tmp_path)
    nbytes = path.stat().st_size
    assert bits_per_pixel(nbytes, 23, 37) == nbytes * 8 / (23 * 37)
    row = measure(PillowJPEG(), rgb, 50, "img")
    assert row["bytes"] == nbytes
    assert row["bpp"] == pytest.approx(nbytes * 8 / (23 * 37))
    assert row["psnr_rgb"] > 20 and row["decode_s"] >= 0


def test_pillow_jpeg_sweep_is_monotone_in_bytes(tmp_path):
    rgb, codec = _image(), PillowJPEG()
    sizes = [codec.encode(rgb, q, tmp_path).stat().st_size for q in codec.qualities]
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)
    with Image.open(codec.encode(rgb, 50, tmp_path)) as im:
        from PIL import JpegImagePlugin
        assert JpegImagePlugin.get_sampling(im) == 2  # 4:2:0


def test_missing_tool_is_skipped_with_a_reason(monkeypatch):
    monkeypatch.setattr(bcodecs.shutil, "which", lambda name: None)
    monkeypatch.setattr(bselection, "learned_codecs", lambda *args, **kwargs: [])
    ok, reason = WebP().available()
    assert not ok and "cwebp" in reason and "apt-get install -y webp" in reason
    usable, skipped = select_codecs(["webp"])
    assert [c.name for c in usable] == ["jpeg"]  # the always-available anchor is added
    assert "webp" in skipped and "hevc" in skipped and "x265" in skipped["hevc"]
    with pytest.raises(ValueError, match="unknown codec"):
        select_codecs(["nosuchcodec"])


def test_models_named_by_weights_and_int8_join_a_codec_list():
    """`rd --codecs A --int8 A-int8=A` runs A-int8 too: naming a model by --weights or --int8 asks for it."""
    usable, _ = select_codecs(["student-1k"], weights={"s-old": "weights/student-1k.safetensors"},
                              int8={"s-int8": "student-1k"})
    assert {"student-1k", "s-old", "s-int8", "jpeg"} <= {c.name for c in usable}
    assert "student-2k" not in {c.name for c in usable}


def test_cli_runs_end_to_end_and_reports_skips(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bcodecs.shutil, "which", lambda name: None)
    monkeypatch.setattr(bselection, "learned_codecs", lambda *args, **kwargs: [])
    data, out = tmp_path / "data", tmp_path / "results"
    data.mkdir()
    for i in range(2):
        Image.fromarray(_image(40, 56, seed=i)).save(data / f"img{i}.png")
    assert main(["rd", "--data", str(data), "--codecs", "webp", "--out", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "skipped webp:" in err and "skipped hevc:" in err
    with open(out / "rd.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * len(PillowJPEG.qualities) and {r["codec"] for r in rows} == {"jpeg"}
    md = (out / "rd.md").read_text()
    assert "| jpeg |" in md and "## Skipped codecs" in md and "- webp:" in md
    for name in ("rd.json", "bd.csv", "rd_curves.png", "complexity_vs_bdrate.png"):
        assert (out / name).stat().st_size > 0
    assert main(["report", "--out", str(out)]) == 0


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["rd", "--data", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err


def test_ceiling_cli_writes_its_table_and_skips_missing_tools(tmp_path, monkeypatch, capsys):
    import json
    monkeypatch.setattr(bcodecs.shutil, "which", lambda name: None)   # no cwebp: WebP's columns stay empty
    data, out = tmp_path / "data", tmp_path / "ceiling"
    data.mkdir()
    Image.fromarray(_image(96, 128)).save(data / "img0.png")
    assert main(["ceiling", "--models", "student-1k", "--data", str(data), "--crop", "64", "--iterations", "4",
                 "--stages", "2", "--out", str(out), "--quiet"]) == 0
    assert "skipped webp:" in capsys.readouterr().err
    (row,) = json.loads((out / "ceiling.json").read_text())["rows"]
    assert row["crop"] == [64, 64] and row["webp_best_psnr"] is None and row["jpeg_best_bpp"] > row["top_bpp"]
    assert row["ceiling_psnr"] >= row["encoder_psnr"] - 0.05   # the best iterate, the encoder's among them
    assert len(row["luma_stage_psnr"]) == 4 and "luma ceiling by stage" in (out / "ceiling.md").read_text()
    assert "| img0 | student-1k |" in (out / "ceiling.md").read_text() and (out / "ceiling.png").stat().st_size > 0
    assert main(["ceiling", "--crop", "8", "--out", str(out)]) == 1


def test_pruned_and_int8_rows_with_torch_and_onnx_decode_times(tmp_path, monkeypatch):
    """--weights runs a pruned model, --int8 the ONNX INT8 decoder on the same bitstreams; torch-decoded
    models also get ONNX FP32 decode times; the table shows decoder, both times and kMAC/px."""
    import json

    import export.cache as export_cache
    from codec.registry import create_model
    from codec.weights import save_weights
    from distill import prune as P

    monkeypatch.setattr(bcodecs.shutil, "which", lambda name: None)
    monkeypatch.setattr(export_cache, "CACHE", tmp_path / "cache")
    model = create_model("student-1k").eval()
    model.update(force=True)
    plain = save_weights(model, tmp_path / "s.safetensors")
    stream = next(s for s in P.find_streams(model) if len(s.units) >= 2)
    P.apply_steps(model, [{"root": stream.root, "idxs": stream.units[0]}])
    pruned = save_weights(model, tmp_path / "p.safetensors")
    data, out = tmp_path / "data", tmp_path / "results"
    data.mkdir()
    for i in range(2):
        Image.fromarray(_image(40, 56, seed=i)).save(data / f"img{i}.png")
    assert main(["rd", "--data", str(data), "--codecs", "s,s-pruned,s-int8", "--weights", f"s={plain}",
                 "--weights", f"s-pruned={pruned}", "--int8", f"s-int8={plain}", "--out", str(out),
                 "--quiet"]) == 0
    res = json.loads((out / "rd.json").read_text())
    rows = {c: [r for r in res["rows"] if r["codec"] == c] for c in ("s", "s-pruned", "s-int8")}
    assert all(len(v) == 2 * 6 for v in rows.values())
    assert all(r["decode_onnx_s"] > 0 for r in rows["s"] + rows["s-pruned"])
    assert all(r.get("decode_onnx_s") is None for r in rows["s-int8"])
    assert [r["bytes"] for r in rows["s-int8"]] == [r["bytes"] for r in rows["s"]]    # the same bitstreams
    info = res["meta"]["codecs"]
    assert info["s-int8"]["decoder"] == "ONNX INT8" and info["s"]["decoder"] == "torch"
    assert info["s-pruned"]["kmac_px"] < info["s"]["kmac_px"] == info["s-int8"]["kmac_px"]
    md = (out / "rd.md").read_text()
    assert "ONNX FP32 decode ms (wall/CPU)" in md and "| s-int8 | 4:2:0 |" in md and "ONNX INT8" in md
    assert main(["rd", "--data", str(data), "--int8", "no-equals-sign", "--out", str(out)]) == 1


def test_report_compares_against_an_extra_anchor():
    """`python -m benchmarks report --anchor NAME`: every codec's BD-rate against NAME too (e.g. a model's
    previous weights), over the rates both curves cover."""
    import math

    from benchmarks.report import compute_bd

    rows = []
    for codec, factor in (("jpeg", 1.0), ("old", 0.8), ("new", 0.7)):
        for i, bpp in enumerate((0.2, 0.4, 0.8, 1.6)):
            rows.append({"codec": codec, "image": "kodim23", "bpp": bpp * factor, "psnr_yuv": 28.0 + 3 * i,
                         "psnr_rgb": 28.0 + 3 * i, "ms_ssim": 0.9 + 0.02 * i})
    result = {"meta": {"extra_anchors": ["old"]}, "rows": rows}
    bd = compute_bd(result)
    new_vs_old = [b for b in bd if b["anchor"] == "old" and b["codec"] == "new" and b["metric"] == "psnr_yuv"]
    assert new_vs_old and math.isclose(new_vs_old[0]["bd_rate"], -12.5, abs_tol=0.5)
    assert not any(b["anchor"] == "new" for b in bd)


def test_report_splits_a_models_curve_into_its_lower_and_upper_rate_points():
    """rd.md's "By rate" table: a model as good as JPEG at its low rates and 20% smaller at its high ones
    reads ~0% on its lower half and ~-20% on its upper half."""
    from benchmarks.report import by_rate

    rows = []
    for codec, factors in (("jpeg", [1.0] * 6), ("m", [1.0, 1.0, 1.0, 0.8, 0.8, 0.8])):
        for q, (bpp, f) in enumerate(zip((0.1, 0.2, 0.4, 0.8, 1.6, 3.2), factors)):
            rows.append({"codec": codec, "image": "kodim23", "quality": q, "bpp": bpp * f, "psnr_yuv": 26.0 + 3 * q,
                         "psnr_rgb": 26.0 + 3 * q, "ms_ssim": 0.9})
    result = {"meta": {"codecs": {"jpeg": {"kind": "classical"}, "m": {"kind": "learned"}}}, "rows": rows}
    lines = by_rate(result)
    lower = next(l for l in lines if l.startswith("| m | lower: 0-2"))
    upper = next(l for l in lines if l.startswith("| m | upper: 3-5"))
    assert abs(float(lower.split("|")[3].split("%")[0])) < 0.5
    assert abs(float(upper.split("|")[3].split("%")[0]) + 20.0) < 1.0


def test_error_structure_tells_flat_from_textured_and_low_from_high_frequencies():
    """A smooth offset on the flat half shows in the flat MSE and the low-frequency share; fine noise on the
    textured half shows in the textured MSE at high frequencies."""
    from benchmarks.errors import error_structure
    rng = np.random.default_rng(0)
    ref = np.full((64, 64, 3), 120, np.uint8)
    ref[:, 32:] = rng.integers(40, 200, (64, 32, 3), dtype=np.uint8)   # left half flat, right half textured
    same = error_structure(ref, ref)
    assert same["mse_flat"] == 0 and same["mse_textured"] == 0 and same["ms_ssim"] > 0.999
    smooth = ref.copy()
    smooth[:, :32] += 6
    s = error_structure(ref, smooth)
    assert s["mse_flat"] > 20 and s["mse_textured"] < 1 and s["low_freq_share"] > 0.5 and s["psnr_u"] > s["psnr_y"]
    noisy = ref.astype(int)
    noisy[:, 32:] += np.where((np.indices((64, 32)).sum(0) % 2)[..., None] == 0, 6, -6)
    n = error_structure(ref, np.clip(noisy, 0, 255).astype(np.uint8))
    assert n["mse_textured"] > 20 and n["mse_flat"] < 1 and n["low_freq_share"] < 0.05


def test_errors_cli_writes_table_plot_and_rejects_a_bad_rate_point(tmp_path):
    import json
    data, out = tmp_path / "data", tmp_path / "errors"
    data.mkdir()
    Image.fromarray(_image(48, 64)).save(data / "img0.png")
    assert main(["errors", "--models", "student-1k", "--qualities", "0,2", "--data", str(data), "--out", str(out),
                 "--quiet"]) == 0
    rows = json.loads((out / "errors.json").read_text())["rows"]
    assert [r["quality"] for r in rows] == [0, 2] and rows[0]["bpp"] < rows[1]["bpp"]
    assert "| student-1k | 2 |" in (out / "errors.md").read_text() and (out / "errors.png").stat().st_size > 0
    assert main(["errors", "--models", "student-1k", "--qualities", "99", "--data", str(data), "--out", str(out),
                 "--quiet"]) == 1
