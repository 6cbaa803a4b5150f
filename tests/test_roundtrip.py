"""Real bitstreams on the evaluation set: round trip, rate accounting, cross-thread bit-exactness."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from codec import bitstream as bsf
from codec.api import decode_image, decode_planes, encode_image, pad_planes, reconstruct
from codec.color import to_tensor
from codec.images import load_rgb


def _quality(i, model):
    return i % model.num_qualities


def test_decode_matches_quantized_forward_and_rate_estimate(teacher, eval_paths):
    for i, path in enumerate(eval_paths):
        img = load_rgb(path)
        q = _quality(i, teacher)
        data = encode_image(teacher, img, q)
        out = decode_image(teacher, data)
        assert out.shape == img.shape
        assert np.abs(out.astype(int) - reconstruct(teacher, img, q)).max() == 0, path.name
        y, uv = pad_planes(to_tensor(img), teacher.cfg.multiple)
        estimate = teacher.estimate_bits(teacher.encode_latents(y, uv, q)) / 8
        assert abs(len(data) - estimate) <= 0.03 * estimate, (path.name, len(data), estimate)


@pytest.mark.parametrize("enc_threads, dec_threads", [(2, 1), (1, 2)])
def test_residual_symbols_identical_across_thread_counts(teacher, eval_paths, enc_threads, dec_threads):
    for i, path in enumerate(eval_paths):
        img = load_rgb(path)
        q = _quality(i + 1, teacher)
        torch.set_num_threads(enc_threads)
        data = encode_image(teacher, img, q)
        y, uv = pad_planes(to_tensor(img), teacher.cfg.multiple)
        enc = teacher.encode_latents(y, uv, q)
        torch.set_num_threads(dec_threads)
        _, dec = decode_planes(teacher, bsf.unpack(data))
        torch.set_num_threads(1)
        assert torch.equal(dec["index"], enc["index"]), path.name
        assert torch.equal(dec["residual"], enc["residual"]), path.name


@pytest.mark.parametrize("h, w", [(1, 1), (3, 5), (65, 130), (17, 300)])
def test_any_image_size_round_trips(teacher, h, w):
    img = (np.random.default_rng(h * w).random((h, w, 3)) * 255).astype(np.uint8)
    out = decode_image(teacher, encode_image(teacher, img, 5))
    assert out.shape == (h, w, 3)


def test_rate_grows_with_quality(teacher, eval_paths):
    img = load_rgb(eval_paths[0])
    sizes = [len(encode_image(teacher, img, q)) for q in range(teacher.num_qualities)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]


def test_other_weights_are_refused(teacher, trained_teacher_path, eval_paths):
    from codec.weights import load_model
    other = load_model(str(trained_teacher_path))
    with torch.no_grad():
        other.synthesis_y.head.bias.add_(0.01)
    del other.frozen_id  # the weights changed: recompute the id
    data = encode_image(teacher, load_rgb(eval_paths[0]), 2)
    with pytest.raises(bsf.BitstreamError, match="another model"):
        decode_image(other, data)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "codec", *args], capture_output=True, text=True)


def test_cli_round_trip_and_one_line_errors(tmp_path, trained_teacher_path, eval_paths):
    w = str(trained_teacher_path)
    bin_path, png = tmp_path / "a.bin", tmp_path / "a.png"
    r = _cli("encode", str(eval_paths[0]), "-o", str(bin_path), "--model", w, "-q", "3")
    assert r.returncode == 0, r.stderr
    r = _cli("decode", str(bin_path), "-o", str(png), "--weights", w)
    assert r.returncode == 0 and png.stat().st_size > 0, r.stderr
    # no candidate weights match -> refused
    r = _cli("decode", str(bin_path), "-o", str(tmp_path / "b.png"))
    assert r.returncode != 0 and "no known model" in r.stderr
    data = bin_path.read_bytes()
    for name, bad in {"trunc": data[: len(data) // 2], "empty": b"", "flip": data[:40] + bytes([data[40] ^ 4]) + data[41:],
                      "random": np.random.default_rng(0).bytes(500)}.items():
        p = tmp_path / f"{name}.bin"
        p.write_bytes(bad)
        r = _cli("decode", str(p), "-o", str(tmp_path / f"{name}.png"), "--weights", w)
        assert r.returncode != 0 and r.stderr.count("\n") == 1 and r.stderr.startswith("error:"), (name, r.stderr)
        assert not (tmp_path / f"{name}.png").exists()
    (tmp_path / "x.png").write_text("not an image")
    r = _cli("encode", str(tmp_path / "x.png"), "-o", str(bin_path), "--model", w)
    assert r.returncode != 0 and r.stderr.count("\n") == 1
