"""Decode speed and memory of our decoders next to the classical ones, on the same pictures, in one run.

    python -m benchmarks speed [--model student-2k] [--sizes 768x512,4000x3000] [-n 3] [--out results]

Pictures: the 768x512 evaluation photo (kodim23) and a 4000x3000 (12-Mpixel) mosaic of the 14 evaluation
photos at their own scale (``export.profile.mosaic``: each centre-cropped to 4:3, resized to 512x384,
tiled row by row, every other round mirrored), so the large picture has a photo's detail, not an
upscaled one's.

Decoders, each timed ``n`` times after a warm-up, median reported:

- ours: the torch-free ONNX decoder (``export.runtime``; FP32 and INT8 networks; 1 and 2 threads; FP32 also
  with the in-process rANS decoder, ``--rans native``) and the torch decoder (``codec.tiling.decode_rgb``; 1 and
  2 threads), each at its default tile, timed in-process
  with the networks loaded (what an app pays per picture), writing a PPM file like the tools below;
- classical: djpeg (libjpeg-turbo), dwebp, avifdec, djxl and opj_decompress as the Debian tools, one
  thread, writing PPM (avifdec: Y4M, it writes no PPM), each run as a subprocess (process start included,
  about a millisecond). A missing tool is skipped and listed.

Wall time and CPU time (user + system of the process: on a shared machine it moves far less than wall
time) are both reported, as megapixels per second and as multiples of djpeg's time. Peak memory is the
peak RSS of one decode of each decoder as its own process (``os.wait4``'s ru_maxrss): the classical tools
themselves, and ``python -m export.decode`` / ``python -m codec decode`` for ours (Python, numpy and ONNX
Runtime or torch included; the rANS helper process is counted by its own peak, not added).
Writes OUT/speed.md and OUT/speed.json.
"""
from __future__ import annotations

import datetime
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from export.profile import current_export, run_child

ROOT = Path(__file__).resolve().parent.parent
SIZES = ((512, 768), (3000, 4000))
# Classical settings: mid-range qualities of the RD benchmark's sweeps (benchmarks/codecs.py).
CLASSICAL = {
    "djpeg (libjpeg-turbo)": ("cjpeg", 75, ["djpeg", "-ppm", "-outfile", "{out}.ppm", "{inp}"]),
    "dwebp": ("webp", 75, ["dwebp", "-quiet", "{inp}", "-ppm", "-o", "{out}.ppm"]),
    "avifdec (aom)": ("avif", 32, ["avifdec", "-j", "1", "{inp}", "{out}.y4m"]),
    "djxl": ("jxl", 1.5, ["djxl", "{inp}", "{out}.ppm", "--num_threads", "1", "--quiet"]),
    "opj_decompress": ("jpeg2000", 24, ["opj_decompress", "-i", "{inp}", "-o", "{out}.ppm", "-quiet"]),
}
ANCHOR = "djpeg (libjpeg-turbo)"


def _timed_in_process(fn, n: int) -> dict:
    fn()
    walls, cpus = [], []
    for _ in range(n):
        c, t = time.process_time(), time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return {"wall": statistics.median(walls), "cpu": statistics.median(cpus)}


def _env(threads: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_WAIT_POLICY="PASSIVE")
    env.update(OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
    return env


def run(model_spec: str, sizes, n: int, threads: list[int], torch_decoder: bool, out_dir: Path,
        progress=print) -> dict:
    import torch

    from evaluation.codecs import classical_codecs
    from codec.api import encode_image
    from codec import entropy
    from codec.tiling import DEFAULT_TILE, ONNX_TILE, decode_rgb
    from codec.weights import load_model
    from codec import bitstream as bsf
    from evaluation.machine import machine
    from export.timing import bench_picture
    from export.profile import mosaic
    from export.runtime import OnnxDecoder
    from codec.writers import RowWriter

    torch.set_num_threads(1)
    model = load_model(model_spec)
    onnx_dir = current_export(model)
    codecs = classical_codecs()
    res = {"model": model.name, "date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": machine(),
           "loadavg_start": os.getloadavg()[0], "cpus": os.cpu_count(), "n": n, "tile": DEFAULT_TILE, "onnx_tile": ONNX_TILE,
           "skipped": {}, "pictures": []}
    for name, (codec, q, cmd) in CLASSICAL.items():
        ok, why = codecs[codec].available()
        if not ok:
            res["skipped"][name] = why
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for h, w in sizes:
            img = bench_picture() if (h, w) == (512, 768) else mosaic(h, w)
            label = "768x512 evaluation photo (kodim23)" if (h, w) == (512, 768) else \
                f"{w}x{h} mosaic of the evaluation photos"
            mp = h * w / 1e6
            rows = []
            progress(f"{label}: encoding")
            with torch.inference_mode():
                data = encode_image(model, img, 3)
            src = tmp / "ours.bin"
            src.write_bytes(data)
            bpp = len(data) * 8 / (h * w)
            out = tmp / "out"
            for name, (codec, q, cmd) in CLASSICAL.items():
                if name in res["skipped"]:
                    continue
                wd = tmp / codec
                wd.mkdir(exist_ok=True)
                coded = codecs[codec].encode(img, q, wd)
                argv = [a.format(inp=coded, out=out) for a in cmd]
                run_child(argv)
                reps = [run_child(argv) for _ in range(n)]
                rows.append({"decoder": name, "threads": 1, "bpp": coded.stat().st_size * 8 / (h * w),
                             "setting": f"{codecs[codec].settings.split(';')[0].replace(' q', f' {q}')}".strip(),
                             "wall": statistics.median(r["wall"] for r in reps),
                             "cpu": statistics.median(r["cpu"] for r in reps),
                             "rss_mb": max(r["rss_mb"] for r in reps), "how": "subprocess"})
                progress(f"  {name}: {rows[-1]['wall'] * 1000:.0f} ms")
            bs = bsf.unpack(data)
            # the default rANS decoder (compressai's, in a helper process), and the in-process one that a
            # long-running decoder would use (--rans native: numba's start-up is paid once per process)
            default = entropy.DECODER
            for int8, rans in ((False, "compressai"), (True, "compressai"), (False, "native")):
                entropy.DECODER = rans
                for t in threads:
                    dec = OnnxDecoder(onnx_dir, int8=int8, threads=t)

                    def once(dec=dec):
                        wr = RowWriter(out.with_suffix(".ppm"), h, w)
                        dec.decode(data, sink=wr.write)
                        wr.close()
                    timing = _timed_in_process(once, n)
                    cli = run_child([sys.executable, "-m", "export.decode", src, "-o", out.with_suffix(".ppm"),
                                     "--onnx", onnx_dir, "--threads", t, "--rans", rans]
                                    + (["--int8"] if int8 else []), _env(t))
                    name = f"ours: ONNX {'INT8' if int8 else 'FP32'}" + (", native rANS" if rans == "native" else "")
                    rows.append({"decoder": name, "threads": t, "bpp": bpp,
                                 "setting": f"quality 3, tile {ONNX_TILE}", **timing, "rss_mb": cli["rss_mb"],
                                 "cli_wall": cli["wall"], "cli_cpu": cli["cpu"], "how": "in-process"})
                    progress(f"  {name[5:]} x{t}: {rows[-1]['wall'] * 1000:.0f} ms")
            entropy.DECODER = default
            if torch_decoder:
                for t in threads:
                    torch.set_num_threads(t)

                    def once_t():
                        wr = RowWriter(out.with_suffix(".ppm"), h, w)
                        decode_rgb(model, bs, DEFAULT_TILE, sink=wr.write)
                        wr.close()
                    timing = _timed_in_process(once_t, max(1, n // 2) if mp > 4 else n)
                    torch.set_num_threads(1)
                    cli = run_child([sys.executable, "-m", "codec", "decode", src, "-o", out.with_suffix(".ppm"),
                                     "--tile", DEFAULT_TILE], _env(t))
                    rows.append({"decoder": "ours: torch", "threads": t, "bpp": bpp,
                                 "setting": f"quality 3, tile {DEFAULT_TILE}",
                                 **timing, "rss_mb": cli["rss_mb"], "cli_wall": cli["wall"], "cli_cpu": cli["cpu"],
                                 "how": "in-process"})
                    progress(f"  torch x{t}: {rows[-1]['wall'] * 1000:.0f} ms")
            anchor = next((r for r in rows if r["decoder"] == ANCHOR), None)
            for r in rows:
                r["mp_s_wall"], r["mp_s_cpu"] = mp / r["wall"], mp / max(r["cpu"], 1e-9)
                if anchor:
                    r["x_djpeg_wall"], r["x_djpeg_cpu"] = r["wall"] / anchor["wall"], r["cpu"] / max(anchor["cpu"], 1e-9)
            res["pictures"].append({"label": label, "width": w, "height": h, "rows": rows})
    res["loadavg_end"] = os.getloadavg()[0]
    res["versions"] = {name: codecs[c].version() for name, (c, _, _) in CLASSICAL.items() if name not in res["skipped"]}
    import onnxruntime
    res["versions"]["onnxruntime"] = onnxruntime.__version__
    res["versions"]["torch"] = torch.__version__
    return res


def to_markdown(res: dict, command: str) -> str:
    lines = [f"# Decode speed: {res['model']} next to the classical decoders", "",
             f"Made by `{command}` on {res['date']}, {res.get('machine', str(res['cpus']) + '-core machine')}, "
             "shared with other jobs (load "
             f"average {res['loadavg_start']:.1f} at the start, {res['loadavg_end']:.1f} at the end: wall times "
             "are pessimistic and move between runs; CPU time moves less). Median of "
             f"{res['n']} decodes after a warm-up. Ours are timed in-process with the networks loaded, writing "
             "PPM; the classical tools as subprocesses writing PPM (avifdec: Y4M). `x djpeg`: this decoder's time "
             "over djpeg's on the same picture in the same run. Peak RSS: one decode as its own process "
             "(ours: `python -m export.decode` / `python -m codec decode`, interpreter and runtime included).", ""]
    for p in res["pictures"]:
        lines += [f"## {p['label']} ({p['width']}x{p['height']})", "",
                  "| decoder | threads | bpp | wall ms | CPU ms | MP/s (wall) | MP/s (CPU) | x djpeg (wall) "
                  "| x djpeg (CPU) | peak RSS MiB |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in p["rows"]:
            xw = f"{r['x_djpeg_wall']:.1f}" if "x_djpeg_wall" in r else ""
            xc = f"{r['x_djpeg_cpu']:.1f}" if "x_djpeg_cpu" in r else ""
            lines.append(f"| {r['decoder']} | {r['threads']} | {r['bpp']:.3f} | {1000 * r['wall']:.0f} | "
                         f"{1000 * r['cpu']:.0f} | {r['mp_s_wall']:.1f} | {r['mp_s_cpu']:.1f} | {xw} | {xc} | "
                         f"{r['rss_mb']:.0f} |")
        lines.append("")
    lines += ["Settings: " + "; ".join(f"{r['decoder']}: {r['setting']}" for r in res["pictures"][0]["rows"]
                                      if not r["decoder"].startswith("ours"))
              + f"; ours at quality 3, the ONNX decoder at tile {res.get('onnx_tile', res['tile'])}, the torch one at "
              f"tile {res['tile']} (their defaults).", ""]
    if res["skipped"]:
        lines += ["Skipped: " + "; ".join(f"{k} ({v})" for k, v in res["skipped"].items()) + ".", ""]
    lines += ["Versions: " + ", ".join(f"{k} {v}" for k, v in res["versions"].items() if v) + "."]
    return "\n".join(lines) + "\n"


def parse_sizes(text: str) -> list[tuple[int, int]]:
    out = []
    for item in text.split(","):
        w, _, h = item.strip().partition("x")
        if not (w.isdigit() and h.isdigit()):
            raise ValueError(f"--sizes wants WxH[,WxH...], got {text!r}")
        out.append((int(h), int(w)))
    return out


def main_args(args) -> None:
    """Entry point of ``python -m benchmarks speed`` (benchmarks/__main__.py)."""
    sizes = parse_sizes(args.sizes)
    threads = [int(t) for t in args.threads.split(",")]
    if args.n < 1 or any(t < 1 for t in threads):
        raise ValueError("-n and --threads must be at least 1")
    quiet = args.quiet
    res = run(args.model, sizes, args.n, threads, not args.no_torch, Path(args.out),
              progress=(lambda *_: None) if quiet else (lambda m: print(m, file=sys.stderr, flush=True)))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    argv = args.argv if args.argv is not None else sys.argv[1:]
    md = to_markdown(res, "python -m benchmarks " + " ".join(argv))
    (out / "speed.json").write_text(json.dumps(res, indent=1))
    (out / "speed.md").write_text(md)
    print(md)


def add_parser(sub) -> None:
    """The ``speed`` subcommand's options."""
    sp = sub.add_parser("speed", help="decode speed and memory vs djpeg, dwebp, avifdec, djxl, opj (results/speed.md)")
    sp.add_argument("--model", default="student-2k", help="preset or .safetensors (default: student-2k)")
    sp.add_argument("--sizes", default="768x512,4000x3000", help="pictures, WxH (default: 768x512,4000x3000)")
    sp.add_argument("-n", type=int, default=3, help="timed decodes per decoder (default: 3)")
    sp.add_argument("--threads", default="1,2", help="thread counts for our decoders (default: 1,2)")
    sp.add_argument("--no-torch", action="store_true", help="skip the torch decoder")
    sp.add_argument("--out", default="results", help="results folder (default: results)")
    sp.add_argument("--quiet", action="store_true", help="no progress lines")

