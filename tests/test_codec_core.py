"""Codec core: colour conversion, bitstream container, integer scale decoder."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from codec import bitstream as bsf
from codec.color import rgb_to_ycbcr, rgb_to_yuv420, ycbcr_to_rgb, yuv420_to_rgb
from codec.intnet import IntConv2d, IntScaleDecoder
from codec.metrics import psnr_rgb, psnr_yuv


def test_ycbcr_bt709_roundtrip_and_known_values():
    rgb = torch.rand(2, 3, 9, 7)
    assert torch.allclose(ycbcr_to_rgb(rgb_to_ycbcr(rgb)), rgb, atol=1e-5)
    white = rgb_to_ycbcr(torch.ones(1, 3, 1, 1)).flatten()
    assert torch.allclose(white, torch.tensor([1.0, 0.5, 0.5]), atol=1e-6)
    red = rgb_to_ycbcr(torch.tensor([1.0, 0, 0]).view(1, 3, 1, 1)).flatten()
    assert red[0].item() == pytest.approx(0.2126) and red[2].item() == pytest.approx(1.0, abs=1e-6)


def test_420_sizes_and_flat_image_is_exact():
    rgb = torch.full((1, 3, 5, 7), 0.3)
    y, uv = rgb_to_yuv420(rgb)
    assert y.shape == (1, 1, 5, 7) and uv.shape == (1, 2, 3, 4)
    assert torch.allclose(yuv420_to_rgb(y, uv), rgb, atol=1e-6)


def test_metrics_identity_and_known_mse():
    a = np.zeros((4, 4, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 16  # MSE = 256 / 48
    assert psnr_rgb(a, b) == pytest.approx(10 * np.log10(255 ** 2 / (256 / 48)))
    assert psnr_yuv(a, a) == float("inf")


def _bs(**kw):
    base = dict(model_id=b"12345678", quality=2, height=10, width=20, streams=(b"abc", b""))
    base.update(kw)
    return bsf.Bitstream(**base)


def test_bitstream_roundtrip():
    data = bsf.pack(_bs())
    assert bsf.unpack(data) == _bs()


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d[:-1], "CRC"),
    (lambda d: d[:10], "too short"),
    (lambda d: b"XXXX" + d[4:], "magic"),
    (lambda d: d[:4] + bytes([9]) + d[5:], "version"),
    (lambda d: d[:20] + bytes([d[20] ^ 1]) + d[21:], "CRC"),
    (lambda d: b"", "too short"),
])
def test_bitstream_defects_are_refused(mutate, message):
    with pytest.raises(bsf.BitstreamError, match=message):
        bsf.unpack(mutate(bsf.pack(_bs())))


def test_absurd_sizes_refused_before_allocation():
    with pytest.raises(bsf.BitstreamError, match="outside"):
        bsf.check_size(0, 10)
    with pytest.raises(bsf.BitstreamError):
        bsf.check_size(16000, 16000)


def _reference_int_conv(layer: IntConv2d, x: np.ndarray) -> np.ndarray:
    """Pure-Python integer convolution with round-half-up requantisation (the specification)."""
    w, b, shift = (t.numpy().astype(np.int64) if hasattr(t, "numpy") else t for t in layer.integer_params())
    cout, cin, k, _ = w.shape
    _, h, wd = x.shape
    p = k // 2
    xp = np.pad(x, ((0, 0), (p, p), (p, p)))
    out = np.zeros((cout, h, wd), np.int64)
    for o, i, j in itertools.product(range(cout), range(h), range(wd)):
        acc = int(b[o]) + int((w[o] * xp[:, i:i + k, j:j + k]).sum())
        v = (acc + (1 << (shift - 1))) >> shift if shift > 0 else acc << -shift
        out[o, i, j] = min(max(v, 0), 255) if layer.relu else v
    return out


def test_integer_conv_matches_pure_python_reference():
    torch.manual_seed(1)
    layer = IntConv2d(3, 4, 3, in_bits=4, out_bits=4, relu=True)
    x = torch.randint(0, 256, (1, 3, 5, 6)).double()
    got = layer.int_forward(x)[0].long().numpy()
    assert np.array_equal(got, _reference_int_conv(layer, x[0].long().numpy()))


def test_scale_decoder_integer_path_equals_training_path_and_is_thread_independent():
    torch.manual_seed(0)
    net = IntScaleDecoder(16, 24, 40)
    z = torch.randint(-20, 21, (1, 16, 6, 9)).float()
    fake = net(z).detach()
    results = []
    for n in (1, 2):
        torch.set_num_threads(n)
        results.append(net.int_forward(z))
    torch.set_num_threads(1)
    assert torch.equal(results[0], results[1])
    assert results[0].dtype == torch.int64 and results[0].shape == (1, 40, 24, 36)
    # The float training path rounds half-to-even in float32; the integer path is the specification.
    # They may differ by one step on rare ties, never more.
    diff = (fake.long() - results[0]).abs()
    assert diff.max() <= 1 and diff.float().mean() < 0.01


def test_a_derived_weights_file_in_weights_is_a_model_name(tmp_path, monkeypatch):
    """weights/NAME.safetensors that is not a preset (e.g. student-2k-pruned) loads as --model NAME, is
    among the decoder's candidates, and the profiler takes the name too."""
    import codec.weights as cw
    from codec.registry import create_model
    from profiling.specs import _ours

    monkeypatch.setattr(cw, "WEIGHTS_DIR", tmp_path)
    model = create_model("student-1k")
    cw.save_weights(model, tmp_path / "student-1k-mine.safetensors")
    assert cw.shipped_models() == ["student-1k-mine"]
    loaded = cw.load_model("student-1k-mine")
    assert loaded.name == "student-1k"
    assert cw.find_model_for(cw.model_id(loaded)) is not None
    assert _ours("student-1k-mine").name == "student-1k"
    with pytest.raises(cw.WeightsError):
        cw.load_model("student-1k-other")
