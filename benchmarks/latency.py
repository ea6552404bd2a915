"""CPU latency of the student against the teacher on each backend, timed alternately in one process.

    python benchmarks/latency.py --size 256 --threads 2 --runs 30

Per backend (PyTorch eager, torch.compile, ONNX Runtime, OpenVINO), the student (mobile_resnet_9blocks ngf 16)
and the teacher (resnet_9blocks ngf 64, the original CycleGAN/pix2pix generator; --teacher to change) are
warmed up, then timed alternately (student, teacher, student, ...), so both see the same machine load. The
table gives medians, p90s and the realized speedup (teacher median / student median) beside the MAC ratio.
Weights are random (speed does not depend on them); every backend runs fp32, pinned. ``--extra`` adds
student-only rows at lower precision (OpenVINO bf16 / fp16 / int8); int8 needs ``--run`` (its calibration
images) and then times that run's student architecture.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from dcdgan.metrics.latency import BenchSettings, bench, bench_runner, time_runners  # noqa: E402

BACKEND_LABELS = {"torch": "PyTorch eager", "compile": "torch.compile (inductor)", "onnxruntime": "ONNX Runtime", "openvino": "OpenVINO"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--student", default="mobile_resnet_9blocks:16")
    parser.add_argument("--teacher", default="resnet_9blocks:64")
    parser.add_argument("--backends", default="torch,compile,onnxruntime,openvino")
    parser.add_argument("--extra", default="", help="comma list of student-only OpenVINO precisions, e.g. bf16,fp16")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args()

    results = []
    for backend in [b for b in args.backends.split(",") if b]:
        settings = BenchSettings(backend, "fp32", "cpu", args.size, args.batch, args.threads, args.runs, args.warmup)
        start = time.time()
        result = bench(args.student, settings, vs=args.teacher)
        result["wall_s"] = time.time() - start
        results.append(result)
        print(f"[{backend}] student {result['median_ms']:.1f} ms, teacher {result['vs']['median_ms']:.1f} ms, "
              f"speedup {result['speedup']:.1f}x ({result['wall_s']:.0f}s)", file=sys.stderr, flush=True)
    for precision in [p for p in args.extra.split(",") if p]:
        settings = BenchSettings("openvino", precision, "cpu", args.size, args.batch, args.threads, args.runs, args.warmup)
        fp32 = BenchSettings("openvino", "fp32", "cpu", args.size, args.batch, args.threads, args.runs, args.warmup)
        low, ref = time_runners([bench_runner(args.student, settings), bench_runner(args.student, fp32)], settings)
        low["vs_fp32_speedup"] = ref["median_ms"] / low["median_ms"]
        low["fp32_median_ms"] = ref["median_ms"]
        results.append(low)

    print(f"\n{platform.processor() or platform.machine()}, {args.threads} threads, batch {args.batch} x {args.size}x{args.size}, "
          f"{args.runs} alternating runs after {args.warmup} warm-up; medians (p90)\n")
    print("| backend | precision | student ms | teacher ms | realized speedup | MAC ratio |")
    print("|---|---|---|---|---|---|")
    for r in results:
        label = BACKEND_LABELS[r["backend"]]
        if "vs" in r:
            print(f"| {label} | {r['precision']} | {r['median_ms']:.1f} ({r['p90_ms']:.1f}) | {r['vs']['median_ms']:.1f} ({r['vs']['p90_ms']:.1f}) "
                  f"| {r['speedup']:.1f}x | {r['mac_ratio']:.1f}x |")
        else:
            print(f"| {label} | {r['precision']} | {r['median_ms']:.1f} ({r['p90_ms']:.1f}) | - | {r['vs_fp32_speedup']:.2f}x vs its fp32 "
                  f"({r['fp32_median_ms']:.1f} ms, alternated) | - |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
