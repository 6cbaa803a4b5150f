"""Structured pruning: zeroing the channels to remove, then removing them, changes the output by exactly 0;
the custom pruners (PixelShuffle, PixelUnshuffle, ChannelShuffle, GDN) map channels right; a pruned model
round-trips through safetensors + plan replay in the core (codec.weights.load_model) and codes an image;
the decoder gets cheaper; the command line runs end to end."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
from compressai.layers import GDN

from codec.pruned import PlanError, replay
from codec.registry import create_model
from codec.weights import load_model, save_weights, weights_metadata
from distill import prune as P
from student.blocks import ChannelShuffle


def _perturbed(name: str):
    """A preset with every weight moved off its initial value (biases nonzero, GDN-free students)."""
    torch.manual_seed(0)
    model = create_model(name).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def _planes():
    g = torch.Generator().manual_seed(1)
    return torch.rand(1, 1, 128, 192, generator=g), torch.rand(1, 2, 64, 96, generator=g)


def _some_steps(model) -> list[dict]:
    """Two units of every stream that has three or more (first and last), as pruning steps."""
    return [{"root": s.root, "idxs": sorted(s.units[0] + s.units[-1])}
            for s in P.find_streams(model) if len(s.units) >= 3]


@pytest.mark.parametrize("name", ["student-1k", "student-2k"])
def test_zeroed_channels_remove_exactly(name):
    model = _perturbed(name)
    planes = _planes()
    with torch.no_grad():
        before = model(*planes, 2)
    steps = _some_steps(model)
    assert {s["root"] for s in steps} >= {"synthesis_y.body.0.1", "synthesis_y.body.2.1", "synthesis_uv.body.3"}
    for s in steps:
        P.zero_stream(model, s["root"], s["idxs"])
    with torch.no_grad():
        zeroed = model(*planes, 2)
    assert not torch.equal(before["y"], zeroed["y"])           # the zeroed channels were live
    P.apply_steps(model, steps)
    with torch.no_grad():
        pruned = model(*planes, 2)
    for key in ("y", "uv", "latent_hat", "scale_index"):
        assert torch.equal(zeroed[key], pruned[key]), key


def test_grouped_stream_prunes_in_whole_units():
    model = _perturbed("student-2k")
    s8 = next(s for s in P.find_streams(model) if s.root == "synthesis_y.body.0.1")
    assert s8.width == 96 and len(s8.units) == 6 and all(len(u) == 16 for u in s8.units)
    with pytest.raises(ValueError, match="whole pruning units"):
        P.prune_stream(model, s8.root, [5])
    with pytest.raises(ValueError, match="cannot be pruned"):
        P.prune_stream(model, "synthesis_y.head.1", [0])        # the luma output


def test_pixel_shuffle_pruner_maps_channel_groups():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 12, 1), nn.PixelShuffle(2), nn.Conv2d(3, 2, 1)).eval()
    x = torch.randn(1, 3, 4, 4)
    w0, w2 = net[0].weight.detach().clone(), net[2].weight.detach().clone()
    dg = P.build_graph(net, (x,))
    group = P.channel_group(dg, net[1], [1])
    removed = {(type(i.dep.target.module).__name__, i.dep.handler.__name__): sorted(i.idxs) for i in group}
    assert removed[("Conv2d", "prune_out_channels")] == [4, 5, 6, 7]
    assert removed[("Conv2d", "prune_in_channels")] == [1]
    P.zero_group(group)
    with torch.no_grad():
        zeroed = net(x)
    group.prune(record_history=False)
    assert torch.equal(net[0].weight, w0[[0, 1, 2, 3, 8, 9, 10, 11]])
    assert torch.equal(net[2].weight, w2[:, [0, 2]])
    with torch.no_grad():
        assert torch.equal(net(x), zeroed)


def test_pixel_unshuffle_pruner_maps_channel_groups():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 3, 1), nn.PixelUnshuffle(2), nn.Conv2d(12, 2, 1)).eval()
    x = torch.randn(1, 3, 4, 4)
    w2 = net[2].weight.detach().clone()
    dg = P.build_graph(net, (x,))
    group = P.channel_group(dg, net[0], [2])
    P.zero_group(group)
    with torch.no_grad():
        zeroed = net(x)
    group.prune(record_history=False)
    assert net[0].out_channels == 2 and torch.equal(net[2].weight, w2[:, :8])
    with torch.no_grad():
        assert torch.equal(net(x), zeroed)


def test_channel_shuffle_maps_match_the_module():
    shuffle = ChannelShuffle(4)
    x = torch.arange(24.0).view(1, 24, 1, 1)
    out = shuffle(x).flatten().long().tolist()          # out[j] = input channel feeding output j
    pruner = P.ChannelShufflePruner({shuffle: (24, 24)})
    to_in, to_out = pruner.out_to_in(shuffle), pruner.in_to_out(shuffle)
    assert [to_in(j)[0] for j in range(24)] == out
    assert all(to_out(to_in(j)[0]) == [j] for j in range(24))


def test_gdn_pruner_zero_then_remove():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), GDN(6), nn.Conv2d(6, 2, 1)).eval()
    with torch.no_grad():
        net[1].gamma.add_(torch.rand_like(net[1].gamma) * 0.1)
    x = torch.randn(1, 3, 8, 8)
    dg = P.build_graph(net, (x,))
    group = P.channel_group(dg, net[0], [1, 4])
    P.zero_group(group)
    with torch.no_grad():
        zeroed = net(x)
    group.prune(record_history=False)
    assert net[1].beta.shape == (4,) and net[1].gamma.shape == (4, 4) and net[2].in_channels == 4
    with torch.no_grad():
        assert torch.equal(net(x), zeroed)


def _pruned_file(tmp_path, half=False):
    model = _perturbed("student-2k")
    P.apply_steps(model, _some_steps(model))
    model.update(force=True)
    return model, save_weights(model, tmp_path / "pruned.safetensors", half=half)


def test_plan_round_trips_through_load_model(tmp_path):
    model, path = _pruned_file(tmp_path)
    loaded = load_model(str(path))
    assert loaded.pruned_plan["steps"] == model.pruned_plan["steps"]
    sd, sd2 = model.state_dict(), loaded.state_dict()
    assert sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)
    planes = _planes()
    with torch.no_grad():
        a, b = model(*planes, 3), loaded(*planes, 3)
    assert torch.equal(a["y"], b["y"]) and torch.equal(a["uv"], b["uv"])
    plan = weights_metadata(path)["pruned_plan"]
    replayed = replay(create_model("student-2k"), plan)          # the core alone, no torch-pruning
    assert {k: v.shape for k, v in replayed.state_dict().items() if "synthesis" in k} == \
           {k: v.shape for k, v in sd.items() if "synthesis" in k}
    legacy = {"format": P.LEGACY_FORMAT, "preset": "student-2k",
              "steps": [{"root": s["root"], "idxs": s["idxs"]} for s in model.pruned_plan["steps"]]}
    upgraded = P.apply_plan(create_model("student-2k"), legacy)
    assert upgraded.pruned_plan["steps"] == model.pruned_plan["steps"]
    with pytest.raises(PlanError, match="plan is for"):
        replay(create_model("student-1k"), plan)
    with pytest.raises(PlanError, match="unknown pruning plan format"):
        replay(create_model("student-2k"), json.dumps(legacy))


BLOCKED_CLI = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("distill", "torch_pruning"):
            raise ImportError(name + " is blocked: the core must load pruned weights alone")
sys.meta_path.insert(0, Block())
from codec.__main__ import main
w, img, bin_, png = sys.argv[1:]
assert main(["encode", img, "-o", bin_, "--model", w, "--quality", "2"]) == 0
assert main(["decode", bin_, "-o", png, "--weights", w]) == 0
"""


def test_pruned_file_codes_an_image_through_the_core(tmp_path):
    import subprocess
    import sys

    import numpy as np
    from PIL import Image

    from codec.api import decode_image, encode_image

    _, path = _pruned_file(tmp_path, half=True)
    model = load_model(str(path))
    rng = np.random.default_rng(0)
    img = (rng.random((70, 90, 3)) * 255).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "in.png")
    data = encode_image(model, img, 2)
    assert decode_image(model, data).shape == img.shape
    r = subprocess.run([sys.executable, "-c", BLOCKED_CLI, str(path), str(tmp_path / "in.png"),
                        str(tmp_path / "a.bin"), str(tmp_path / "a.png")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "a.bin").read_bytes() == data
    assert np.array_equal(np.asarray(Image.open(tmp_path / "a.png")), decode_image(model, data))


def test_prune_to_target_lowers_decoder_macs():
    model = create_model("student-1k").eval()
    rounds = []
    pruned, history = P.prune_to_target(model, 0.5, rounds=2, finetune=lambda m, r: rounds.append(r) or {},
                                        log=lambda *_: None)
    assert rounds == [1, 2] and len(history) == 3
    kmacs = [h["decoder_kmac"] for h in history]
    assert kmacs[0] > kmacs[1] > kmacs[2] and kmacs[2] <= 0.5
    assert history[2]["encoder_kmac"] == pytest.approx(history[0]["encoder_kmac"])   # encoder untouched
    assert pruned.cfg.y_channels == model.cfg.y_channels
    assert all(pruned.pruned_plan["widths"][k] <= w for k, w in history[0]["widths"].items())
    with pytest.raises(ValueError, match="outside the synthesis"):
        P.prune_to_target(model, 0.1, log=lambda *_: None)


def test_command_line_end_to_end(tmp_path, capsys):
    from PIL import Image

    from photos import eval_images
    from distill.prune_cli import main

    student = create_model("student-1k").eval()
    student.update(force=True)
    src = save_weights(student, tmp_path / "student-1k.safetensors")
    out = tmp_path / "student-1k-pruned.safetensors"
    (tmp_path / "eval").mkdir()
    Image.open(eval_images()[0]).convert("RGB").crop((0, 0, 256, 192)).save(tmp_path / "eval" / "crop.png")
    code = main(["--student", str(src), "--no-kd", "--target-kmac", "0.55", "--rounds", "1",
                 "--finetune-steps", "2", "--eval-data", str(tmp_path / "eval"), "--threads", "1", "--quiet",
                 "-o", str(out), "--run-dir", str(tmp_path / "run"), "--results", str(tmp_path / "results")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert summary["reached"] and summary["decoder_kmac"] <= 0.55
    res = json.loads((tmp_path / "results" / "prune.json").read_text())
    assert [h["round"] for h in res["rounds"]] == [0, 1] and "rd" in res
    assert "BD-rate" in (tmp_path / "results" / "prune.md").read_text()
    assert load_model(str(out)).pruned_plan["steps"]


def test_rankings_share_the_cut_as_documented():
    cheap = P.Stream("a", 4, [[0], [1], [2], [3]], importance=[1, 2, 3, 4], macs=[1, 1, 1, 1])
    dear = P.Stream("b", 2, [[0], [1]], importance=[5, 1], macs=[10, 10])
    uniform = [(r[1], r[2]) for r in P.rank_units([cheap, dear], "uniform")]
    assert uniform[:3] == [("a", [0]), ("a", [1]), ("b", [1])]        # quarter of a, then half of each
    assert P.rank_units([cheap, dear], "per-mac")[0][1] == "b"
    steps, n = P.select_steps([cheap, dear], need_macs=12, keep={"a": 2, "b": 1})
    assert n == 3 and steps == [{"root": "a", "idxs": [0, 1]}, {"root": "b", "idxs": [1]}]
    steps, n = P.select_steps([cheap, dear], need_macs=1.5, keep={"a": 2, "b": 1})
    assert n == 2 and steps == [{"root": "a", "idxs": [0, 1]}]       # a's next channel fills the need
    steps, n = P.select_steps([cheap, dear], need_macs=0.5, keep={"a": 2, "b": 1}, min_units=2)
    assert n == 2
    with pytest.raises(ValueError):
        P.rank_units([cheap], "random")


def test_a_pruned_file_trains_on_with_its_plan(tmp_path):
    """`python -m distill --init PRUNED` trains the pruned shapes and exports them with the same plan."""
    from distill.losses import KDWeights
    from distill.train import distill

    _, path = _pruned_file(tmp_path, half=True)
    import numpy as np
    from PIL import Image

    img = tmp_path / "train.png"
    Image.fromarray((np.random.default_rng(0).random((96, 96, 3)) * 255).astype(np.uint8)).save(img)
    res = distill("student-2k", None, tmp_path / "run", [img], "quick", steps=2, batch=2, crop=64,
                  init=path, resume=False, progress=False, kd=KDWeights(0, 0, 0), log_every=1)
    out = load_model(res["weights"])
    assert out.pruned_plan["steps"] == load_model(str(path)).pruned_plan["steps"]
    assert res["steps"] == 2
