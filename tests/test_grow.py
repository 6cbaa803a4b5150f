"""distill.grow: a student grown to a wider luma latent decodes what it did before it trains."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from distill.grow import grow_into, main as grow_main
from student.presets import StudentConfig, build_student

SMALL = StudentConfig(m_y=32, m_uv=16, widths_y=(8, 16, 32), widths_uv=(8, 16), blocks=(0, 1, 1), latent_blocks=2,
                      groups=4, z=16, hyper=32, ctx=16, fusion=32, scale_hidden=16, options=("gmm",))


def _trained_looking(cfg: StudentConfig, seed: int):
    """A small student whose every weight is non-zero (so no zero-initialised layer hides a wrong map)."""
    torch.manual_seed(seed)
    model = build_student(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


@pytest.mark.parametrize("groups", [1, 4])
def test_grown_model_reconstructs_what_the_old_one_did(groups):
    old = _trained_looking(replace(SMALL, groups=groups), 0)
    new = _trained_looking(replace(SMALL, groups=groups, m_y=48), 1)
    assert grow_into(old, new) == []
    torch.manual_seed(2)
    y, uv = torch.rand(1, 1, 128, 128), torch.rand(1, 2, 64, 64)
    with torch.no_grad():
        for q in (0, old.num_qualities - 1):
            a, b = old(y, uv, q), new(y, uv, q)
            torch.testing.assert_close(b["y"], a["y"], atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(b["uv"], a["uv"], atol=1e-4, rtol=1e-4)
            # the old channels keep their likelihoods; the new ones are coded beside them
            kept = torch.arange(32) // 8 * 12 + torch.arange(32) % 8 if groups == 4 else torch.arange(32)
            torch.testing.assert_close(b["likelihoods"]["y"][:, kept], a["likelihoods"]["y"], atol=1e-4, rtol=1e-4)


def test_narrower_context_and_fewer_blocks_keep_the_rest():
    old = _trained_looking(SMALL, 0)
    new = _trained_looking(replace(SMALL, m_y=48, ctx=8, latent_blocks=1), 1)
    dropped = grow_into(old, new)
    assert dropped and all(k.startswith("synthesis_y.latent.1.") for k in dropped)
    torch.testing.assert_close(new.synthesis_y.head[0].weight, old.synthesis_y.head[0].weight)
    assert new.context_y.weight.shape[0] == 8


def test_cli_grows_a_shipped_file_and_refuses_to_shrink(tmp_path, capsys):
    from codec.weights import load_model, weights_metadata

    out = tmp_path / "grown.safetensors"
    assert grow_main(["--init", "weights/student-2k-wide.safetensors", "--student", "student-2k-wide256",
                      "-o", str(out)]) == 0
    grown = load_model(str(out))
    assert grown.name == "student-2k-wide256" and grown.cfg.y_channels == 256
    old_meta, meta = weights_metadata("weights/student-2k-wide.safetensors"), weights_metadata(out)
    assert meta["step"] == old_meta["step"] and meta["history"].endswith("(python -m distill.grow)")
    assert grow_main(["--init", "weights/student-2k-wide.safetensors", "--student", "student-2k",
                      "-o", str(tmp_path / "bad.safetensors")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot grow 192") and "\n" not in err
