"""Quantisation-aware fine-tuning (QAT) of the decoder-side networks for the INT8 export.

    python -m export.qat --model SPEC -o OUT.safetensors [--steps 300] [--lr 1e-4] [--threads 1]
    python -m export --model OUT.safetensors -o DIR --int8      # the same ORT calibration as without QAT

While the networks the INT8 decoder runs (hyper decoders, context, fusion, synthesis) are fine-tuned with
the rate-distortion loss, every convolution that ORT's QDQ quantiser will quantise (``export.int8``:
every one except the recipe's float boundary nodes and operator types) sees its weights fake-quantised as
ORT quantises them (symmetric per output channel in the recipe's weight type, scale = max|w| / 127 for int8;
fusion's first convolution per input, as ``export.nets.Fusion`` splits it) and its input and output
activations fake-quantised per tensor in the recipe's activation type (uint8 or uint16, asymmetric, min/max
ranges), with straight-through gradients (torch.ao.quantization); networks the recipe keeps FP32 train
unquantised. The recipe is ``export.int8.recipe_for`` (names in ``float_nodes`` are ONNX node names with no
torch counterpart here; the shipped recipes use none). So are the other
tensors ORT quantises: activation outputs (Hardswish as x * HardSigmoid(x), both quantised) and the
residual blocks' sums. The ranges come from the calibration ORT's quantiser uses (``export.int8``: training
crops through the coding path, rate points cycled) and stay fixed while training. Observed during development with one-off
scripts (indicative, not a repo command; `make deploy` gives the measured INT8/QAT figures), on student-2k (3
evaluation images, rate points 1, 3, 5), PSNR-YUV change of the torch fake-quantised decoder against FP32: -0.68 dB, where ORT's INT8
export loses -0.82 dB (per network the two agree within 0.07 dB; synthesis differs most); after 300 QAT
steps -0.57 and -0.71 dB (all on the previous, uint8 recipe). Moving-average ranges (torch's QAT default) gave -2.6 dB observed on the
training pass and -8.4 dB on the coding path, and fine-tuning under them did not carry over to ORT.
"""
from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.ao.quantization import FakeQuantize, MinMaxObserver

from codec.blocks import Synthesis
from codec.paths import RUNS_DIR
from student.blocks import DSBlock

from .int8 import recipe_for
from .nets import DECODER_NETS

W_QMAX = {"int8": 127, "int16": 32767}     # ORT's symmetric weight ranges (-qmax..qmax)
A_QMAX = {"uint8": (255, torch.quint8), "uint16": (65535, torch.int32)}
FLOAT_OPS = {"Conv": nn.Conv2d, "ConvTranspose": nn.ConvTranspose2d}   # ONNX operator -> torch module
CONVS = (nn.Conv2d, nn.ConvTranspose2d)
# Layers whose output ORT's QDQ quantiser quantises too: activations, and the residual blocks' Add.
OUTPUTS = (nn.Hardswish, nn.LeakyReLU, nn.ReLU, DSBlock)
QUANTISED = CONVS + OUTPUTS
# ONNX network -> the codec's modules it holds
MODULES = {"synthesis": ("synthesis_y", "synthesis_uv")} | {n: (n,) for n in DECODER_NETS if n != "synthesis"}
TRAINED = tuple(m for ms in MODULES.values() for m in ms)


def fake_quant_weight(w: torch.Tensor, axis: int, splits: list[int] | None = None,
                      qmax: int = 127) -> torch.Tensor:
    """Symmetric per-channel fake quantisation to -qmax..qmax along ``axis`` (scale max|w| / qmax, zero
    point 0); ``splits``: input-channel slices (dim 1) quantised with their own scales."""
    parts = torch.split(w, splits, 1) if splits else (w,)
    out = []
    for p in parts:
        scale = p.detach().abs().amax(dim=[d for d in range(p.dim()) if d != axis]).clamp_min(1e-12) / qmax
        zero = torch.zeros(scale.shape, dtype=torch.int32, device=p.device)
        out.append(torch.fake_quantize_per_channel_affine(p, scale.float(), zero, axis, -qmax, qmax))
    return torch.cat(out, 1) if splits else out[0]


def activation_fq(activations: str = "uint8") -> FakeQuantize:
    """Per-tensor fake quantiser (``activations``: "uint8" or "uint16") with a min/max range (zero always
    in range), as ORT's MinMax."""
    qmax, dtype = A_QMAX[activations]
    return FakeQuantize(observer=MinMaxObserver, quant_min=0, quant_max=qmax, dtype=dtype,
                        qscheme=torch.per_tensor_affine)


class QATHandle:
    """The fake quantisers attached to a model; ``remove()`` restores the plain modules."""

    def __init__(self):
        self.quantizers = nn.ModuleList()
        self.wrapped: list[nn.Module] = []      # modules whose forward is replaced
        self.hooks: list = []

    def fq(self, activations: str = "uint8") -> FakeQuantize:
        """A new activation quantiser owned by this handle."""
        self.quantizers.append(activation_fq(activations))
        return self.quantizers[-1]

    @torch.no_grad()
    def calibrate(self, model, crops: list) -> None:
        """Set every activation range from ``crops`` passed through the coding path (encoder, both
        checkerboard passes, synthesis), rate points cycled, then fix the ranges and quantise."""
        from codec.api import pad_planes
        from codec.color import to_tensor

        for fq in self.quantizers:
            fq.disable_fake_quant()
            fq.enable_observer()
        for i, img in enumerate(crops):
            y, uv = pad_planes(to_tensor(img), model.cfg.multiple)
            st = model.encode_latents(y, uv, i % model.num_qualities)
            model.synthesize(st["y_hat"], st["uv_hat"])
        for fq in self.quantizers:
            fq.enable_fake_quant()
            fq.disable_observer()

    def remove(self) -> None:
        """Detach every quantiser: the model computes in float again."""
        for m in self.wrapped:
            del m.forward
        for h in self.hooks:
            h.remove()
        self.wrapped, self.hooks = [], []


def _wrap(conv: nn.Module, in_fq, out_fq, splits: list[int] | None, qmax: int) -> None:
    """Make ``conv`` run with fake-quantised weights and (optionally) input and output activations."""
    mask = getattr(conv, "mask", None)      # checkerboard masked convolution: mask folded as at export
    transposed = isinstance(conv, nn.ConvTranspose2d)

    def forward(x, output_size=None):
        w = fake_quant_weight(conv.weight if mask is None else conv.weight * mask, 1 if transposed else 0, splits, qmax)
        x = in_fq(x) if in_fq is not None else x
        if transposed:
            y = F.conv_transpose2d(x, w, conv.bias, conv.stride, conv.padding, conv.output_padding, conv.groups,
                                   conv.dilation)
        else:
            y = conv._conv_forward(x, w, conv.bias)
        return out_fq(y) if out_fq is not None else y

    conv.forward = forward


def _wrap_hardswish(act: nn.Module, gate_fq, out_fq) -> None:
    """Hardswish as ONNX has it, x * HardSigmoid(x), with the gate and the product fake-quantised."""
    act.forward = lambda x: out_fq(x * gate_fq(F.hardsigmoid(x)))


def _boundary(net: nn.Module, inputs: tuple) -> tuple[set, set]:
    """(quantised layers reading a network input, those writing a network output), by tracing once."""
    seen, hooks = {}, []
    for m in net.modules():
        if isinstance(m, QUANTISED):
            hooks.append(m.register_forward_hook(lambda m, i, o: seen.__setitem__(m, (i[0], o))))
    with torch.no_grad():
        out = net(*inputs)
    for h in hooks:
        h.remove()
    outs = out if isinstance(out, tuple) else (out,)
    first = {m for m, (i, _) in seen.items() if any(i is x for x in inputs)}
    last = {m for m, (_, o) in seen.items() if any(o is x for x in outs)}
    return first, last


def _example_inputs(model) -> dict[str, tuple]:
    """Real inputs of every decoder network for a small synthetic picture (for tracing)."""
    from codec.api import pad_planes
    from codec.color import to_tensor

    from .exporter import check_picture
    from .nets import net_inputs

    y, uv = pad_planes(to_tensor(check_picture(size=(64, 128))), model.cfg.multiple)
    feeds = net_inputs(model, y, uv, 0)
    order = {"fusion_y": ("hyper", "ctx"), "fusion_uv": ("hyper", "ctx", "y_hat"), "synthesis": ("y_hat", "uv_hat")}
    return {n: tuple(torch.from_numpy(feeds[n][-1][k]) for k in order.get(n, list(feeds[n][-1])))
            for n in DECODER_NETS}


def attach(model) -> QATHandle:
    """Fake-quantise the decoder-side networks of ``model`` as the INT8 export will quantise them."""
    handle = QATHandle()
    examples = _example_inputs(model)
    for name, mods in MODULES.items():
        net = Synthesis(model) if name == "synthesis" else model.get_submodule(mods[0])
        recipe = recipe_for(name)
        if not recipe.enabled:
            continue
        fq, qmax = functools.partial(handle.fq, recipe.activations), W_QMAX[recipe.weights]
        float_types = tuple(FLOAT_OPS[op] for op in recipe.float_ops if op in FLOAT_OPS)
        first, last = _boundary(net, examples[name])
        skip = (first if "first" in recipe.keep_float else set()) | (last if "last" in recipe.keep_float else set())
        skip |= {m for m in net.modules() if float_types and type(m) in float_types}
        split_first, splits = None, None
        if name.startswith("fusion") and isinstance(getattr(net, "net", None), nn.Sequential):
            split_first = net.net[0]           # exported split per input (export.nets.Fusion)
            splits = [x.shape[1] for x in examples[name]]
            fqs = [fq() for _ in splits]
            handle.hooks.append(net.register_forward_pre_hook(
                lambda m, args, fqs=fqs: tuple(fq(a) for fq, a in zip(fqs, args))))
        for m in net.modules():
            if not isinstance(m, QUANTISED) or m in skip:
                continue
            if isinstance(m, CONVS):
                own = m is split_first
                _wrap(m, None if own else fq(), fq(), splits if own else None, qmax)
            elif isinstance(m, nn.Hardswish):
                _wrap_hardswish(m, fq(), fq())
            else:
                handle.hooks.append(m.register_forward_hook(lambda m, i, o, q=fq(): q(o)))
                continue
            handle.wrapped.append(m)
    return handle


def qat_finetune(model, steps: int, images: list, run_dir: str | Path, lr: float = 1e-4, batch: int = 8,
                 crop: int = 128, threads: int = 1, progress: bool = True, seed: int = 0, calib: int = 16) -> dict:
    """Fine-tune the decoder-side networks of ``model`` in place for ``steps`` RD steps under fake
    quantisation (ranges from ``calib`` calibration crops, as the INT8 export calibrates); every other
    tensor comes back unchanged. Returns the last logged training metrics."""
    from training import TrainConfig, Trainer

    from .int8 import calibration_crops

    if steps < 1:
        raise ValueError(f"QAT needs at least 1 step, got {steps}")
    model.__dict__.pop("frozen_id", None)      # its weights are about to change
    fixed = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith(TRAINED)}
    for n, p in model.named_parameters():      # quantiles: only so that the trainer's aux step runs
        p.requires_grad_(n.startswith(TRAINED) or n.endswith("quantiles"))
    handle = attach(model.eval())
    try:
        handle.calibrate(model, calibration_crops(calib))
        cfg = TrainConfig(steps=steps, batch=batch, crop=crop, lr=lr, warmup=min(20, max(1, steps // 10)),
                          crops_per_epoch=max(batch * steps, 64), threads=threads, log_every=min(10, steps),
                          checkpoint_every_s=1e9, seed=seed, rate_refresh=0)  # entropy model fixed
        metrics = Trainer(model, cfg, run_dir, images).train(progress=progress)
    finally:
        handle.remove()
    model.load_state_dict({**model.state_dict(), **fixed})
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return metrics


def main(argv: list[str] | None = None) -> int:
    """Command line: fine-tune a model for INT8 and write its weights."""
    p = argparse.ArgumentParser(prog="python -m export.qat", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="preset name (shipped weights) or .safetensors path")
    p.add_argument("-o", "--output", required=True, help="QAT weights to write (.safetensors)")
    p.add_argument("--steps", type=int, default=300, help="fine-tuning steps")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--calib", type=int, default=16, help="calibration crops for the activation ranges")
    p.add_argument("--data", help="training images (default data/train)")
    p.add_argument("--run-dir", help="training log and checkpoint (default runs/qat-OUTPUT_STEM)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)

    from codec.cli_util import fail
    try:
        from photos import ensure_data, train_images
        from codec.weights import load_model, model_id, save_weights

        if not a.output.endswith(".safetensors"):
            raise ValueError(f"--output must be a .safetensors file, got {a.output!r}")
        if not a.data:
            ensure_data()
        model = load_model(a.model)
        base = model_id(model).hex()
        out = Path(a.output)
        metrics = qat_finetune(model, a.steps, train_images(a.data), a.run_dir or RUNS_DIR / f"qat-{out.stem}", a.lr,
                               a.batch, a.crop, a.threads, not a.quiet, calib=a.calib)
        save_weights(model, out, meta={"qat_of": a.model, "qat_base_id": base, "qat_steps": a.steps})
    except (ValueError, OSError, KeyError, RuntimeError) as e:
        return fail(e)
    print(f"{out}: {model.name} after {a.steps} QAT steps (train crops: bpp {metrics.get('bpp', 0):.3f}, "
          f"PSNR-YUV {metrics.get('psnr_yuv', 0):.2f} dB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
