"""The student in the browser: ms per image of the `dcdgan export --format web` page in Chromium (onnxruntime-web,
wasm SIMD), alternated round by round with ONNX Runtime's Python CPU session on the same model.onnx.

    python benchmarks/web_latency.py --size 256 --rounds 5 --runs 5 --threads 1
    python benchmarks/web_latency.py --webgpu     # also WebGPU through Chromium's software adapter (SwiftShader)

The model is the horse2zebra recipe's student (mobile_resnet_9blocks ngf 16, random weights: speed does not depend
on them), one RGB image of --size x --size. The page is served by `python -m http.server` from localhost, so its
service worker makes it cross-origin isolated and ``?threads=N`` is honoured. Each round: the page translates the
image (1 untimed run, then --runs timed ones; the page's median), then the Python session does the same; the
table gives the median over rounds.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def host() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), platform.processor())
    return f"{cpu}, {os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable), load {os.getloadavg()[0]:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=5, help="timed runs per round (after one untimed)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument("--webgpu", action="store_true", help="also time the WebGPU build on SwiftShader (slow: shaders compile on the CPU)")
    args = parser.parse_args()

    import onnxruntime as ort
    from playwright.sync_api import sync_playwright

    from dcdgan.assembly import student_spec
    from dcdgan.config import load_config
    from dcdgan.nets import build_generator
    from dcdgan.weights import save_generator
    from dcdgan.web import export_web
    from test_demo import CHROMIUM, CHROMIUM_ARGS
    from test_web import static_server

    tmp = Path(tempfile.mkdtemp(prefix="web-latency."))
    cfg = load_config("horse2zebra")
    spec = student_spec(cfg.model, cfg.data)
    torch.manual_seed(0)
    save_generator(tmp / "student.safetensors", build_generator(spec), spec, {"role": "student"})
    export_web(tmp / "student.safetensors", tmp / "site", quiet=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)).save(tmp / "image.png")
    x = rng.uniform(-1, 1, (1, 3, args.size, args.size)).astype(np.float32)

    rows = []
    configs = [("wasm", n, []) for n in args.threads] + ([("webgpu", 1, ["--enable-unsafe-webgpu"])] if args.webgpu else [])
    with sync_playwright() as p, static_server(tmp / "site") as url:
        for ep, threads, flags in configs:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=[*CHROMIUM_ARGS, *flags])
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            session = ort.InferenceSession(str(tmp / "site" / "model.onnx"), options, providers=["CPUExecutionProvider"])
            session.run(None, {"input": x})
            page = browser.new_page()
            page.goto(f"{url}?ep={ep}&threads={threads}&runs={args.runs}")
            page.wait_for_function("window.dcdgan && (dcdgan.ready || dcdgan.error)", timeout=300_000)
            web_ms, py_ms = [], []
            for _ in range(args.rounds):
                page.set_input_files("#file", str(tmp / "image.png"))
                page.wait_for_function("window.dcdgan.done", timeout=600_000)
                state = page.evaluate("({error: dcdgan.error, ms: dcdgan.ms, backend: dcdgan.backend, threads: dcdgan.threads})")
                assert state["error"] is None, state["error"]
                web_ms.append(state["ms"]["median"])
                times = []
                for _ in range(args.runs):
                    t0 = time.perf_counter()
                    session.run(None, {"input": x})
                    times.append((time.perf_counter() - t0) * 1e3)
                py_ms.append(statistics.median(times))
            browser.close()
            label = "WebGPU (SwiftShader)" if ep == "webgpu" else "wasm SIMD"
            rows.append((label, state["threads"], statistics.median(web_ms), statistics.median(py_ms)))

    print(f"host: {host()}; onnxruntime-web 1.31.1 in Chromium {CHROMIUM}, onnxruntime {ort.__version__} (Python)")
    print(f"student {spec.netG} ngf {spec.ngf}, 1x3x{args.size}x{args.size}, {args.rounds} rounds x {args.runs} runs, alternated; medians")
    print("| runtime | threads | browser ms per image | ONNX Runtime (Python) ms | browser / Python |")
    print("|---|---|---|---|---|")
    for label, threads, web, py in rows:
        print(f"| {label} | {threads} | {web:.1f} | {py:.1f} | {web / py:.2f}x |")


if __name__ == "__main__":
    main()
