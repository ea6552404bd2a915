"""Latency of a generator on one backend: warm-up, then repeated timed runs; two models timed alternately.

Alternating A, B, A, B... in one process exposes both models to the same machine load, so their ratio is
meaningful even on a shared, noisy machine. Runners return host arrays, so every timed call includes the
device synchronisation (and, on GPU, the host<->device copies).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from dcdgan.backends import Runner, load_runner, runner_from_module
from dcdgan.errors import UserError
from dcdgan.nets.generators import DEFAULT_NGF, GENERATORS, GeneratorSpec, build_generator


@dataclass(frozen=True)
class BenchSettings:
    """What to time and how."""

    backend: str = "torch"
    precision: str = "fp32"
    device: str = "cpu"
    size: int = 256
    batch: int = 1
    threads: int | None = None
    runs: int = 50
    warmup: int = 5
    input_nc: int = 3
    runner: str = "auto"  # PyTorch: eager, cuda-graph, compile; auto is cuda-graph on CUDA (dcdgan.cuda_runners)


def parse_architecture(text: str, input_nc: int = 3) -> GeneratorSpec | None:
    """``resnet_9blocks`` or ``mobile_resnet_9blocks:16`` (name[:ngf]) -> a spec; None when TEXT is not a registered name."""
    name, _, ngf = text.partition(":")
    if name not in GENERATORS:
        return None
    try:
        width = int(ngf) if ngf else DEFAULT_NGF[name]
    except ValueError:
        raise UserError(f"{text}: expected NAME or NAME:NGF, e.g. mobile_resnet_9blocks:16") from None
    return GeneratorSpec(name, width, input_nc, input_nc)


def bench_runner(model: str, settings: BenchSettings, which: str = "student") -> Runner:
    """A Runner for a model file/run, or for a registered architecture (random weights: speed only)."""
    spec = parse_architecture(model, settings.input_nc)
    if spec is None:
        return load_runner(model, settings.backend, settings.precision, which, settings.device, settings.threads, settings.runner)
    torch.manual_seed(0)
    net = build_generator(spec)
    return runner_from_module(net, spec, settings.backend, settings.precision, settings.device, settings.threads, source=model, runner=settings.runner)


def _summary(runner: Runner, times_s: list[float], settings: BenchSettings) -> dict:
    ms = np.asarray(times_s) * 1000
    macs = runner.macs(settings.size, settings.size)
    return {
        "model": runner.source,
        "backend": runner.backend,
        "runner": runner.runner,  # None on ONNX Runtime and OpenVINO
        "precision": runner.precision,
        "device": settings.device,
        "size": settings.size,
        "batch": settings.batch,
        "threads": settings.threads if settings.threads else torch.get_num_threads(),
        "runs": len(ms),
        "median_ms": float(np.median(ms)),
        "p90_ms": float(np.percentile(ms, 90)),
        "min_ms": float(ms.min()),
        "params": runner.params,
        "macs": macs,  # per image
    }


def time_runners(runners: list[Runner], settings: BenchSettings) -> list[dict]:
    """Warm each runner up, then time them alternately ``settings.runs`` times each; one summary per runner."""
    if settings.runs < 1:
        raise UserError("--runs must be at least 1")
    inputs = []
    for runner in runners:
        multiple = runner.size_multiple
        if settings.size % multiple:
            raise UserError(f"{runner.source}: --size must be a multiple of {multiple}")
        rng = np.random.default_rng(0)
        inputs.append(rng.uniform(-1, 1, (settings.batch, runner.input_nc, settings.size, settings.size)).astype(np.float32))
    for runner, x in zip(runners, inputs):
        for _ in range(settings.warmup):
            runner(x)
    times: list[list[float]] = [[] for _ in runners]
    for _ in range(settings.runs):
        for i, (runner, x) in enumerate(zip(runners, inputs)):
            start = time.perf_counter()
            runner(x)
            times[i].append(time.perf_counter() - start)
    return [_summary(r, t, settings) for r, t in zip(runners, times)]


def bench(model: str, settings: BenchSettings, vs: str | None = None, which: str = "student") -> dict:
    """Latency of MODEL (and of VS, timed alternately): median_ms, p90_ms; with VS also speedup and mac_ratio."""
    runners = [bench_runner(model, settings, which)]
    if vs is not None:
        runners.append(bench_runner(vs, settings, which))
    results = time_runners(runners, settings)
    result = results[0]
    if vs is not None:
        other = results[1]
        result["vs"] = other
        result["speedup"] = other["median_ms"] / result["median_ms"]
        result["mac_ratio"] = other["macs"] / result["macs"] if other["macs"] and result["macs"] else None
    return result


def format_bench(result: dict) -> str:
    """A few readable lines of a bench result."""

    def line(r: dict) -> str:
        how = f" {r['runner']}" if r.get("runner") else ""
        return (f"{r['model']}: {r['backend']}{how} {r['precision']} {r['device']}, batch {r['batch']} x {r['size']}px, {r['threads']} threads: "
                f"median {r['median_ms']:.2f} ms, p90 {r['p90_ms']:.2f} ms ({r['runs']} runs)")

    lines = [line(result)]
    if "vs" in result:
        lines.append(line(result["vs"]))
        ratio = f", MAC ratio {result['mac_ratio']:.1f}x" if result.get("mac_ratio") else ""
        lines.append(f"speedup {result['speedup']:.1f}x{ratio} (timed alternately in one process)")
    return "\n".join(lines)
