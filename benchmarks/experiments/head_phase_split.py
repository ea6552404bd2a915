"""A/B of the inference form (``dcdgan.nets.inference``): each ResNet generator with its plain 7x7 head against the
same weights with the phase-split head, on PyTorch eager, ONNX Runtime and OpenVINO (fp32 pinned), the two timed
alternately in one process. Prints the outputs' max difference and the median ratio.

    python benchmarks/experiments/head_phase_split.py --runs 30 --threads 2      # 1x3x256x256, random weights
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
from dcdgan.backends import Runner, onnxruntime_session, openvino_compile  # noqa: E402
from dcdgan.conversion import require  # noqa: E402
from dcdgan.metrics.latency import BenchSettings, parse_architecture, time_runners  # noqa: E402
from dcdgan.nets import build_generator  # noqa: E402
from dcdgan.nets.inference import inference_form  # noqa: E402


def onnx_bytes(net: torch.nn.Module, size: int) -> bytes:
    """A static-shape ONNX export of ``net`` exactly as given (the product's exporter would apply the inference form)."""
    example = torch.zeros(1, 3, size, size)
    with contextlib.redirect_stdout(io.StringIO()):
        return torch.onnx.export(net.eval(), (example,), dynamo=True, input_names=["input"], output_names=["output"]).model_proto.SerializeToString()


def forward_for(net: torch.nn.Module, backend: str, size: int, threads: int):
    """A host-array forward of ``net`` on one backend."""
    if backend == "torch":
        torch.set_num_threads(threads)

        @torch.inference_mode()
        def run(x: np.ndarray) -> np.ndarray:
            return net(torch.from_numpy(x)).numpy()

        return run
    model = onnx_bytes(net, size)
    if backend == "onnxruntime":
        session = onnxruntime_session(model, threads)
        return lambda x: session.run(None, {"input": x})[0]
    ov = require("openvino")
    request = openvino_compile(ov.Core().read_model(model=model, weights=b""), "fp32", threads).create_infer_request()
    return lambda x: request.infer({0: x})[0].copy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="mobile_resnet_9blocks:16,resnet_9blocks:64")
    parser.add_argument("--backends", default="torch,onnxruntime,openvino")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, args.size, args.size)).astype(np.float32)
    print(f"1x3x{args.size}x{args.size}, {args.threads} threads, fp32, {args.runs} alternated runs after {args.warmup} warm-up; medians\n")
    print("| model | backend | plain head ms | phase-split head ms | ratio | max abs diff |\n|---|---|---|---|---|---|")
    for model in args.models.split(","):
        spec = parse_architecture(model)
        torch.manual_seed(0)
        plain = build_generator(spec).eval()
        split = inference_form(plain)
        for backend in args.backends.split(","):
            runners = [Runner(backend, "fp32", 3, 3, 4, None, name, forward_for(net, backend, args.size, args.threads), spec)
                       for name, net in (("plain", plain), ("split", split))]
            diff = float(np.abs(runners[0](x) - runners[1](x)).max())
            settings = BenchSettings(backend=backend, size=args.size, threads=args.threads, runs=args.runs, warmup=args.warmup)
            a, b = time_runners(runners, settings)
            print(f"| {model} | {backend} | {a['median_ms']:.2f} | {b['median_ms']:.2f} | {b['median_ms'] / a['median_ms']:.3f} | {diff:.1e} |", flush=True)


if __name__ == "__main__":
    main()
