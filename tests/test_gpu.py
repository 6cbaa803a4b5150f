"""The GPU burst (distill.gpu) without a GPU: the packed tiles are lossless and within their size, crops come
from them, weights go back in parts within the return limits and come back whole, carried wheels install
without pip, stand-ins let compressai and the codec import without torchvision, scipy or Pillow, and the
rehearsal of `make gpu DRY=1` (pack, resume from the shipped weights, snapshots, parts, unpack, codec
encode and decode with the unpacked weights) runs end to end, with a teacher and KD or (the default of
`make gpu`) the eight-point student-2k-gmm alone on the RD loss, no teacher built."""
from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from distill import gpu_env
from distill.gpu_pack import TileSampler, load_pack, make_pack
from distill.gpu_parts import read_parts, split_state, unpack, write_parts

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tiny_pack(tmp_path_factory) -> Path:
    from photos import train_images

    out = tmp_path_factory.mktemp("pack") / "crops.npz"
    info = make_pack(train_images()[:3], out, tile=96, max_tiles=6, max_mib=1.0, quality=0)
    assert info["tiles"] == 6 and sum(info["per_scale"].values()) == 6
    return out


def test_pack_is_lossless_and_within_its_size(tiny_pack, tmp_path):
    from training import crops
    from codec.images import load_rgb

    tiles = load_pack(tiny_pack)
    assert tiles.shape == (6, 3, 96, 96) and tiles.dtype == torch.uint8
    with np.load(tiny_pack) as z:
        for i in range(len(tiles)):
            im = crops.downscale(load_rgb(ROOT / "data" / "train" / f"{z['source'][i]}.png"), float(z["scale"][i]))
            y, x = z["yx"][i]
            assert np.array_equal(im[y:y + 96, x:x + 96].transpose(2, 0, 1), tiles[i].numpy())
    from photos import train_images
    small = make_pack(train_images()[:3], tmp_path / "small.npz", tile=96, max_mib=0.1)
    assert (tmp_path / "small.npz").stat().st_size <= 0.1 * 2**20 and 0 < small["tiles"]
    with pytest.raises(ValueError, match="no 4096x4096 tile fits"):
        make_pack(train_images()[:1], tmp_path / "none.npz", tile=4096)


def test_jpeg_pack_holds_more_tiles_close_to_the_photos(tiny_pack, tmp_path):
    """The default pack stores 4:4:4 JPEGs of quality 97: the same tiles within ~40 dB, and more of them in
    the same MiB than the lossless pack; a quality outside 0-100 and a damaged tile are one-line errors."""
    from photos import train_images

    lossless = load_pack(tiny_pack).float()
    info = make_pack(train_images()[:3], tmp_path / "jpeg.npz", tile=96, max_tiles=6, max_mib=1.0)
    tiles = load_pack(tmp_path / "jpeg.npz").float()
    assert info["tiles_as"] == "jpeg 97" and tiles.shape == lossless.shape
    mse = (tiles - lossless).pow(2).mean(dim=(1, 2, 3))
    assert (10 * torch.log10(255**2 / mse.clamp_min(1e-9)) > 40).all()
    small = {q: make_pack(train_images()[:3], tmp_path / f"s{q}.npz", tile=96, max_mib=0.1, quality=q)["tiles"]
             for q in (0, 97)}
    assert small[97] > 1.5 * small[0]
    with pytest.raises(ValueError, match="not 0 .lossless. to 100"):
        make_pack(train_images()[:1], tmp_path / "bad.npz", tile=96, quality=101)
    with np.load(tmp_path / "jpeg.npz") as z:
        parts = dict(z)
    parts["blob"] = parts["blob"].copy()
    parts["blob"][: parts["offsets"][1]] = 0
    np.savez(tmp_path / "broken.npz", **parts)
    with pytest.raises(ValueError, match="cannot read training pack"):
        load_pack(tmp_path / "broken.npz")


def test_missing_or_foreign_pack_is_a_one_line_error(tmp_path):
    with pytest.raises(ValueError, match="make gpu-pack"):
        load_pack(tmp_path / "nope.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="cannot read training pack"):
        load_pack(tmp_path / "other.npz")


def test_sampler_draws_flipped_crops_of_the_tiles(tiny_pack):
    tiles = load_pack(tiny_pack)
    batch = TileSampler(tiles, 64, 5, torch.device("cpu"), seed=1)()
    assert batch.shape == (5, 3, 64, 64) and batch.dtype == torch.float32
    assert 0 <= batch.min() and batch.max() <= 1 and batch.std() > 0
    with pytest.raises(ValueError, match="larger than the packed tiles"):
        TileSampler(tiles, 128, 2, torch.device("cpu"))


def test_weights_go_back_in_parts_and_come_back_whole(tmp_path):
    from codec.registry import create_model

    model = create_model("student-1k")
    state = model.state_dict()
    parts = split_state(state, 300_000)
    assert len(parts) > 1 and sum(map(len, parts)) == len(state)
    out = tmp_path / "out"
    paths = write_parts(model, out, "student-1k", {"step": 7}, limit=300_000)
    assert len(paths) > 1 and all(p.stat().st_size < 300_000 + 20_000 for p in paths)
    back, meta = read_parts(out)["student-1k"]
    assert meta["step"] == "7" and meta["preset"] == "student-1k"
    assert all(torch.equal(back[k], v.half() if v.is_floating_point() else v) for k, v in state.items())
    stale = paths[0].read_bytes()
    write_parts(model, out, "student-1k", {"step": 8}, limit=300_000)
    paths[0].write_bytes(stale)
    with pytest.raises(ValueError, match="different steps"):
        read_parts(out)
    paths[1].unlink()
    with pytest.raises(ValueError, match="parts of"):
        read_parts(out)


def test_return_limits_are_checked(tmp_path):
    assert gpu_env.check_return(tmp_path) == []
    for i in range(9):
        (tmp_path / f"f{i}.txt").write_text("x")
    (tmp_path / "big.bin").write_bytes(b"")
    with open(tmp_path / "big.bin", "r+b") as f:
        f.truncate(17 * 2**20)
    (tmp_path / "a b.txt").write_text("x")
    problems = " | ".join(gpu_env.check_return(tmp_path))
    assert "11 files" in problems and "big.bin is 17.0 MiB" in problems and "a b.txt" in problems


def _wheel(folder: Path, name: str, tag: str = "py3-none-any") -> Path:
    path = folder / f"{name}-1.0-{tag}.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{name}/__init__.py", "X = 42\n")
        z.writestr(f"{name}-1.0.dist-info/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        z.writestr(f"{name}-1.0.dist-info/WHEEL", f"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: {tag}\n")
        z.writestr(f"{name}-1.0.dist-info/RECORD", "")
    return path


def test_carried_wheels_install_without_pip(tmp_path, monkeypatch):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _wheel(wheels, "lcfake_mod")
    calls = []

    def no_pip(cmd, **kw):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 1, "", "No module named pip")
    monkeypatch.setattr(gpu_env.subprocess, "run", no_pip)
    assert gpu_env.install_wheels(wheels, tmp_path / "site") == ["lcfake_mod-1.0-py3-none-any.whl"]
    assert (tmp_path / "site" / "lcfake_mod" / "__init__.py").is_file() and len(calls) == 1
    gpu_env.install_wheels(wheels, tmp_path / "site")  # the same set again: nothing to do
    assert len(calls) == 1
    own = f"cp{sys.version_info.major}{sys.version_info.minor}"
    assert gpu_env.wheel_fits(Path(f"x-1-{own}-{own}-manylinux_2_34_x86_64.whl"))
    assert gpu_env.wheel_fits(Path("x-1-cp310-abi3-manylinux_2_17_x86_64.whl"))
    assert not gpu_env.wheel_fits(Path("x-1-cp39-cp39-manylinux_2_34_x86_64.whl"))
    _wheel(wheels, "lcother_mod", "cp39-cp39-manylinux_2_34_x86_64")
    with pytest.raises(gpu_env.EnvError, match="make gpu-wheels GPU_PYVER="):
        gpu_env.install_wheels(wheels, tmp_path / "site2")


STANDIN_CHECK = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {NAMES}:
            raise ModuleNotFoundError(name)
sys.meta_path.insert(0, Block())
from distill import gpu_env
print(sorted(gpu_env.install_standins()))
import compressai, scipy.stats
from codec.registry import create_model
m = create_model('student-1k')
m.update(force=True)
print(m.gaussian_conditional._quantized_cdf.sum().item(), m.gaussian_conditional._cdf_length.tolist()[:3])
"""


def test_standins_let_compressai_and_the_codec_import():
    names = {"torchvision", "torch_geometric", "pandas", "scipy", "matplotlib", "requests", "PIL"}
    r = subprocess.run([sys.executable, "-c", STANDIN_CHECK.replace("{NAMES}", repr(names))], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    standins, tables = r.stdout.strip().splitlines()[-2:]
    assert set(eval(standins)) == names
    from codec.registry import create_model
    m = create_model("student-1k")
    m.update(force=True)  # the real scipy: the stand-in's normal quantile builds the same tables
    gc = m.gaussian_conditional
    assert tables == f"{gc._quantized_cdf.sum().item()} {gc._cdf_length.tolist()[:3]}"


def test_rehearsal_end_to_end(tmp_path, tiny_pack):
    from codec.weights import weights_metadata

    out, into = tmp_path / "out", tmp_path / "weights"
    r = subprocess.run([sys.executable, "-m", "distill.gpu", "run", "--dry", "--out", str(out), "--pack",
                        str(tiny_pack), "--run-dir", str(tmp_path / "run")],
                       cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert gpu_env.check_return(out) == []
    assert sorted(p.name for p in out.iterdir()) == [
        "gpu.json", "student-2k-0.safetensors", "student-2k-log.csv", "teacher-0.safetensors",
        "teacher-1.safetensors", "teacher-log.csv"]
    summary = json.loads((out / "gpu.json").read_text())
    assert summary["phases"]["teacher"]["steps"] == 4 and summary["phases"]["student-2k"]["steps"] == 3
    rows = {Path(r["weights"]).stem: r for r in unpack(out, into, verify=True)}
    for name, steps in (("teacher", 4), ("student-2k", 3)):
        shipped = int(weights_metadata(ROOT / "weights" / f"{name}.safetensors")["step"])
        meta = weights_metadata(into / f"{name}.safetensors")
        assert int(meta["step"]) == shipped + steps and float(meta["gpu_s"]) > 0
        assert "decoded" in rows[name]["roundtrip"]
    assert rows["student-2k"]["kd_teacher_step"] == str(int(rows["teacher"]["step"]))


def test_rd_only_student_burst_builds_no_teacher_and_keeps_eight_points(tmp_path, tiny_pack, monkeypatch):
    import codec.weights
    from codec.weights import load_model, rate_points_of, weights_metadata
    from distill.gpu_burst import BurstOptions, run_burst
    from distill.gpu_parts import read_parts

    built, create = [], codec.weights.create_model

    def counted(name, *args, **kw):
        built.append(name)
        return create(name, *args, **kw)
    monkeypatch.setattr(codec.weights, "create_model", counted)   # the burst builds through model_for_weights
    out, into, name = tmp_path / "out", tmp_path / "weights", "student-2k-gmm"
    given = dict(pack=tiny_pack, run_dir=tmp_path / "run", student=name, minutes=0.0)
    with pytest.raises(ValueError, match="--no-kd"):
        run_burst(BurstOptions.rehearsal(out, **given))
    summary = run_burst(BurstOptions.rehearsal(out, kd=False, **given))
    assert built == [name] and summary["return_check"] == "ok"
    assert list(summary["phases"]) == [name] and summary["phases"][name]["steps"] == 3
    assert summary["phases"][name]["loss"] == "rd" and summary["phases"][name]["rate_points"] == 8
    assert sorted(p.name for p in out.iterdir()) == ["gpu.json", f"{name}-0.safetensors", f"{name}-log.csv"]
    assert "kd_teacher_step" not in read_parts(out)[name][1]
    row, = unpack(out, into)
    shipped = ROOT / "weights" / f"{name}.safetensors"
    meta = weights_metadata(into / f"{name}.safetensors")
    assert meta["preset"] == name and int(meta["step"]) == int(weights_metadata(shipped)["step"]) + 3
    assert rate_points_of(into / f"{name}.safetensors") == rate_points_of(shipped) == 8
    model = load_model(str(into / f"{name}.safetensors"))
    assert model.name == name and model.num_qualities == 8
    tables = {k: v.clone() for k, v in model.state_dict().items() if k.endswith("_quantized_cdf")}
    assert any("mixture" in type(m).__name__.lower() for m in model.modules())
    model.update(force=True)  # the stored tables are those of the returned weights (the mixture's included)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in tables.items())
