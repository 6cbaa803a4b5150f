"""Tiled decoding (codec/tiling.py, export/crops.py): the same picture as the whole-picture decode, in
torch bit for bit and in ONNX Runtime on the 8-bit picture, on a size that needs many tiles."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from codec import bitstream as bsf
from codec.api import decode_image, encode_image
from codec.images import load_rgb

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_WAIT_POLICY": "PASSIVE"}
SIZE = (301, 467)            # odd sides, padded to 320 x 512: a 20 x 32 latent grid


@pytest.fixture(scope="module")
def picture(eval_paths):
    img = load_rgb(next(p for p in eval_paths if p.name == "barbara.png"))
    return np.ascontiguousarray(img[: SIZE[0], : SIZE[1]])


@pytest.fixture(scope="module")
def student2k():
    from codec.weights import load_model
    return load_model("student-2k")


def test_footprints_match_the_layers(student2k):
    """student-2k: 3 latent blocks (3x3), then 3 / 2 / 2 blocks at H/8, H/4, H/2 and 1x1 heads: a latent
    cell reaches 3 + 3/2 + 2/4 + 2/8 = 5.25 cells (84 luma pixels) before its own and 99 after."""
    from codec.tiling import Footprint, model_footprints

    fp = model_footprints(student2k)
    assert fp["y"] == Footprint(16, (-84, 99), (-84, 99))
    assert fp["uv"] == Footprint(8, (-42, 49), (-42, 49))
    # [0, 16) luma pixels of latent row 10 need latent rows 4..16: 6 cells each side
    assert fp["y"].latents(160, 176, 0, 100) == (4, 17)


def test_footprint_is_exact_with_real_weights(student2k):
    """Raising a latent outside the footprint leaves the output unchanged; inside, pixels at its edge move."""
    from codec.blocks import Synthesis
    from codec.tiling import model_footprints

    fp = model_footprints(student2k)["y"]
    syn = Synthesis(student2k).eval()
    g = torch.Generator().manual_seed(0)
    y = torch.randn(1, 96, 24, 24, generator=g)
    uv = torch.randn(1, 32, 24, 24, generator=g)
    with torch.no_grad():
        base = syn(y, uv)[0][0, 0]
        y2 = y.clone()
        y2[..., 12, 12] += 5.0
        moved = syn(y2, uv)[0][0, 0]
    rows = torch.nonzero((moved != base).any(1)).flatten()
    assert 12 * 16 + fp.rows[0] <= int(rows[0]) and int(rows[-1]) <= 12 * 16 + fp.rows[1]


def test_plan_covers_the_picture_once():
    from codec.tiling import Footprint, plan_tiles

    fps = {"y": Footprint(16, (-84, 99), (-84, 99)), "uv": Footprint(8, (-42, 49), (-42, 49))}
    strips = plan_tiles(301, 467, 100, fps)          # rounded up to 112 pixels
    cover = np.zeros((301, 467), int)
    for strip in strips:
        for t in strip:
            a0, a1, b0, b1 = t.y
            cover[a0:a1, b0:b1] += 1
            r0, r1, c0, c1 = t.lat
            assert 0 <= r0 < r1 <= 20 and 0 <= c0 < c1 <= 32
    assert (cover == 1).all() and len(strips) == 3 and len(strips[0]) == 5
    assert plan_tiles(301, 467, 0, fps)[0][0].lat == (0, 20, 0, 32)


@pytest.fixture
def one_thread():
    """Tiles and bands equal the whole picture at one torch thread (see codec/tiling.py)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def assert_same_picture(tiled: np.ndarray, whole: np.ndarray, exact: bool, what) -> None:
    """Bit for bit, or (``exact`` False) within float rounding: one 8-bit level at under 1 value in 10^4."""
    diff = np.abs(tiled.astype(int) - whole.astype(int))
    if exact:
        assert not diff.any(), (what, int(diff.max()), int((diff > 0).sum()))
    else:
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-4, (what, int(diff.max()), int((diff > 0).sum()))


# The teacher's wide convolutions get shape-dependent single-thread kernels from oneDNN on AVX-512 machines (not
# on AVX2 ones): there a tile differs from the whole picture by float rounding (measured: 4 of 421,701 values by
# one level at tile 160), as with several threads (docs/deployment.md); the students' stay bit for bit.
@pytest.mark.parametrize("name, tiles", [("student-2k", (256, 128, 48)), ("student-1k", (96,)), ("teacher", (160,))])
def test_torch_tiled_equals_whole(picture, name, tiles, one_thread, monkeypatch):
    import codec.tiling

    from codec.weights import load_model

    model = load_model(name)
    with torch.inference_mode():
        data = encode_image(model, picture, 2)
    whole = decode_image(model, data)
    exact = name != "teacher"
    for tile in tiles:
        assert_same_picture(decode_image(model, data, tile=tile), whole, exact, (name, tile))
    monkeypatch.setattr(codec.tiling, "RGB_ROWS", 7)       # RGB conversion in blocks of odd row counts
    assert_same_picture(decode_image(model, data, tile=tiles[0]), whole, exact, name)


@pytest.mark.parametrize("name", ["student-2k", "teacher", "student-2k-wide+ctxscale"])
def test_latent_bands_equal_the_whole_grid(eval_paths, name, one_thread, monkeypatch):
    """codec/bands.py: the decoder's hyper decoders, context and fusion run in bands of z rows (here one
    z row each, with the measured halo around it) and give the whole grid's latents bit for bit (with the
    gmm option's global context computed once on the whole z); the banded integer scale decoder gives the
    same integers."""
    import codec.bands
    from codec.bands import band_halo
    from codec.tiling import decoded_latents
    from codec.weights import load_model

    model = load_model(name)
    img = load_rgb(next(p for p in eval_paths if p.name == "barbara.png"))[:512, :256]   # an 8 x 4 z grid
    with torch.inference_mode():
        bs = bsf.unpack(encode_image(model, np.ascontiguousarray(img), 3))
    halo = band_halo(model)
    assert halo is not None and 1 + 2 * halo < 8, halo          # several bands, each cut short somewhere
    monkeypatch.setattr(codec.bands, "BAND_Z", 1)
    whole, banded = decoded_latents(model, bs), decoded_latents(model, bs, bands=True)
    assert torch.equal(whole[0], banded[0]) and torch.equal(whole[1], banded[1]) and banded[2] is None
    for key in ("residual", "index"):
        assert torch.equal(whole[3][key], banded[3][key]), key
    z = torch.randint(-128, 128, (1, model.cfg.z_channels, 23, 5), generator=torch.Generator().manual_seed(0))
    ref = model.scale_decoder.int_forward(z.float())
    assert all(torch.equal(model.scale_decoder.int_forward(z.float(), band=b), ref) for b in (1, 2, 7))


def test_models_whose_hooks_read_the_mean_or_the_whole_grid_are_not_banded():
    from codec.bands import band_halo
    from codec.registry import create_model

    assert band_halo(create_model("student-1k+pp")) is None       # post-filter reads the predicted mean
    assert band_halo(create_model("student-1k+hda")) is None      # attention in the hyper decoders
    assert band_halo(create_model("student-1k+gmm")) is not None  # global context: offsets from the whole z


@pytest.mark.parametrize("name", ["student-2k", "student-2k-wide+ctxscale"])
def test_tiled_analysis_equals_the_whole_picture(eval_paths, name, one_thread, monkeypatch):
    """codec/encode_tiles.py: the encoder's colour conversion and analysis in tiles (64 pixels on a 300x440
    crop, padded to 320x448: 5 x 7 tiles, each with the measured reach around it) give the whole picture's
    latents bit for bit, and encode_image, which then also runs its latent-grid pass in bands of z rows
    (here one each), the same bitstream."""
    import codec.coding
    import codec.encode_tiles
    from codec.api import pad_planes
    from codec.color import to_tensor
    from codec.encode_tiles import analyse_tiled, analysis_reach
    from codec.weights import load_model

    model = load_model(name)
    img = np.ascontiguousarray(load_rgb(next(p for p in eval_paths if p.name == "barbara.png"))[:300, :440])
    assert analysis_reach(model) >= 1
    with torch.inference_mode():
        tiled = analyse_tiled(model, img, tile=64)
        assert torch.equal(tiled, model._analyse(*pad_planes(to_tensor(img), model.cfg.multiple)))
        assert analyse_tiled(model, img) is None                     # one default tile: analysed whole
        whole = encode_image(model, img, 3)
        monkeypatch.setattr(codec.encode_tiles, "ENCODE_TILE", 64)
        monkeypatch.setattr(codec.coding, "ENCODE_BAND_Z", 1)
        assert encode_image(model, img, 3) == whole


def test_analysis_with_option_hooks_is_not_tiled():
    from codec.encode_tiles import analysis_reach
    from codec.registry import create_model

    assert analysis_reach(create_model("student-1k+hda")) is None      # attention after the analysis
    assert analysis_reach(create_model("student-1k+subimg")) is None   # a refiner before it
    assert analysis_reach(create_model("student-1k+gmm")) is not None


def test_uniform_windows_keep_every_needed_cell():
    from codec.tiling import Footprint, plan_tiles, uniform_windows

    fps = {"y": Footprint(16, (-84, 99), (-84, 99)), "uv": Footprint(8, (-42, 49), (-42, 49))}
    strips = plan_tiles(1000, 1500, 256, fps)                 # a 63 x 94 latent grid (padded to 1024 x 1536)
    grown = uniform_windows(strips, (64, 96))
    sizes = {(t.lat[1] - t.lat[0], t.lat[3] - t.lat[2]) for s in grown for t in s}
    assert len(sizes) == 1
    for s, g in zip(strips, grown):
        for t, u in zip(s, g):
            assert u.y == t.y and u.uv == t.uv
            assert 0 <= u.lat[0] <= t.lat[0] and t.lat[1] <= u.lat[1] <= 64
            assert 0 <= u.lat[2] <= t.lat[2] and t.lat[3] <= u.lat[3] <= 96


def test_torch_cli_tile_option(student2k, picture, tmp_path):
    """One torch thread: with several, torch's convolutions pick kernels by tensor shape and thread count
    (1-ulp differences: the whole picture at 1 vs 2 threads differs at a few pixels by one level, and so
    do tiles); the tiled decode is bit-identical to the whole one at a given single thread."""
    (tmp_path / "a.bin").write_bytes(encode_image(student2k, picture, 1))
    outs = []
    for tile in ("64", "0"):
        out = tmp_path / f"t{tile}.png"
        r = subprocess.run([sys.executable, "-m", "codec", "decode", str(tmp_path / "a.bin"), "-o", str(out),
                            "--tile", tile], cwd=ROOT, env={**ENV, "OMP_NUM_THREADS": "1"}, capture_output=True,
                           text=True)
        assert r.returncode == 0, r.stderr
        outs.append(np.asarray(__import__("PIL.Image").Image.open(out)))
    assert np.array_equal(*outs)


@pytest.fixture(scope="module")
def onnx_export(student2k, tmp_path_factory):
    from export.exporter import export_model

    out = tmp_path_factory.mktemp("tiling-export")
    export_model(student2k, out, int8=True, calib=2, ort_format=False, encoder=False, log=lambda *_: None)
    return out


def test_onnx_tiled_equals_whole(student2k, picture, onnx_export):
    from export.runtime import OnnxDecoder

    data = encode_image(student2k, picture, 3)
    torch_rgb = decode_image(student2k, data)
    for int8, threads in ((False, 1), (True, 1), (False, 2)):
        dec = OnnxDecoder(onnx_export, int8=int8, threads=threads)
        assert dec.footprints and len(dec.crop_levels) == 3, "export without tiling data: the test would be void"
        whole = dec.decode(data, tile=0)
        assert whole.y is not None and whole.y.shape == SIZE
        if not int8:
            assert np.abs(whole.rgb.astype(int) - torch_rgb).max() <= 1
        for tile in (256, 128, 48):
            got = dec.decode(data, tile=tile)
            assert got.y is None and np.array_equal(got.rgb, whole.rgb), (int8, threads, tile)
            assert np.array_equal(got.residual, whole.residual) and np.array_equal(got.index, whole.index)


def test_onnx_crops_change_nothing_without_tiles(student2k, onnx_export):
    """The crop inputs' defaults keep everything: the graph computes what the uncropped one does."""
    import onnxruntime as ort

    from export.synthesis import deploy_synthesis

    s = ort.InferenceSession(str(onnx_export / "synthesis.onnx"), providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(1)
    y, uv = torch.randn(1, 96, 6, 10, generator=g), torch.randn(1, 32, 6, 10, generator=g)
    out = s.run(None, {"y_hat": y.numpy(), "uv_hat": uv.numpy()})
    with torch.no_grad():
        ref = deploy_synthesis(student2k)(y, uv)
    assert all(np.abs(a - b.numpy()).max() < 1e-4 for a, b in zip(out, ref))
    crops = {i.name for i in s.get_overridable_initializers()}
    assert crops >= {"crop1_starts", "crop1_ends", "crop2_starts", "crop4_ends"}
    # a crop of the latent-grid features to rows 3..9, columns 3..13: the outputs shrink to that window,
    # and pixels at least the footprint's reach (36 before, 52 after) inside it keep their values
    y, uv = torch.randn(1, 96, 12, 16, generator=g), torch.randn(1, 32, 12, 16, generator=g)
    feed = {"y_hat": y.numpy(), "uv_hat": uv.numpy()}
    out = s.run(None, feed)
    cropped = s.run(None, {**feed, "crop1_starts": np.array([3, 3]), "crop1_ends": np.array([9, 13])})
    assert cropped[0].shape[-2:] == (96, 160) and cropped[1].shape[-2:] == (48, 80)
    assert np.abs(cropped[0][0, 0, 36:44, 36:108] - out[0][0, 0, 84:92, 84:156]).max() < 1e-5
    assert np.abs(cropped[0][0, 0, :8] - out[0][0, 0, 48:56, 48:208]).max() > 1e-3   # the cut edge differs


def test_onnx_cli_streams_the_same_picture(student2k, picture, onnx_export, tmp_path):
    """python -m export.decode --tile: PNG and PPM written strip by strip; every tile size, same picture."""
    from PIL import Image

    (tmp_path / "a.bin").write_bytes(encode_image(student2k, picture, 4))
    pictures = []
    for tile, ext in (("0", "png"), ("64", "png"), ("160", "ppm")):
        out = tmp_path / f"t{tile}.{ext}"
        r = subprocess.run([sys.executable, "-m", "export.decode", str(tmp_path / "a.bin"), "-o", str(out),
                            "--onnx", str(onnx_export), "--tile", tile], cwd=ROOT, env=ENV, capture_output=True,
                           text=True)
        assert r.returncode == 0, r.stderr
        pictures.append(np.asarray(Image.open(out)))
        assert not list(tmp_path.glob("*.part"))
    assert pictures[0].shape == (*SIZE, 3)
    assert all(np.array_equal(pictures[0], p) for p in pictures[1:])
    r = subprocess.run([sys.executable, "-m", "export.decode", str(tmp_path / "a.bin"), "-o", str(tmp_path / "x.zzz"),
                        "--onnx", str(onnx_export)], cwd=ROOT, env=ENV, capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.startswith("error:") and len(r.stderr.strip().splitlines()) == 1


def test_bad_tile_sizes(student2k, picture):
    data = encode_image(student2k, picture[:40, :40], 1)
    with pytest.raises(ValueError):
        decode_image(student2k, data, tile=-16)
    assert bsf.unpack(data).width == 40


def test_linear_luma_tail_is_folded_and_still_tiles_in_onnx(picture, tmp_path):
    """student-2k-wide's H/2 stage has no blocks: the exporter folds its linear luma tail into two transposed
    convolutions (LinearTail), the same function, and still crops it inside the graph; ONNX tiles give the
    whole decode's picture within float rounding, and that is the torch decoder's within one level."""
    from codec.blocks import Synthesis
    from codec.weights import load_model
    from export.exporter import export_model
    from export.synthesis import FoldedSynthesis, deploy_synthesis
    from export.runtime import OnnxDecoder

    model = load_model("student-2k-wide")
    folded = deploy_synthesis(model)
    assert isinstance(folded, FoldedSynthesis)
    assert not isinstance(deploy_synthesis(load_model("student-2k")), FoldedSynthesis)   # blocks at H/2
    g = torch.Generator().manual_seed(0)
    y, uv = 3 * torch.randn(1, 192, 6, 10, generator=g), 3 * torch.randn(1, 32, 6, 10, generator=g)
    with torch.no_grad():
        assert all((a - b).abs().max() < 1e-4 for a, b in zip(Synthesis(model)(y, uv), folded(y, uv)))
    export_model(model, tmp_path, int8=False, ort_format=False, encoder=False, log=lambda *_: None)
    data = encode_image(model, picture, 3)
    dec = OnnxDecoder(tmp_path, int8=False)
    assert [level[0] for level in dec.crop_levels] == [1, 2, 4]
    whole = dec.decode(data, tile=0)
    assert np.abs(whole.rgb.astype(int) - decode_image(model, data)).max() <= 1
    for tile in (256, 128, 48):
        assert_same_picture(dec.decode(data, tile=tile).rgb, whole.rgb, False, tile)
