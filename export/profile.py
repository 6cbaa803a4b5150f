"""Where a decode's time goes: the torch-free ONNX decoder, phase by phase, and the synthesis op by op.

    python -m export.profile [--model student-2k] [--onnx DIR] [-n 7] [--before OLD.json] [--out results/decode_profile]

Encodes the 768x512 evaluation photo and the 12-Mpixel mosaic of the evaluation photos (``mosaic``) with
the torch encoder at quality 3 and decodes each with ``export.runtime.OnnxDecoder`` (FP32 and INT8, one
thread, default tile), reporting per phase the CPU time of this process (``time.process_time``: on a
machine shared with other jobs it moves far less than wall time) and the wall time, plus the CPU time of
the rANS helper process, the peak RSS of ``python -m export.decode`` on the same stream, and, for one
synthesis tile, ONNX Runtime's own per-operator profile. ``--before`` takes the JSON of a run against an
earlier decoder (this file also runs against the previous commit's export/runtime.py) for a before/after
table. Writes OUT.md and OUT.json.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from codec.paths import RUNS_DIR

ROOT = Path(__file__).resolve().parent.parent
MOSAIC_CELL = (384, 512)      # H, W of each photo in the mosaic
PHASES = ("entropy", "scale_decoder", "net:hyper_decoder_y", "net:hyper_decoder_uv", "net:fusion_y",
          "net:context_y", "net:fusion_uv", "net:context_uv", "net:synthesis", "colour", "write", "other")


def mosaic(height: int = 3000, width: int = 4000) -> np.ndarray:
    """A large test photo at the evaluation photos' own scale: each of the 14 evaluation photos centre-cropped
    to 4:3 and resized to 512x384 (Lanczos), tiled row by row in a repeating order (every other round
    mirrored left-right, so no two cells are equal), cropped to ``width`` x ``height``."""
    from PIL import Image

    from codec.images import load_rgb
    from photos import eval_images

    ch, cw = MOSAIC_CELL
    cells = []
    for p in eval_images():
        img = Image.fromarray(load_rgb(p))
        w, h = img.size
        if w * ch > h * cw:                  # wider than 4:3: crop the sides
            nw = h * cw // ch
            img = img.crop(((w - nw) // 2, 0, (w - nw) // 2 + nw, h))
        else:
            nh = w * ch // cw
            img = img.crop((0, (h - nh) // 2, w, (h - nh) // 2 + nh))
        cells.append(np.asarray(img.resize((cw, ch), Image.LANCZOS)))
    rows, cols = -(-height // ch), -(-width // cw)
    out = np.empty((rows * ch, cols * cw, 3), np.uint8)
    for i in range(rows * cols):
        cell = cells[i % len(cells)]
        if (i // len(cells)) % 2:
            cell = cell[:, ::-1]
        r, c = divmod(i, cols)
        out[r * ch: (r + 1) * ch, c * cw: (c + 1) * cw] = cell
    return np.ascontiguousarray(out[:height, :width])


TIME = "/usr/bin/time"


def run_child(cmd: list[str], env: dict | None = None) -> dict:
    """Run ``cmd`` as a child process: wall seconds, its CPU seconds (user + system, reaped descendants
    included) and its peak RSS in MiB.

    The peak RSS comes from GNU time, which runs the command as its own child: the ru_maxrss of a process
    forked straight from this one would start at this process's size (Linux carries the pre-exec peak
    over into the child's). Without /usr/bin/time the RSS is left out."""
    cmd = [str(c) for c in cmd]
    with tempfile.NamedTemporaryFile("r", suffix=".time") as f:
        timed = [TIME, "-f", "%M", "-o", f.name] if os.path.exists(TIME) else []
        t = time.perf_counter()
        p = subprocess.Popen(timed + cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        err = p.stderr.read()
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t
        p.stderr.close()
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            lines = err.decode(errors="replace").strip().splitlines() or [f"exit status {code}"]
            raise RuntimeError(f"{Path(cmd[0]).name} failed: {lines[-1]}")
        # CPU from wait4 (microseconds; GNU time's own counts 10 ms ticks): the child's CPU with the
        # command's, which GNU time reaped (its own share is a fraction of a millisecond)
        cpu = ru.ru_utime + ru.ru_stime
        if timed:
            return {"wall": wall, "cpu": cpu, "rss_mb": int(f.read().split()[-1]) / 1024}
    return {"wall": wall, "cpu": cpu, "rss_mb": float("nan")}


def current_export(model, cache: Path | None = None) -> Path:
    """An FP32 + INT8 decoder export of ``model`` by this version of the exporter (tile crops, phase-grid
    context), kept under ``cache`` (default runs/speed-export)/NAME-ID. (runs/onnx-cache may hold exports
    by older versions, which decode whole pictures only.)"""
    from codec.weights import model_id

    from .exporter import EXPORT_REVISION, export_model

    out = Path(cache or RUNS_DIR / "speed-export") / f"{model.name}-{model_id(model).hex()}"
    try:
        m = json.loads((out / "manifest.json").read_text())
        if m.get("export_revision", 1) >= EXPORT_REVISION and all(n.get("int8") for n in m["networks"].values()):
            return out
    except (OSError, ValueError, KeyError):
        pass
    export_model(model, out, int8=True, ort_format=False, encoder=False, log=lambda *_: None)
    return out


RANS_NOTE = {
    "native": "The rANS streams are decoded in-process by codec.rans (docs/robustness.md), inside the entropy phase.",
    "compressai": "The rANS decoder runs in a helper process (docs/robustness.md): its CPU time is listed apart and "
                  "is not in the total.",
}


def helper_cpu() -> float:
    """CPU seconds used so far by the rANS helper process of codec.entropy (0 when there is none)."""
    from codec import entropy

    proc = getattr(entropy._HELPER, "proc", None)
    if proc is None or proc.poll() is not None:
        return 0.0
    try:
        fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def profile_decode(dec, data: bytes, n: int) -> dict:
    """``n`` timed decodes after a warm-up: per-phase CPU and wall medians, totals (min and median).
    (Also runs the decoder of older versions of export/runtime.py, which has wall timings only.)"""
    new = hasattr(dec, "cpu_timings")
    decode = (lambda: dec.decode(data, sink=lambda rows: None)) if new else (lambda: dec.decode(data))
    decode()
    runs = []
    for _ in range(n):
        dec.reset_timings() if new else dec.timings.clear()
        h0, c0, w0 = helper_cpu(), time.process_time(), time.perf_counter()
        decode()
        runs.append({"cpu": time.process_time() - c0, "wall": time.perf_counter() - w0, "helper": helper_cpu() - h0,
                     "phase_cpu": dict(dec.cpu_timings) if new else {}, "phase_wall": dict(dec.timings)})
    med = lambda xs: 1000 * statistics.median(xs)  # noqa: E731
    phases = sorted({k for r in runs for k in r["phase_wall"]})
    return {"cpu_ms": med([r["cpu"] for r in runs]), "cpu_min_ms": 1000 * min(r["cpu"] for r in runs),
            "wall_ms": med([r["wall"] for r in runs]), "helper_cpu_ms": med([r["helper"] for r in runs]),
            "phase_cpu_ms": {k: med([r["phase_cpu"].get(k, 0.0) for r in runs]) for k in phases} if new else {},
            "phase_wall_ms": {k: med([r["phase_wall"].get(k, 0.0) for r in runs]) for k in phases}}


def op_profile(path: Path, feeds: dict, threads: int = 1, n: int = 5) -> dict[str, float]:
    """ORT's per-operator kernel time (ms per run, median over ``n``) of one network on ``feeds``."""
    import onnxruntime as ort

    from .sessions import session_options

    so = session_options(threads)
    with tempfile.TemporaryDirectory() as tmp:
        so.enable_profiling, so.profile_file_prefix = True, str(Path(tmp) / "ort")
        s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        for _ in range(n + 1):
            s.run(None, feeds)
        events = json.loads(Path(s.end_profiling()).read_text())
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    first = runs[1]["ts"] if len(runs) > 1 else 0          # skip the first (warm-up) run
    total: dict[str, float] = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= first:
            total[e["args"]["op_name"]] += e["dur"] / 1000 / max(1, len(runs) - 1)
    return dict(sorted(total.items(), key=lambda kv: -kv[1]))


def _encode(model, img: np.ndarray, quality: int) -> bytes:
    import torch

    from codec.api import encode_image
    with torch.inference_mode():
        return encode_image(model, img, quality)


def run(model_spec: str, onnx_dir: Path | None, n: int, quality: int, big: bool, tile: int | None = None) -> dict:
    import torch

    from codec import entropy
    from codec.weights import load_model

    from .timing import bench_picture
    from .runtime import OnnxDecoder

    torch.set_num_threads(1)
    model = load_model(model_spec)
    onnx_dir = Path(onnx_dir) if onnx_dir else current_export(model)
    tiled = "tile" in OnnxDecoder.__init__.__code__.co_varnames
    pictures = {"768x512 evaluation photo (kodim23)": bench_picture()}
    if big:
        pictures["4000x3000 mosaic of the evaluation photos"] = mosaic()
    res = {"model": model.name, "onnx": str(onnx_dir), "quality": quality, "n": n,
           "tile": (OnnxDecoder.__init__.__defaults__[-1] if tile is None else tile) if tiled else None,
           "loadavg": os.getloadavg()[0], "cpus": os.cpu_count(), "pictures": {},
           "rans": entropy.DECODER}
    env = dict(os.environ, PYTHONPATH=os.environ.get("PYTHONPATH", str(ROOT)), OPENBLAS_NUM_THREADS="1")
    with tempfile.TemporaryDirectory() as tmp:
        for label, img in pictures.items():
            data = _encode(model, img, quality)
            src = Path(tmp) / "in.bin"
            src.write_bytes(data)
            entry = {"width": img.shape[1], "height": img.shape[0], "bytes": len(data),
                     "bpp": len(data) * 8 / (img.shape[0] * img.shape[1]), "runs": {}}
            for int8 in (False, True):
                dec = OnnxDecoder(onnx_dir, int8=int8, threads=1, **({"tile": res["tile"]} if tiled else {}))
                reps = n if img.size < 4e6 else max(2, n // 3)
                r = profile_decode(dec, data, reps)
                del dec
                cli = run_child([sys.executable, "-m", "export.decode", src, "-o", Path(tmp) / "out.ppm", "--onnx",
                                 onnx_dir] + (["--int8"] if int8 else []) + (["--tile", res["tile"]] if tiled else []),
                                env)
                r["cli_peak_rss_mb"], r["cli_wall_ms"] = cli["rss_mb"], 1000 * cli["wall"]
                entry["runs"]["INT8" if int8 else "FP32"] = r
            res["pictures"][label] = entry
    # one synthesis tile of the default size (or a 768x512 picture's latents), op by op
    dec = OnnxDecoder(onnx_dir, threads=1)
    c = dec.manifest["channels"]
    rng = np.random.default_rng(0)
    side = (res["tile"] // 16 + 2 * 6) if tiled else None
    shape = (side, side) if side else (32, 48)
    feeds = {"y_hat": rng.normal(size=(1, c["y"], *shape)).astype(np.float32),
             "uv_hat": rng.normal(size=(1, c["uv"], *shape)).astype(np.float32)}
    res["ops"] = {}
    for int8 in (False, True):
        net = dec.manifest["networks"]["synthesis"]
        file = net["int8"] if int8 and net.get("int8") else net["file"]
        res["ops"]["INT8" if int8 else "FP32"] = op_profile(onnx_dir / file, feeds)
    res["op_tile"] = (f"{shape[0]}x{shape[1]} latent cells: a {res['tile']}-pixel tile with its margin, crops off"
                      if side else f"{shape[0]}x{shape[1]} latent cells: the 768x512 picture")
    return res


def to_markdown(res: dict, command: str, before: dict | None = None) -> str:
    tile = f"tile {res['tile']} px" if res.get("tile") else "whole picture"
    lines = [f"# Decode profile: {res['model']} (torch-free ONNX decoder)", "",
             f"Made by `{command}`. One thread, {tile}, quality {res['quality']}; medians of "
             f"{res['n']} decodes after a warm-up (fewer on the large picture). CPU = this process's CPU time "
             f"(user + system), the figure that the other jobs on this shared {res['cpus']}-core machine disturb "
             f"least; wall = elapsed time (load average {res['loadavg']:.1f} at the start, so wall times are "
             "pessimistic). " + RANS_NOTE[res.get("rans", "compressai")] + " Peak RSS: `python -m export.decode` writing a PPM, as its "
             "own process (GNU time).", ""]
    if before:
        lines += ["## Before and after", "",
                  f"Before: the decoder of the previous commit (`{before.get('command', '')}`, its own export); "
                  "after: this one. Same bitstreams (torch encoder, same weights and picture).", "",
                  "| picture | networks | CPU ms before | CPU ms after | speed-up | wall ms before | wall ms after "
                  "| peak RSS MiB before | peak RSS MiB after |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for label, p in res["pictures"].items():
            b = before["pictures"].get(label)
            if not b:
                continue
            for k, r in p["runs"].items():
                o = b["runs"].get(k)
                if o:
                    lines.append(f"| {label.split(' ')[0]} | {k} | {o['cpu_ms']:.0f} | {r['cpu_ms']:.0f} | "
                                 f"{o['cpu_ms'] / r['cpu_ms']:.2f}x | {o['wall_ms']:.0f} | {r['wall_ms']:.0f} | "
                                 f"{o.get('cli_peak_rss_mb', float('nan')):.0f} | {r.get('cli_peak_rss_mb', float('nan')):.0f} |")
        lines.append("")
    for label, p in res["pictures"].items():
        lines += [f"## {label}: {p['width']}x{p['height']}, {p['bytes']} bytes ({p['bpp']:.3f} bpp)", "",
                  "| phase | " + " | ".join(f"{k} CPU ms | {k} share | {k} wall ms" for k in p["runs"]) + " |",
                  "|---|" + "---:|---:|---:|" * len(p["runs"])]
        phases = [ph for ph in PHASES if any(ph in r["phase_wall_ms"] for r in p["runs"].values())]
        for ph in phases:
            cells = []
            for r in p["runs"].values():
                v = r["phase_cpu_ms"].get(ph, float("nan"))
                cells.append(f"{v:.1f} | {100 * v / r['cpu_ms']:.0f}% | {r['phase_wall_ms'].get(ph, 0.0):.1f}")
            lines.append(f"| {ph.replace('net:', 'ORT ')} | " + " | ".join(cells) + " |")
        for key, name in (("cpu_ms", "**total**"), ("cpu_min_ms", "total, fastest run"),
                          ("helper_cpu_ms", "rANS helper process")):
            lines.append(f"| {name} | " + " | ".join(
                f"{r[key]:.1f} | | {r['wall_ms']:.1f}" if key == "cpu_ms" else f"{r[key]:.1f} | |"
                for r in p["runs"].values()) + " |")
        mp = p["width"] * p["height"] / 1e6
        lines.append("| megapixels per CPU-second | " + " | ".join(
            f"{mp / (r['cpu_ms'] / 1000):.2f} | |" for r in p["runs"].values()) + " |")
        lines.append("| peak RSS of the CLI, MiB | " + " | ".join(
            f"{r.get('cli_peak_rss_mb', float('nan')):.0f} | |" for r in p["runs"].values()) + " |")
        lines.append("")
    lines += [f"## The synthesis, operator by operator ({res['op_tile']})", "",
              "ONNX Runtime's profiler, kernel time per run in ms (wall time inside the kernels).", "",
              "| operator | " + " | ".join(f"{k} ms | {k} share" for k in res["ops"]) + " |",
              "|---|" + "---:|---:|" * len(res["ops"])]
    ops = list(dict.fromkeys(op for d in res["ops"].values() for op in d))
    totals = {k: sum(d.values()) for k, d in res["ops"].items()}
    for op in ops:
        lines.append(f"| {op} | " + " | ".join(
            f"{d.get(op, 0):.2f} | {100 * d.get(op, 0) / totals[k]:.0f}%" for k, d in res["ops"].items()) + " |")
    lines.append("| total | " + " | ".join(f"{t:.2f} | " for t in totals.values()) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m export.profile", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="student-2k", help="preset or .safetensors (default student-2k)")
    p.add_argument("--onnx", help="its export (default: export it into runs/speed-export, INT8 included)")
    p.add_argument("-n", type=int, default=7, help="timed decodes per configuration (default 7)")
    p.add_argument("--quality", "-q", type=int, default=3)
    p.add_argument("--no-large", action="store_true", help="skip the 12-Mpixel picture")
    p.add_argument("--tile", type=int, help="synthesis tile side in pixels (default: the decoder's)")
    p.add_argument("--before", help="a JSON this command wrote for an earlier decoder: adds a before/after table")
    p.add_argument("--out", default=str(ROOT / "results" / "decode_profile"), help="output path without suffix")
    a = p.parse_args(argv)
    from codec.cli_util import fail
    try:
        res = run(a.model, a.onnx, a.n, a.quality, not a.no_large, a.tile)
        res["command"] = ("python -m export.profile " + " ".join(argv if argv is not None else sys.argv[1:])).strip()
        before = json.loads(Path(a.before).read_text()) if a.before else None
        out = Path(a.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(res, indent=1))
        md = to_markdown(res, res["command"], before)
        out.with_suffix(".md").write_text(md)
        print(md)
    except (ValueError, OSError, KeyError, RuntimeError) as e:
        return fail(e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
