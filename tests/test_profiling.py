"""Tests of the MAC profiler: hand counts per layer type, external figures, the teacher, the CLI."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from compressai.layers import GDN, CheckerboardMaskedConv2d, MaskedConv2d

from codec.intnet import IntConv2d, IntScaleDecoder
from profiling import MacCounter, ProfilingError, profile_model
from profiling.__main__ import main

ROOT = Path(__file__).resolve().parent.parent
H = W = 16  # input size of the single-layer hand counts


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def teacher_report():
    return profile_model("teacher")


def count(module: nn.Module, *shape: int, device: str = "meta"):
    c = MacCounter(module, device)
    return c.run(c.tensor(*shape))


def zero_ops(result) -> set[str]:
    return {op for ops in result.zero_ops.values() for op in ops}


# ---- hand counts, one per layer type -------------------------------------------------------------
@pytest.mark.parametrize("layer, expected", [
    (nn.Conv2d(8, 16, 3, padding=1), 16 * 8 * 9 * H * W),
    (nn.Conv2d(8, 16, 5, stride=2, padding=2), 16 * 8 * 25 * (H // 2) * (W // 2)),
    (nn.Conv2d(8, 16, 3, padding=1, groups=4), 16 * 2 * 9 * H * W),
    (nn.Conv2d(8, 8, 3, padding=1, groups=8), 8 * 1 * 9 * H * W),                 # depthwise
    (nn.Conv2d(8, 16, 1), 16 * 8 * H * W),
    (nn.ConvTranspose2d(8, 4, 5, stride=2, padding=2, output_padding=1), 8 * 4 * 25 * H * W),  # input grid
    (nn.ConvTranspose2d(8, 4, 3, stride=2, padding=1, output_padding=1, groups=2), 8 * 2 * 9 * H * W),
    (GDN(8), 8 * 8 * H * W),
    (GDN(8, inverse=True), 8 * 8 * H * W),
    (CheckerboardMaskedConv2d(8, 16, 5, padding=2), 16 * 8 * 12 * H * W),         # 12 of 25 taps
    (MaskedConv2d(8, 16, 5, padding=2, mask_type="A"), 16 * 8 * 12 * H * W),
    (MaskedConv2d(8, 16, 5, padding=2, mask_type="B"), 16 * 8 * 13 * H * W),
    (nn.PixelShuffle(2), 0),
    (nn.LeakyReLU(), 0),
])
def test_hand_counts(layer, expected):
    assert count(layer, 1, 8, H, W).total == expected


def test_linear_hand_count():
    assert count(nn.Linear(32, 10), 4, 32).total == 4 * 32 * 10
    assert count(nn.Linear(32, 10), 2, 5, 32).total == 2 * 5 * 32 * 10


def test_zero_mac_ops_are_listed():
    ops = zero_ops(count(nn.Sequential(nn.Conv2d(8, 16, 3), nn.PixelShuffle(2), nn.LeakyReLU(), GDN(4)), 1, 8, H, W))
    assert {"pixel_shuffle", "leaky_relu", "pow", "rsqrt", "mul"} <= ops


def test_batch_and_masked_module_in_a_tree():
    net = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), CheckerboardMaskedConv2d(8, 8, 5, padding=2))
    r = count(net, 2, 4, H, W)
    hand = 2 * (8 * 4 * 9 + 8 * 8 * 12) * H * W
    assert r.total == hand and r.macs["1"] == 2 * 8 * 8 * 12 * H * W and r.self_macs["0"] == 2 * 8 * 4 * 9 * H * W


def test_integer_layers_count_the_same_on_both_paths():
    layer = IntConv2d(8, 16, 3, in_bits=0, out_bits=4, relu=True)
    c = MacCounter(layer)
    x = c.tensor(1, 8, H, W)
    hand = 16 * 8 * 9 * H * W
    assert c.run(x).total == hand
    assert c.count(lambda: c.shadow.int_forward(x.double())).total == hand   # unfold + matmul
    net = IntScaleDecoder(8, 6, 10)
    hand = (6 * 8 * 9 * 16) + (24 * 6 * 9 * 16) + (24 * 6 * 9 * 64) + (10 * 6 * 1 * 256)  # z on 4x4
    for device in ("meta", "cpu"):
        c = MacCounter(net, device)
        z = c.tensor(1, 8, 4, 4).round()
        assert c.run(z).total == hand
        assert c.count(lambda: c.shadow.int_forward(z)).total == hand


def test_meta_count_equals_real_execution():
    from codec.registry import create_model
    model = create_model("teacher")
    counts = []
    for device in ("meta", "cpu"):
        c = MacCounter(model, device)
        counts.append(c.run(c.tensor(1, 1, 128, 128), c.tensor(1, 2, 64, 64), 0).macs)
    assert counts[0] == counts[1]


# ---- external figures (fvcore, 768x512) ----------------------------------------------------------
def _kmac(report, name):
    return next(r for r in report.rows if r.name == name).macs / report.pixels / 1000


def test_bmshj2018_hyperprior_matches_fvcore_figures():
    r = profile_model("compressai:bmshj2018-hyperprior:3", teacher=False, check_size=None)
    assert _kmac(r, "g_s") == pytest.approx(42.18, rel=5e-3)
    assert _kmac(r, "h_s") == pytest.approx(1.36, rel=5e-3)
    assert r.total("decoder") == pytest.approx(43.5, rel=5e-3)


def test_mbt2018_matches_fvcore_figures_with_masked_context():
    r = profile_model("compressai:mbt2018:3", teacher=False, check_size=None)
    assert _kmac(r, "g_s") == pytest.approx(91.30, rel=5e-3)
    assert _kmac(r, "h_s") == pytest.approx(5.46, rel=5e-3)
    assert _kmac(r, "entropy_parameters") == pytest.approx(3.97, rel=5e-3)
    assert _kmac(r, "context_prediction") == pytest.approx(7.2 * 12 / 25, rel=5e-3)   # about 3.5, not 7.2
    assert r.total("decoder") == pytest.approx(91.296 + 5.463 + 3.968 + 3.456, rel=1e-3)


def test_agrees_with_fvcore_on_dense_layers():
    import logging

    from compressai.zoo import mbt2018
    from fvcore.nn import FlopCountAnalysis
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    model = mbt2018(quality=3, pretrained=False).eval()
    y = torch.rand(1, 192, 4, 6)
    for name, x in (("g_s", y), ("h_s", torch.rand(1, 192, 1, 2)), ("context_prediction", y)):
        fv = FlopCountAnalysis(getattr(model, name), x).unsupported_ops_warnings(False).total()
        ours = count(getattr(model, name), *x.shape).total
        assert ours == (fv * 12 / 25 if name == "context_prediction" else fv), name


def test_agrees_with_fvcore_on_our_student_transforms():
    """fvcore, an independent MAC counter, on the student's own dense transforms (DS blocks, shuffles)."""
    import logging

    from fvcore.nn import FlopCountAnalysis

    from codec.registry import create_model
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    model = create_model("student-2k").eval()
    with torch.no_grad():
        latent = model._analyse(torch.rand(1, 1, 128, 192), torch.rand(1, 2, 64, 96))
    ly, _ = model._split(latent)
    for name, x in (("analysis_y", torch.rand(1, 1, 128, 192)), ("synthesis_y", ly),
                    ("hyper_analysis", latent)):
        fv = FlopCountAnalysis(getattr(model, name), x).unsupported_ops_warnings(False).total()
        ours = MacCounter(getattr(model, name), device="cpu").run(x).macs[""]
        assert fv > 0 and ours == fv, name


# ---- our codecs ----------------------------------------------------------------------------------
def test_teacher_report(teacher_report):
    r = teacher_report
    assert 62 <= r.total("decoder") <= 76
    names = {row.name for row in r.rows if row.sides}
    assert names >= {"analysis_y", "analysis_uv", "hyper_analysis", "hyper_decoder_y", "hyper_decoder_uv",
                     "scale_decoder", "context_y", "context_uv", "fusion_y", "fusion_uv", "synthesis_y",
                     "synthesis_uv"}
    dec = {row.label for row in r.side_rows("decoder") if row.macs}
    assert {"synthesis Y", "synthesis UV", "hyper decoder Y", "integer scale decoder", "context model Y"} <= dec
    assert not {"analysis Y", "hyper analysis"} & dec
    scale = next(row for row in r.rows if row.name == "scale_decoder")
    assert scale.integer_macs == scale.macs > 0
    assert r.integer_check[0]["int_forward_macs"] == scale.macs
    assert "12/25" in next(row for row in r.rows if row.name == "context_y").masked
    assert r.ratio("decoder") == r.ratio("encoder") == 1.0
    d = json.loads(r.to_json())
    assert sum(m["share"] for m in d["decoder"]["modules"]) == pytest.approx(1.0)
    assert sum(m["kmac_per_px"] for m in d["encoder"]["modules"]) == pytest.approx(d["encoder"]["kmac_per_px"])
    table = r.to_table()
    assert "0-MAC ops present" in table and "leaky_relu_" in table and "pixel_shuffle" in table
    assert "synthesis UV" in r.to_markdown()


@pytest.mark.parametrize("name", ["student-2k", "student-2k-gmm", "student-2k-gmm-deep", "student-2k-wide",
                                  "student-2k-wide256"])
def test_2k_presets_fit_the_challenge_budgets(name, teacher_report):
    """Decoder <= 2.0 kMAC/px, and both sides at least 35x below the teacher's."""
    r = profile_model(name, teacher=False, check_size=None)
    assert r.total("decoder") <= 2.0
    for side in ("encoder", "decoder"):
        assert r.total(side) * 35 <= teacher_report.total(side)


def test_size_independent(teacher_report):
    check = teacher_report.size_check
    assert (check["width"], check["height"], check["proc_height"]) == (1920, 1080, 1088)
    assert check["within_1pct"] and 0 < check["decoder_diff"] < 0.01
    big = profile_model("teacher", 1088, 1920, teacher=False, check_size=None)
    for side in ("encoder", "decoder"):
        assert big.total(side) == pytest.approx(teacher_report.total(side), rel=1e-9)


def test_checkpoint_spec(tmp_path, teacher_report):
    from codec.registry import create_model
    from codec.weights import save_weights
    path = save_weights(create_model("teacher"), tmp_path / "t.safetensors")
    r = profile_model(str(path), teacher=False, check_size=None)
    assert r.total("decoder") == teacher_report.total("decoder")


def test_module_without_role_fails_loudly():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.g_s, self.post = nn.Conv2d(3, 3, 1), nn.Conv2d(3, 3, 3, padding=1)

        def forward(self, x):
            return self.post(self.g_s(x))

    with pytest.raises(ProfilingError, match="post"):
        profile_model(Odd(), 64, 64, teacher=False)


# ---- command line --------------------------------------------------------------------------------
def test_cli_teacher_json_and_budget_exit():
    p = subprocess.run([sys.executable, "-m", "profiling", "report", "--model", "teacher", "--format", "json",
                        "--budget", "2000"], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 2
    assert 62 <= json.loads(p.stdout)["decoder"]["kmac_per_px"] <= 76
    assert "over budget" in p.stderr and "synthesis Y" in p.stderr


def test_cli_within_budget_and_errors(capsys):
    assert main(["report", "--model", "compressai:bmshj2018-hyperprior:3", "--budget", "50000"]) == 0
    out = capsys.readouterr()
    assert "within budget" in out.err and "ratio to teacher" in out.out
    for argv in (["report", "--model", "nope"], ["report", "--model", "compressai:mbt2018:99"],
                 ["report", "--model", "compressai:nope:1"], ["report"],
                 ["report", "--model", "teacher", "--height", "0"]):
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err


def test_cli_all(tmp_path, capsys):
    assert main(["all", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "budget.json").read_text())
    assert "teacher" in data["models"]
    md = (tmp_path / "budget.md").read_text()
    assert "| teacher |" in md and "budget_decoder.png" in md
    assert (tmp_path / "budget_decoder.png").read_bytes()[:4] == b"\x89PNG"
