"""Training throughput: steps/s and images/s of one optimisation step (forward, RD loss, backward,
Adam) for the teacher and each student, plain fp32 against bf16 autocast, channels_last and (with
--compile) torch.compile.

    python -m benchmarks train-speed [--models teacher,student-2k] [--steps 8] [--threads N] [--compile]
Writes results/train_speed.md and .json. Timings: median of the measured steps after one warm-up step
(the warm-up, reported as "first step", includes torch.compile's compilation).
"""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import torch

MODES = {"fp32": (False, False), "channels_last": (False, True), "bf16": (True, False),
         "bf16+channels_last": (True, True)}


def step_time(name: str, bf16: bool, channels_last: bool, steps: int, batch: int, crop: int,
              compile: bool = False) -> tuple[float, float]:
    """(median seconds of one training step, seconds of the first step) of preset ``name`` on random crops."""
    from codec.color import rgb_to_yuv420
    from codec.registry import create_model
    from training import rd_loss

    torch.manual_seed(0)
    model = create_model(name).train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    y, uv = rgb_to_yuv420(torch.rand(batch, 3, crop, crop))
    y, uv = y.contiguous(memory_format=fmt), uv.contiguous(memory_format=fmt)
    q = torch.randint(0, model.num_qualities, (batch,))
    forward = torch.compile(model) if compile else model
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = forward(y, uv, q)
        out = {k: (v.float() if torch.is_tensor(v) else v) for k, v in out.items()}
        loss = rd_loss(model, out, y, uv, q)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:]), times[0]


def run(models: list[str], steps: int, batch: int, crop: int, out: Path, threads: int,
        compile: bool = False) -> list[dict]:
    """Measure every model in every mode; write the results files; return the rows."""
    from tqdm import tqdm

    from evaluation.machine import machine

    torch.set_num_threads(threads)
    rows = []
    for name in tqdm(models, desc="train-speed"):
        base = None
        modes = {m: (*flags, False) for m, flags in MODES.items()}
        if compile:
            modes["torch.compile"] = (False, False, True)
        for mode, (bf16, cl, comp) in modes.items():
            s, first = step_time(name, bf16, cl, steps, batch, crop, comp)
            base = base or s
            rows.append({"model": name, "mode": mode, "s_per_step": s, "steps_per_s": 1 / s,
                         "images_per_s": batch / s, "speedup": base / s, "first_step_s": first})
    meta = {"machine": machine(), "threads": threads, "batch": batch, "crop": crop, "steps": steps,
            "command": f"python -m benchmarks train-speed --models {','.join(models)} --steps {steps} "
                       f"--threads {threads}" + (" --compile" if compile else "")}
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_speed.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = ["# Training throughput", "", f"Made by `{meta['command']}` on {meta['machine']}, {threads} "
             f"thread(s), batch {batch} of {crop}x{crop} crops, median of {steps} steps after a warm-up.", "",
             "| model | mode | s/step | images/s | speed-up vs fp32 | first step s |", "|---|---|---:|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['mode']} | {r['s_per_step']:.3f} | {r['images_per_s']:.1f} | "
              f"{r['speedup']:.2f}x | {r['first_step_s']:.1f} |" for r in rows]
    (out / "train_speed.md").write_text("\n".join(lines) + "\n")
    return rows
