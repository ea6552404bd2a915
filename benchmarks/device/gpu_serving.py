"""GPU serving on a lent GPU, in one call (issue 21): `dcdgan bench --vs` per runner, precision and batch, a
precision check against fp32, and `dcdgan translate` on a folder; every result is appended to OUT as it finishes.

    python benchmarks/device/gpu_serving.py --out $OUT                 # on the GPU (gpu_serving.sh runs this)
    python benchmarks/device/gpu_serving.py --out /tmp/dry --dry       # the same steps on CPU, tiny: does it start?
    python benchmarks/device/gpu_serving.py table OUT/results.jsonl    # the markdown table of a finished run

The student (mobile_resnet_9blocks ngf 16) is timed against resnet_9blocks and against the ngf-64 teacher, random
weights (speed only), at batch 1 and 64. Each step runs in a child process with its own timeout (a CUDA error is
sticky and ends a process; a hung compile is killed with its workers) and the whole run keeps within --budget-s.
Steps run in order of importance: the cuda-graph batch-1 goal first, torch.compile (slow to compile) last.
Files under OUT (a call brings back at most 8): env.txt, results.jsonl, log.txt, table.md.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

STUDENT = "mobile_resnet_9blocks:16"
OPPONENTS = ("resnet_9blocks", "mobile_resnet_9blocks:64")  # the issue's CycleGAN generator, the recipes' teacher
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")


def plan(dry: bool) -> list[dict]:
    """The steps in the order they run: what each does and its own time cap in seconds."""
    if dry:  # CPU: fp32 and bf16 only (tf32, fp16 are CUDA precisions); cuda-graph is refused there, which is recorded
        common = {"device": "cpu", "size": 32, "precisions": ("fp32", "bf16")}
        return [
            {"kind": "bench", "runner": "eager", "batch": 1, "runs": 3, "warmup": 1, "cap": 60, **common, "precisions": ("fp32",)},
            {"kind": "bench", "runner": "cuda-graph", "batch": 1, "runs": 3, "warmup": 1, "cap": 30, **common},
            {"kind": "precision", "models": (STUDENT,), "runners": ("eager",), "cap": 60, **common},
            {"kind": "translate", "runners": ("eager",), "images": 6, "batch": 4, "cap": 60, **common},
            {"kind": "bench", "runner": "compile", "batch": 2, "runs": 2, "warmup": 1, "cap": 20, **common},
        ]
    common = {"device": "cuda", "size": 256, "precisions": PRECISIONS}
    return [
        {"kind": "bench", "runner": "cuda-graph", "batch": 1, "runs": 50, "warmup": 10, "cap": 70, **common},
        {"kind": "bench", "runner": "eager", "batch": 1, "runs": 50, "warmup": 10, "cap": 50, **common},
        {"kind": "precision", "models": (STUDENT, *OPPONENTS), "runners": ("eager", "cuda-graph"), "cap": 50, **common},
        {"kind": "bench", "runner": "cuda-graph", "batch": 64, "runs": 10, "warmup": 3, "cap": 70, **common},
        {"kind": "bench", "runner": "eager", "batch": 64, "runs": 10, "warmup": 3, "cap": 70, **common},
        {"kind": "translate", "runners": ("eager", "cuda-graph"), "images": 96, "batch": 16, "cap": 50, **common},
        {"kind": "bench", "runner": "compile", "batch": 1, "runs": 50, "warmup": 5, "cap": 150, **common},
        {"kind": "bench", "runner": "compile", "batch": 64, "runs": 10, "warmup": 3, "cap": 150, **common},
    ]


def append(out: Path, row: dict) -> None:
    """One JSON line into OUT/results.jsonl, flushed now (what is there comes back even if the call is cut short)."""
    with open(out / "results.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """``dcdgan ARGV`` in this process: exit code, stdout, stderr."""
    from dcdgan.cli import main

    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            code = main(argv)
        except Exception as err:  # a CUDA error: recorded, and the step ends (the context is unusable after it)
            print(f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}", file=sys.stderr)
            code = 99
    return code, stdout.getvalue(), stderr.getvalue()


# ---------------------------------------------------------------- steps (each in a child process)


def step_bench(step: dict, out: Path) -> None:
    """`dcdgan bench STUDENT --vs OPPONENT` for each opponent and precision, at this step's runner and batch."""
    for precision in step["precisions"]:
        for opponent in OPPONENTS:
            argv = ["bench", STUDENT, "--vs", opponent, "--device", step["device"], "--runner", step["runner"], "--precision", precision,
                    "--batch", str(step["batch"]), "--size", str(step["size"]), "--runs", str(step["runs"]), "--warmup", str(step["warmup"]), "--json"]
            start = time.perf_counter()
            code, stdout, stderr = run_cli(argv)
            row = {"kind": "bench", "argv": "dcdgan " + " ".join(argv), "runner": step["runner"], "precision": precision, "batch": step["batch"],
                   "opponent": opponent, "rc": code, "wall_s": round(time.perf_counter() - start, 1)}
            if code == 0:
                row["result"] = json.loads(stdout)
            else:
                row["error"] = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit code {code}"
            append(out, row)
            print(f"[bench {step['runner']} {precision} batch {step['batch']} vs {opponent}] rc {code} in {row['wall_s']} s", file=sys.stderr, flush=True)
            if code == 99:
                return
            release_gpu_memory()


def release_gpu_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def step_precision(step: dict, out: Path) -> None:
    """Outputs of each precision and runner against fp32 eager on the same input: PSNR (uint8) and max abs difference."""
    import numpy as np
    import torch

    from dcdgan.backends import runner_from_module
    from dcdgan.cuda_runners import FP32_MAX_ABS_DIFF, MIN_PSNR_VS_FP32
    from dcdgan.export import psnr_against
    from dcdgan.metrics.latency import parse_architecture
    from dcdgan.nets import build_generator

    x = np.random.default_rng(0).uniform(-1, 1, (4, 3, step["size"], step["size"])).astype(np.float32)
    for model in step["models"]:
        spec = parse_architecture(model)
        torch.manual_seed(0)
        net = build_generator(spec)
        reference = runner_from_module(net, spec, "torch", "fp32", step["device"], runner="eager")(x)
        for precision in step["precisions"]:
            for how in step["runners"]:
                row = {"kind": "precision", "model": model, "precision": precision, "runner": how}
                try:
                    torch.manual_seed(0)
                    runner = runner_from_module(build_generator(spec), spec, "torch", precision, step["device"], runner=how)
                    got = runner(x)
                except Exception as err:
                    row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                    append(out, row)
                    continue
                row["max_abs_diff"] = float(np.abs(got - reference).max())
                row["psnr_db"] = psnr_against(runner, [x], [reference])
                row["within"] = row["max_abs_diff"] <= FP32_MAX_ABS_DIFF if precision == "fp32" else row["psnr_db"] >= MIN_PSNR_VS_FP32[precision]
                append(out, row)
                del runner
                release_gpu_memory()
        print(f"[precision {model}] done", file=sys.stderr, flush=True)


def step_translate(step: dict, out: Path) -> None:
    """`dcdgan translate` of a folder (equal sizes plus a few odd ones) with each runner: images/s and agreement."""
    import numpy as np
    import torch
    from PIL import Image

    from dcdgan.metrics.latency import parse_architecture
    from dcdgan.nets import build_generator
    from dcdgan.weights import save_generator

    root = Path(os.environ.get("TMPDIR", "/tmp")) / "gpu_serving_translate"
    folder = root / "in"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    side, odd = step["size"], max(4, step["size"] * 3 // 4 + 3)  # odd: not a multiple of 4 (reflection padding)
    for i in range(step["images"]):
        h, w = (side, side) if i % 8 else (odd, side)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"img_{i:03d}.png")
    spec = parse_architecture(STUDENT)
    torch.manual_seed(0)
    model = root / "student.safetensors"
    save_generator(model, build_generator(spec), spec, {"image_size": side})
    written = {}
    for how in step["runners"]:
        target = root / f"out_{how}"
        argv = ["translate", str(model), str(folder), str(target), "--device", step["device"], "--runner", how, "--batch-size", str(step["batch"]), "--quiet"]
        start = time.perf_counter()
        code, stdout, stderr = run_cli(argv)
        wall = time.perf_counter() - start
        row = {"kind": "translate", "argv": "dcdgan " + " ".join(argv), "runner": how, "rc": code, "wall_s": round(wall, 2),
               "images": step["images"], "images_per_s": round(step["images"] / wall, 1), "stdout": stdout.strip(), "stderr_tail": stderr.strip()[-300:]}
        if code == 0:
            written[how] = target
        append(out, row)
    if len(written) == 2:
        (a, b) = written.values()
        diffs = [int(np.abs(np.asarray(Image.open(p), dtype=int) - np.asarray(Image.open(b / p.name), dtype=int)).max()) for p in sorted(a.glob("*.png"))]
        append(out, {"kind": "translate_agreement", "runners": list(written), "files": len(diffs), "max_level_diff": max(diffs)})


STEPS = {"bench": step_bench, "precision": step_precision, "translate": step_translate}


# ---------------------------------------------------------------- the orchestrator


def environment(out: Path, device: str) -> None:
    """env.txt: python, torch, GPU, and whether TensorRT is importable."""
    import importlib.util
    import platform

    import torch

    lines = [f"python {platform.python_version()}, torch {torch.__version__}, host {platform.node()}, {os.cpu_count()} CPUs",
             f"cuda available: {torch.cuda.is_available()}" + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "")]
    trt = importlib.util.find_spec("torch_tensorrt") is not None
    lines.append(f"torch_tensorrt importable: {trt}; dcdgan has no TensorRT runner (torch-tensorrt did not install on the "
                 "development machine: tensorrt-cu13-libs is a stub that downloads from pypi.nvidia.com), so none is timed")
    if device == "cuda":
        try:
            lines.append(subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                                        capture_output=True, text=True, timeout=20).stdout.strip())
        except (OSError, subprocess.TimeoutExpired) as err:
            lines.append(f"nvidia-smi: {err}")
    (out / "env.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), file=sys.stderr, flush=True)


def run_step(step: dict, out: Path, timeout: float) -> tuple[int | str, float]:
    """The step in a child process of its own session, killed with everything it started past ``timeout``."""
    start = time.perf_counter()
    with open(out / "log.txt", "a") as log:
        log.write(f"\n=== step {json.dumps(step)} (timeout {timeout:.0f} s)\n")
        log.flush()
        child = subprocess.Popen([sys.executable, __file__, "step", json.dumps(step), "--out", str(out)], stdout=log, stderr=log, start_new_session=True)
        try:
            code: int | str = child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            code = "timeout"
    return code, time.perf_counter() - start


def orchestrate(out: Path, budget_s: float, dry: bool) -> int:
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    steps = plan(dry)
    environment(out, steps[0]["device"])
    for step in steps:
        left = budget_s - (time.perf_counter() - started)
        if left < 15:
            append(out, {"kind": "skipped", "step": step, "why": f"budget: {left:.0f} s left of {budget_s:.0f}"})
            continue
        code, took = run_step(step, out, min(step["cap"], left))
        append(out, {"kind": "step", "step": step, "rc": code, "seconds": round(took, 1)})
        print(f"step {json.dumps(step)}: rc {code} in {took:.0f} s", file=sys.stderr, flush=True)
    (out / "table.md").write_text(table(out / "results.jsonl"))
    print((out / "table.md").read_text())
    return 0


def table(results: Path) -> str:
    """Markdown: one row per timed pair (runner, precision, batch, opponent), then the precision check and translate."""
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    lines = ["| vs | batch | precision | runner | student ms | other ms | speedup | student img/s | other img/s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["kind"] != "bench":
            continue
        if r["rc"] != 0:
            lines.append(f"| {r['opponent']} | {r['batch']} | {r['precision']} | {r['runner']} | failed: {r['error'][:90]} | | | | |")
            continue
        s, o = r["result"], r["result"]["vs"]
        lines.append(f"| {r['opponent']} | {r['batch']} | {r['precision']} | {r['runner']} | {s['median_ms']:.2f} | {o['median_ms']:.2f} | "
                     f"{r['result']['speedup']:.1f}x | {1000 * s['batch'] / s['median_ms']:,.0f} | {1000 * o['batch'] / o['median_ms']:,.0f} |")
    lines += ["", "| model | precision | runner | PSNR vs fp32 eager (dB) | max abs diff | within stated tolerance |", "|---|---|---|---|---|---|"]
    for r in rows:
        if r["kind"] == "precision":
            if "error" in r:
                lines.append(f"| {r['model']} | {r['precision']} | {r['runner']} | failed: {r['error'][:90]} | | |")
            else:
                lines.append(f"| {r['model']} | {r['precision']} | {r['runner']} | {r['psnr_db']:.1f} | {r['max_abs_diff']:.2e} | {'yes' if r['within'] else '**no**'} |")
    lines += [""]
    for r in rows:
        if r["kind"] == "translate":
            lines.append(f"- translate, {r['runner']}: rc {r['rc']}, {r['images']} images in {r['wall_s']} s ({r['images_per_s']} images/s): {r['stdout']}")
        elif r["kind"] == "translate_agreement":
            lines.append(f"- translate outputs, {' vs '.join(r['runners'])}: largest difference {r['max_level_diff']} level(s) over {r['files']} files")
        elif r["kind"] in ("step", "skipped"):
            what = " ".join(str(part) for part in (r["step"]["kind"], r["step"].get("runner"), r["step"].get("batch") and f"batch {r['step']['batch']}") if part)
            lines.append(f"- step {what}: " + (f"rc {r['rc']} in {r['seconds']} s" if r["kind"] == "step" else f"skipped ({r['why']})"))
    return "\n".join(lines) + "\n"


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "step":
        parser = argparse.ArgumentParser()
        parser.add_argument("which")
        parser.add_argument("step")
        parser.add_argument("--out", type=Path, required=True)
        args = parser.parse_args()
        step = json.loads(args.step)
        STEPS[step["kind"]](step, args.out)
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "table":
        print(table(Path(sys.argv[2])), end="")
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="results folder ($OUT on the device)")
    parser.add_argument("--budget-s", type=float, default=450, help="wall-clock budget of all steps together (default 450)")
    parser.add_argument("--dry", action="store_true", help="the CPU-possible steps, tiny, on CPU: checks that the script starts and writes")
    args = parser.parse_args()
    return orchestrate(args.out, args.budget_s, args.dry)


if __name__ == "__main__":
    sys.exit(main())
