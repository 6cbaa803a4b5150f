"""The seed papers' modules (codec.modules): each one's shape, determinism and gradients, the options
wired into real codecs (identity at the start, bitstream round trip, MAC counts) and the ablation."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from codec.modules import OPTIONS
from codec.modules.attention import ChannelSelfAttention, HybridAttention
from codec.modules.enhancement import DenseEnhance, PostFilter
from codec.modules.mixture import GlobalContext, MixtureConditional
from codec.modules.quantization import AsymmetricConv2d, FourierRounding, LearnedDequant, make_asymmetric
from codec.modules.subimage import SubImageRefiner
from codec.registry import create_model, list_models, list_options


def _x(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _mean():
    return _x(2, 16, 4, 4, seed=1)


# name -> (module factory, inputs factory, output shapes)
CASES = {
    "hda": (lambda: HybridAttention(16), lambda: (_x(2, 16, 4, 4),), [(2, 16, 4, 4)]),
    "hda-3d": (lambda: HybridAttention(4, kernel=3, dims=3), lambda: (_x(2, 4, 4, 6, 6),), [(2, 4, 4, 6, 6)]),
    "sa": (lambda: ChannelSelfAttention(16), lambda: (_x(2, 16, 4, 4),), [(2, 16, 4, 4)]),
    "liq": (lambda: LearnedDequant(16), lambda: (_x(2, 16, 4, 4), _mean()), [(2, 16, 4, 4)]),
    "fenm": (lambda: DenseEnhance(16), lambda: (_x(2, 16, 4, 4),), [(2, 16, 4, 4)]),
    "pp": (lambda: PostFilter(16), lambda: (_x(2, 1, 64, 64), _x(2, 2, 32, 32), _mean()),
           [(2, 1, 64, 64), (2, 2, 32, 32)]),
    "qe": (lambda: PostFilter(16, use_mean=False), lambda: (_x(2, 1, 64, 64), _x(2, 2, 32, 32)),
           [(2, 1, 64, 64), (2, 2, 32, 32)]),
    "subimg": (lambda: SubImageRefiner(), lambda: (_x(2, 1, 16, 24),), [(2, 1, 16, 24)]),
    "qecm": (lambda: FourierRounding(), lambda: (_x(2, 16, 4, 4) * 3,), [(2, 16, 4, 4)]),
    "acb": (lambda: AsymmetricConv2d(8, 8, 3, padding=1, groups=8), lambda: (_x(2, 8, 6, 6),), [(2, 8, 6, 6)]),
    "gmm-context": (lambda: GlobalContext(8, 16), lambda: (_x(2, 8, 2, 3),), [(2, 16, 1, 1)]),
    "gmm": (lambda: MixtureConditional([0.11, 0.5, 2.0, 8.0]),
            lambda: (torch.round(_x(2, 16, 4, 4) * 3), torch.rand(2, 16, 4, 4) * 4 + 0.2, _mean()),
            [(2, 16, 4, 4)]),
}


def _outputs(module, inputs):
    out = module(*inputs)
    out = out if isinstance(out, tuple) else (out,)
    if isinstance(module, MixtureConditional):  # (quantised values, likelihoods)
        out = out[1:]
    return out


@pytest.mark.parametrize("case", CASES)
def test_module_shape_determinism_gradient(case):
    make, inputs, shapes = CASES[case]
    torch.manual_seed(0)
    module = make().eval()
    x = inputs()
    first, second = _outputs(module, x), _outputs(module, x)
    assert [tuple(o.shape) for o in first] == shapes
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    # Gradients reach every parameter. Zero-initialised last layers would block the ones before
    # them at the very start, so draw every parameter at random first.
    module.train()
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.3, generator=torch.Generator().manual_seed(p.numel()))
    x = tuple(t.clone().requires_grad_(t.is_floating_point()) for t in inputs())
    out = _outputs(module, x)
    loss = sum((o * _x(*o.shape, seed=7)).sum() for o in out) if case != "gmm" else -torch.log(out[0]).sum()
    loss.backward()
    params = dict(module.named_parameters())
    assert params
    for name, p in params.items():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("case", ["hda", "sa", "liq", "fenm", "pp", "qe", "subimg", "acb"])
def test_module_starts_as_identity(case):
    make, inputs, _ = CASES[case]
    module, x = make().eval(), inputs()
    out = _outputs(module, x)
    if case == "acb":
        plain = torch.nn.functional.conv2d(x[0], module.weight, module.bias, padding=1, groups=8)
        assert torch.equal(out[0], plain)
    else:
        for o, i in zip(out, x):
            assert torch.equal(o, i)


def test_asymmetric_kernels_fold_into_one():
    conv = AsymmetricConv2d(4, 6, 3, padding=1)
    for p in conv.parameters():
        torch.nn.init.normal_(p)
    x = _x(1, 4, 7, 7)
    F = torch.nn.functional
    branches = (F.conv2d(x, conv.weight, conv.bias, padding=1) + F.conv2d(x, conv.horizontal, padding=(0, 1))
                + F.conv2d(x, conv.vertical, padding=(1, 0)))
    assert torch.allclose(conv(x), branches, atol=1e-5)
    seq = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 3, padding=1, groups=4), torch.nn.Conv2d(4, 4, 1))
    assert make_asymmetric(seq) == 1 and isinstance(seq[0], AsymmetricConv2d) and type(seq[1]) is torch.nn.Conv2d


def test_fourier_rounding_approximates_rounding():
    x = torch.linspace(-3.3, 3.3, 67)
    frac = (x - torch.round(x)).abs()
    err = (FourierRounding()(x) - torch.round(x)).abs()
    assert err[frac < 0.35].max() < 0.06


def test_mixture_tables_match_its_likelihood():
    gm = MixtureConditional([0.3, 1.0, 4.0])
    with torch.no_grad():
        gm.logits.copy_(torch.tensor([1.0, 0.5, 0.0]))
        gm.shift.copy_(torch.tensor([0.0, 0.3, -0.5]))
    gm.update()
    for level, scale in enumerate([0.3, 1.0, 4.0]):
        half = -int(gm._offset[level])
        symbols = torch.arange(-half, half + 1).float()
        pmf = gm._likelihood(symbols, torch.full_like(symbols, scale))
        freq = torch.diff(gm._quantized_cdf[level, : gm._cdf_length[level]].double())[:-1] / 2 ** 16
        assert int(gm._cdf_length[level]) == 2 * half + 3
        assert torch.allclose(freq, pmf.double(), atol=2e-3)


def test_mixed_quantization_is_the_training_default():
    """Seed 000's mixed quantization: straight-through rounding for the synthesis path (the decoded
    latent sits on the rounding grid around the mean), uniform noise for the rate (likelihoods differ
    from draw to draw)."""
    model = create_model("student-1k").train()
    y, uv = torch.rand(1, 1, 64, 64), torch.rand(1, 2, 32, 32)
    a, b = model(y, uv, 2), model(y, uv, 2)
    gain, _ = model._gain(torch.tensor([2]))
    steps = (a["latent_hat"] - a["mean"]) * gain
    assert torch.allclose(steps, torch.round(steps), atol=1e-3)
    assert not torch.equal(a["likelihoods"]["y"], b["likelihoods"]["y"])
    assert "aux_loss" not in a and "aux_loss" in create_model("student-1k+fenm").train()(y, uv, 2)


def test_names_options_and_errors():
    assert all("+" not in m for m in list_models()) and set(list_options()) == set(OPTIONS)
    model = create_model("student-1k+hda+gmm")
    assert model.name == "student-1k+hda+gmm" and model.options == ("hda", "gmm")
    preset = create_model("student-2k-gmm+hda")
    assert preset.options == ("gmm", "hda") and isinstance(preset.gaussian_conditional, MixtureConditional)
    with pytest.raises(KeyError, match="unknown model option 'nope'; known: hda"):
        create_model("student-1k+nope")
    with pytest.raises(ValueError, match="given twice"):
        create_model("student-1k+hda+hda")
    from export.exporter import export_model
    with pytest.raises(ValueError, match="cannot export student-1k\\+hda\\+gmm: .*, not hda "):
        export_model(model, "/nonexistent/never-written")   # gmm exports, hda does not


def test_gmm_is_the_option_that_exports(tmp_path):
    """A model whose only option is gmm exports (its streams decode in ONNX: tests/test_export.py); any other
    option is refused in one line."""
    from export.exporter import export_model

    model = create_model("student-1k+gmm").eval()
    model.update(force=True)
    m = export_model(model, tmp_path, ort_format=False, encoder=False, log=lambda *_: None)
    assert m["options"] == ["gmm"] and m["decoder_networks"][-1] == "global_context"
    assert (tmp_path / "global_context.onnx").is_file()
    with pytest.raises(ValueError, match="cannot export student-1k\\+sa: .*, not sa "):
        export_model(create_model("student-1k+sa"), "/nonexistent/never-written")


def test_every_option_starts_at_its_base_model():
    torch.manual_seed(0)
    base = create_model("student-1k").eval()
    y, uv = torch.rand(1, 1, 64, 64), torch.rand(1, 2, 32, 32)
    with torch.no_grad():
        ref = base(y, uv, 3)
    for option in OPTIONS:
        model = create_model(f"student-1k+{option}")
        missing, unexpected = model.load_state_dict(base.state_dict(), strict=False)
        assert missing and not unexpected
        with torch.no_grad():
            out = model.eval()(y, uv, 3)
        assert torch.equal(out["y"], ref["y"]) and torch.equal(out["uv"], ref["uv"]), option


@pytest.mark.parametrize("options", ["hda+liq+pp+subimg+fenm+qecm+gmm+acb+sa", "qe"])
def test_bitstream_round_trip_with_options(options):
    from codec.api import decode_image, encode_image, reconstruct
    from codec.bitstream import unpack
    torch.manual_seed(1)
    model = create_model(f"student-1k+{options}").eval()
    model.update(force=True)
    image = (np.random.default_rng(0).random((70, 100, 3)) * 255).astype(np.uint8)
    for q in (0, 5):
        data = encode_image(model, image, q)
        assert len(unpack(data).streams[1]) > 0
        assert np.array_equal(decode_image(model, data), reconstruct(model, image, q))


def test_profiler_counts_the_self_attention_matmuls():
    from profiling import profile_model
    base = profile_model("student-1k", teacher=False, check_size=None)
    sa = profile_model("student-1k+sa", teacher=False, check_size=None)
    # per latent position (H/16 grid) of a 64-channel latent, dim 32, 2 heads: qkv 1x1, depthwise 3x3,
    # q k^T and attn v (16x16 per head each), output 1x1; once at the encoder, once at the decoder
    per_position = 64 * 96 + 96 * 9 + 2 * (2 * 16 * 16) + 32 * 64
    for side in ("encoder", "decoder"):
        assert sa.total(side) - base.total(side) == pytest.approx(per_position / 256 / 1000, rel=1e-9)


def test_ablation_command_end_to_end(tmp_path):
    """Two modules on a tiny untrained student for 1 step each, one small image: proves the wiring."""
    from PIL import Image

    from benchmarks.ablation import run
    from codec.images import load_rgb
    from photos import eval_images
    (tmp_path / "data").mkdir()
    Image.fromarray(load_rgb(eval_images()[0])[:128, :192]).save(tmp_path / "data" / "crop.png")
    r = run("student-1k", ["hda", "qecm"], steps=1, init="none", out=tmp_path / "out", data=tmp_path / "data",
            batch=2, run_root=tmp_path / "runs", progress=False, train_data=tmp_path / "data",
            limits={"encoder_kmac": 1.6, "decoder_kmac": 2.0})
    rows = {row["module"]: row for row in r["table"]}
    assert list(rows) == ["baseline", "baseline-seed1", "hda", "qecm"] and all(row["steps"] == 1 for row in rows.values())
    assert rows["hda"]["added_decoder_kmac"] > 0 and rows["qecm"]["added_decoder_kmac"] == 0
    assert rows["qecm"]["added_params"] == 5 and "vs_baseline" in rows["hda"]
    saved = json.loads((tmp_path / "out" / "ablation.json").read_text())
    assert {row["codec"] for row in saved["rows"]} == {"baseline", "baseline-seed1", "hda", "qecm", "jpeg"}
    md = (tmp_path / "out" / "ablation.md").read_text()
    assert "| `hda` |" in md and "| `qecm` |" in md and "**1 steps**" in md and "Run-to-run noise" in md
    with pytest.raises(ValueError, match="unknown model option 'nope'"):
        run("student-1k", ["nope"], steps=1)


def test_base_weights_load_partially_into_an_option_model(tmp_path):
    from codec.registry import create_model
    from codec.weights import WeightsError, load_weights, save_weights

    path = save_weights(create_model("student-1k"), tmp_path / "base.safetensors")
    option = create_model("student-1k+hda")
    with pytest.raises(WeightsError):
        load_weights(option, path)
    load_weights(option, path, partial=True)
    base = create_model("student-1k")
    load_weights(base, path)
    shared = base.state_dict()
    assert all(torch.equal(v, shared[k]) for k, v in option.state_dict().items() if k in shared)
    with pytest.raises(WeightsError, match="do not fit"):
        load_weights(create_model("student-2k"), path, partial=True)


def test_deeper_preset_starts_as_the_model_it_grew_from(tmp_path):
    """student-2k-gmm weights load into student-2k-gmm-deep with its extra blocks as identities (same latents,
    same picture), and the deeper model stays inside both 35x budgets and 2.0 decoder kMAC/px."""
    from codec.registry import create_model
    from codec.weights import load_weights, save_weights
    from profiling.profile import profile_model

    base = create_model("student-2k-gmm").eval()
    path = save_weights(base, tmp_path / "base.safetensors", half=False)
    deep = load_weights(create_model("student-2k-gmm-deep"), path, partial=True).eval()
    x, uv = torch.rand(1, 1, 64, 64), torch.rand(1, 2, 32, 32)
    with torch.no_grad():
        assert torch.equal(base.analysis_y(x), deep.analysis_y(x))
        assert torch.equal(base.analysis_uv(uv), deep.analysis_uv(uv))
        latent = base.analysis_y(x)
        assert torch.equal(base.synthesis_y(latent)[0], deep.synthesis_y(latent)[0])
    extra = [k for k in deep.state_dict() if k not in base.state_dict()]
    assert extra and all(k.startswith(("analysis_y.", "analysis_uv.", "synthesis_y.latent.")) for k in extra)
    report, shallow = profile_model(deep, check_size=None), profile_model(base, teacher=False, check_size=None)
    assert report.total("encoder") > shallow.total("encoder") and report.total("decoder") > shallow.total("decoder")
    assert report.ratio("encoder") >= 35 and report.ratio("decoder") >= 35 and report.total("decoder") <= 2.0
