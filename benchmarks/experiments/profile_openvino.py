"""Where the student's time goes in OpenVINO: per-op-type totals from the CPU plugin's performance counters.

    python benchmarks/experiments/profile_openvino.py --size 256 --threads 2 --runs 20
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from dcdgan.conversion import onnx_model_bytes, openvino_model, require  # noqa: E402
from dcdgan.metrics.latency import parse_architecture  # noqa: E402
from dcdgan.nets import build_generator  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="mobile_resnet_9blocks:16")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    ov = require("openvino")
    spec = parse_architecture(args.model)
    model = openvino_model(onnx_model_bytes(build_generator(spec), spec), spec)
    config = {"PERF_COUNT": True, "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": args.threads, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1"}
    compiled = ov.Core().compile_model(model, "CPU", config)
    request = compiled.create_infer_request()
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, args.size, args.size)).astype(np.float32)
    per_type: dict[str, list[float]] = defaultdict(list)
    per_node: dict[str, list[float]] = defaultdict(list)
    for _ in range(3):
        request.infer({0: x})
    for _ in range(args.runs):
        request.infer({0: x})
        totals: dict[str, float] = defaultdict(float)
        for info in request.get_profiling_info():
            ms = info.real_time.total_seconds() * 1000
            totals[f"{info.node_type} [{info.exec_type}]"] += ms
            per_node[f"{info.node_name} {info.node_type} [{info.exec_type}]"].append(ms)
        for key, ms in totals.items():
            per_type[key].append(ms)
    medians = sorted(((float(np.median(v)), k) for k, v in per_type.items()), reverse=True)
    total = sum(m for m, _ in medians)
    print(f"{args.model} at 1x3x{args.size}x{args.size}, {args.threads} threads: sum of per-op medians {total:.2f} ms")
    print("| op [kernel] | median ms | share |\n|---|---|---|")
    for ms, key in medians[:15]:
        print(f"| {key} | {ms:.2f} | {100 * ms / total:.0f}% |")
    print("\nslowest nodes:")
    for ms, key in sorted(((float(np.median(v)), k) for k, v in per_node.items()), reverse=True)[:12]:
        print(f"  {ms:6.2f} ms  {key}")


if __name__ == "__main__":
    main()
