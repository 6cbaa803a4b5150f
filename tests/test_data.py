"""Tests of photos (the data command) and training crops that need no network: loading, listing, crops, manifest and CLI errors."""

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import photos as data
from training import CropDataset
from codec.images import ImageError, list_images, load_rgb
from photos import eval_images

REPO_ROOT = Path(__file__).resolve().parent.parent


def _gradient(h=24, w=40):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 6, y * 10, (x + y) * 3], axis=2).astype(np.uint8)


def test_load_rgb_grayscale(tmp_path):
    gray = _gradient()[:, :, 0]
    Image.fromarray(gray, "L").save(tmp_path / "g.png")
    out = load_rgb(tmp_path / "g.png")
    assert out.shape == (24, 40, 3) and out.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], gray)


def test_load_rgb_palette(tmp_path):
    rgb = _gradient()
    pal = Image.fromarray(rgb).quantize(16)
    pal.save(tmp_path / "p.png")
    out = load_rgb(tmp_path / "p.png")
    np.testing.assert_array_equal(out, np.array(pal.convert("RGB")))


def test_load_rgb_palette_with_transparency(tmp_path):
    pal = Image.fromarray(_gradient()).quantize(8)
    pal.info["transparency"] = 0
    pal.save(tmp_path / "pt.png", transparency=0)
    out = load_rgb(tmp_path / "pt.png")
    assert out.shape == (24, 40, 3) and out.dtype == np.uint8


def test_load_rgb_rgba_drops_alpha(tmp_path):
    rgb = _gradient()
    alpha = np.full(rgb.shape[:2] + (1,), 7, np.uint8)
    Image.fromarray(np.concatenate([rgb, alpha], axis=2), "RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(load_rgb(tmp_path / "a.png"), rgb)


def test_load_rgb_cmyk_jpeg(tmp_path):
    Image.new("CMYK", (32, 16), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=95)
    out = load_rgb(tmp_path / "c.jpg")
    assert out.shape == (16, 32, 3)
    r, g, b = out.reshape(-1, 3).mean(axis=0)
    assert r > 200 and g < 60 and b < 60  # pure red


def test_load_rgb_16bit_png(tmp_path):
    a = np.linspace(0, 65535, 24 * 40).reshape(24, 40).astype(np.uint16)
    Image.fromarray(a).save(tmp_path / "i16.png")
    out = load_rgb(tmp_path / "i16.png")
    assert out.shape == (24, 40, 3) and out.dtype == np.uint8
    assert out[0, 0, 0] == 0 and out[-1, -1, 0] == 255
    np.testing.assert_allclose(out[:, :, 1].astype(float), a / 257.0, atol=0.51)


def test_load_rgb_exif_rotation(tmp_path):
    img = np.zeros((20, 40, 3), np.uint8)
    img[:, :20] = (255, 0, 0)  # left half red
    img[:, 20:] = (0, 0, 255)  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: shown rotated 90 degrees clockwise
    Image.fromarray(img).save(tmp_path / "r.jpg", exif=exif, quality=95)
    out = load_rgb(tmp_path / "r.jpg")
    assert out.shape == (40, 20, 3)
    assert out[5, 10, 0] > 200 and out[5, 10, 2] < 60  # left half went to the top
    assert out[35, 10, 2] > 200 and out[35, 10, 0] < 60


def test_load_rgb_missing_file(tmp_path):
    with pytest.raises(ImageError, match="not found"):
        load_rgb(tmp_path / "nope.png")


def test_load_rgb_text_file(tmp_path):
    (tmp_path / "fake.png").write_text("not an image\n")
    with pytest.raises(ValueError) as info:
        load_rgb(tmp_path / "fake.png")
    assert isinstance(info.value, ImageError)
    assert "fake.png" in str(info.value) and "\n" not in str(info.value)


def test_list_images(tmp_path):
    for name in ["b.PNG", "a.jpg", "sub/c.JpEg", "sub/deep/d.bmp", "e.webp", "f.TIF", "g.tiff",
                 "notes.txt", "h.gif"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    names = [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)]
    assert names == sorted(names)
    assert set(names) == {"b.PNG", "a.jpg", "sub/c.JpEg", "sub/deep/d.bmp", "e.webp", "f.TIF",
                          "g.tiff"}


def test_list_images_missing_folder(tmp_path):
    with pytest.raises(ImageError):
        list_images(tmp_path / "absent")


def test_eval_images_user_folder(tmp_path):
    Image.fromarray(_gradient()).save(tmp_path / "x.png")
    assert eval_images(tmp_path) == [tmp_path / "x.png"]
    assert data.train_images(tmp_path) == [tmp_path / "x.png"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageError, match="no images"):
        eval_images(tmp_path / "empty")


def test_data_root_is_repo_relative():
    assert data.DATA_ROOT == REPO_ROOT / "data"
    assert data.resolve_root(None) == data.DATA_ROOT
    assert data.resolve_root("elsewhere") == Path("elsewhere")


def _write_images(folder, sizes):
    rng = np.random.default_rng(0)
    paths = []
    for i, (h, w) in enumerate(sizes):
        paths.append(folder / f"im{i}.png")
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(paths[-1])
    return paths


def test_crop_dataset(tmp_path):
    import torch

    paths = _write_images(tmp_path, [(90, 120), (50, 40)])
    ds = CropDataset(paths, crop_size=64, count=10)
    assert isinstance(ds, torch.utils.data.Dataset)
    assert len(ds) == 10 and len(ds.images) == 2  # the small image is padded, not lost
    for i in range(len(ds)):
        x = ds[i]
        assert x.shape == (3, 64, 64) and x.dtype == torch.float32
        assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    with pytest.raises(IndexError):
        ds[10]


def test_crop_dataset_skip_seed_and_pickle(tmp_path):
    paths = _write_images(tmp_path, [(90, 120), (50, 40)])
    ds = CropDataset(paths, crop_size=64, count=4, small="skip", seed=3)
    assert len(ds.images) == 1
    assert (ds[2] == ds[2]).all()  # a seeded dataset gives the same crop i every time
    clone = pickle.loads(pickle.dumps(ds))
    assert (clone[1] == ds[1]).all()
    with pytest.raises(ValueError):
        CropDataset(paths[1:], crop_size=64, small="skip")


def test_crop_dataset_dataloader(tmp_path):
    import torch

    paths = _write_images(tmp_path, [(70, 70)])
    loader = torch.utils.data.DataLoader(CropDataset(paths, 32, 8), batch_size=4)
    batch = next(iter(loader))
    assert batch.shape == (4, 3, 32, 32)


def test_shrink():
    big = np.zeros((2000, 3000, 3), np.uint8)
    assert data.shrink(big).shape == (1000, 1500, 3)  # 2x
    huge = np.zeros((3200, 4800, 3), np.uint8)
    assert data.shrink(huge).shape[0] == 1024  # 3.125x
    small = np.zeros((427, 640, 3), np.uint8)
    assert min(data.shrink(small).shape[:2]) == 256  # never below MIN_SHORT
    tiny = np.zeros((200, 300, 3), np.uint8)
    assert data.shrink(tiny).shape == tiny.shape


def test_manifest_keeps_eval_out_of_train():
    evals = [it for it in data.MANIFEST if it.split == "eval"]
    trains = [it for it in data.MANIFEST if it.split == "train"]
    assert len(evals) == 14 and len(trains) >= 40
    assert not any("motorcycle" in it.name for it in trains)  # stereo twin of an eval image
    assert not {it.filename for it in evals} & {it.filename for it in trains}
    assert not {(it.source, it.member) for it in evals} & {(it.source, it.member) for it in trains}
    assert len({it.filename for it in data.MANIFEST}) == len(data.MANIFEST)


def test_fetch_skips_present_files(tmp_path, monkeypatch):
    for item in data.MANIFEST:
        (tmp_path / item.split).mkdir(exist_ok=True)
        Image.fromarray(_gradient()).save(tmp_path / item.split / item.filename)

    def no_run(*args, **kwargs):
        raise AssertionError("fetch ran a command although every file is present")

    monkeypatch.setattr(subprocess, "run", no_run)
    assert data.fetch(tmp_path) == tmp_path
    assert data.ensure_data(tmp_path) == tmp_path
    counts = data.summary(tmp_path)
    assert counts["eval"][0] == 14 and counts["train"][0] == len(data.MANIFEST) - 14


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "photos", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)


def test_cli_list_missing_root(tmp_path):
    proc = _cli("list", "--root", str(tmp_path / "none"))
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_cli_bad_command():
    proc = _cli("frobnicate")
    assert proc.returncode != 0
    assert len(proc.stderr.strip().splitlines()) == 1


def test_cli_list(tmp_path):
    (tmp_path / "eval").mkdir()
    Image.fromarray(_gradient()).save(tmp_path / "eval" / "x.png")
    proc = _cli("list", "--root", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "eval/x.png  40x24" in proc.stdout
    assert "eval :   1 images" in proc.stdout


# --------------------------------------------------------------------------- texture photos


_TEXTURE = {it.name: it for it in data.MANIFEST if it.member.split("/")[-1] in
            {"hubble_deep_field.jpg", "ihc.png", "retina.jpg", "brick.png", "grass.png",
             "gravel.png", "camera.png", "moon.png", "coins.png"}}


def test_manifest_texture_photos_are_train_only():
    assert len(_TEXTURE) == 9
    evals = [it for it in data.MANIFEST if it.split == "eval"]
    eval_stems = {it.name for it in evals} | {Path(it.member).stem for it in evals}
    for item in _TEXTURE.values():
        assert item.split == "train" and item.source == data.SKIMAGE
        assert item.name.removeprefix("skimage_") not in eval_stems
        assert Path(item.member).stem not in eval_stems
    reserved = ("opencv", "baboon", "motorcycle_right")
    assert not any(word in f"{it.source.package} {it.member}" for it in data.MANIFEST
                   for word in reserved)


def test_fetch_adds_new_items_to_existing_data(tmp_path, monkeypatch):
    pytest.importorskip("skimage")
    for item in data.MANIFEST:
        if item.name not in _TEXTURE:  # data fetched before the texture photos existed
            (tmp_path / item.split).mkdir(exist_ok=True)
            Image.fromarray(_gradient()).save(tmp_path / item.split / item.filename)

    def no_run(*args, **kwargs):
        raise AssertionError("the texture photos come from the installed scikit-image")

    monkeypatch.setattr(subprocess, "run", no_run)
    data.fetch(tmp_path)
    for name in _TEXTURE:
        assert (tmp_path / "train" / f"{name}.png").is_file()
    assert load_rgb(tmp_path / "train" / "skimage_ihc.png").shape == (512, 512, 3)  # PNG as is
    hubble = load_rgb(tmp_path / "train" / "skimage_hubble_deep_field.png")
    assert hubble.shape == (436, 500, 3)  # a JPEG of 1000x872, shrunk 2x like the others
    grass = load_rgb(tmp_path / "train" / "skimage_grass.png")
    assert (grass[..., 0] == grass[..., 2]).all()  # grey, as equal RGB channels


# --------------------------------------------------------------------------- crop options


def _reference_crop(ds, index):
    """The crop that CropDataset gave before the detail and scales options existed."""
    rng = np.random.default_rng((ds.seed, index))
    areas = np.array([im.shape[0] * im.shape[1] for im in ds.images], dtype=np.float64)
    img = ds.images[rng.choice(len(ds.images), p=areas / areas.sum())]
    top, left = (rng.integers(0, n - ds.crop_size + 1) for n in img.shape[:2])
    crop = img[top:top + ds.crop_size, left:left + ds.crop_size]
    for axis in (1, 0):   # left-right first, then up-down, each drawn in that order
        crop = np.flip(crop, axis) if ds.flip and rng.random() < 0.5 else crop
    return crop.transpose(2, 0, 1) / 255.0


@pytest.mark.parametrize("options", [{}, {"detail": 0.0, "scales": (1.0,)}])
def test_crop_options_off_give_todays_crops(tmp_path, options):
    paths = _write_images(tmp_path, [(90, 120), (50, 40), (200, 70)])
    ds = CropDataset(paths, crop_size=48, count=30, seed=11, **options)
    assert len(ds.images) == 3
    for i in range(len(ds)):
        np.testing.assert_allclose(ds[i].numpy(), _reference_crop(ds, i), atol=1e-6)


def _half_flat_half_noise(path, h=96, w=512):
    img = np.full((h, w), 128, np.uint8)
    img[:, w // 2:] = np.random.default_rng(5).integers(0, 256, (h, w // 2), dtype=np.uint8)
    Image.fromarray(img, "L").save(path)
    return path


def test_detail_favours_textured_crops(tmp_path):
    from training.crops import detail_energy

    path = _half_flat_half_noise(tmp_path / "half.png")

    def flat_share(detail):
        ds = CropDataset([path], crop_size=32, count=400, seed=2, detail=detail)
        crops = [(ds[i].numpy().transpose(1, 2, 0) * 255).round().astype(np.uint8)
                 for i in range(len(ds))]
        return np.mean([detail_energy(c) < 1.0 for c in crops]), ds

    uniform, _ = flat_share(0.0)
    favoured, ds = flat_share(1.0)
    assert 0.35 < uniform < 0.6  # about 224/481 of the start places are all flat
    assert favoured < 0.05
    clone = pickle.loads(pickle.dumps(ds))
    assert (clone[3] == ds[3]).all()


def _checkerboard(path, size, square):
    y, x = np.mgrid[0:size, 0:size]
    board = np.where((y // square + x // square) % 2, 255, 0).astype(np.uint8)
    Image.fromarray(board, "L").save(path)
    return path


def _row_period(crop):
    """Mean run length of the bright/dark runs along the rows of a 3xSxS crop."""
    bright = crop[0].numpy() > 0.5
    return bright.shape[1] / (1 + np.count_nonzero(np.diff(bright, axis=1), axis=1).mean())


def test_scales_crop_the_downscaled_copies(tmp_path):
    board = _checkerboard(tmp_path / "board.png", 256, 8)
    tiny = _checkerboard(tmp_path / "tiny.png", 48, 8)
    ds = CropDataset([board, tiny], crop_size=32, count=300, seed=4, scales=(1.0, 0.5))
    # tiny is left out at scale 0.5, where it is smaller than the crop
    assert [im.shape[:2] for im in ds.images] == [(256, 256), (48, 48), (128, 128)]
    periods = np.array([_row_period(ds[i]) for i in range(len(ds))])
    assert set(np.round(periods).astype(int)) <= {4, 5, 6, 7, 8}
    halved = np.mean(periods < 6)
    assert 0.4 < halved < 0.6  # the scale is drawn uniformly
    only_half = CropDataset([board], crop_size=32, count=50, seed=4, scales=(0.5,))
    assert all(_row_period(only_half[i]) < 6 for i in range(len(only_half)))


@pytest.mark.parametrize("options", [{"detail": -1.0}, {"detail": float("nan")}, {"scales": ()},
                                     {"scales": (1.0, 0.0)}, {"scales": (1.5,)}])
def test_crop_options_are_checked(tmp_path, options):
    paths = _write_images(tmp_path, [(40, 40)])
    with pytest.raises(ValueError):
        CropDataset(paths, crop_size=32, **options)
