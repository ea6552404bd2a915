"""CPU latency of the student against a reference generator on each backend, timed alternately in one process.

    python benchmarks/latency.py --size 256 --threads 2 --runs 30

Per backend (PyTorch eager, torch.compile, ONNX Runtime, OpenVINO; with ``.[mobile]`` also ``--backends
executorch,litert``: both models converted first, then run on the ExecuTorch runtime / LiteRT interpreter), the
student (mobile_resnet_9blocks ngf 16) and the reference (resnet_9blocks ngf 64, the original CycleGAN/pix2pix
generator that the compression is measured against; not the recipes' teacher, mobile_resnet_9blocks ngf 64;
--reference to change) are warmed up, then timed alternately (student, reference, student, ...), so both see the
same machine load. The table gives medians, p90s and the realized speedup (reference median / student median)
beside the MAC ratio.
Weights are random (speed does not depend on them); every backend runs fp32, pinned. ``--extra`` adds
student-only rows at lower precision (OpenVINO bf16 / fp16 / int8); int8 needs ``--run`` (its calibration
images) and then times that run's student architecture.

    python benchmarks/latency.py --device cuda --size 256 --runs 50

On a GPU (``--device cuda``) the table is PyTorch only: batch-1 latency and batch-64 throughput (``--gpu-batches``)
in fp32 (TF32 off), TF32, bf16 and fp16, each run eager and replayed as a CUDA graph (one launch for the whole
network: batch-1 GAN generators are launch-bound). Inputs stay on the GPU and every timed call ends with a
device synchronisation, so the times are the network's, without host copies.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402

from dcdgan.metrics.latency import BenchSettings, bench, bench_runner, parse_architecture, time_runners  # noqa: E402
from dcdgan.metrics.profile import count_macs  # noqa: E402
from dcdgan.nets.generators import build_generator  # noqa: E402

GPU_DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def gpu_callable(net: torch.nn.Module, x: torch.Tensor, mode: str):
    """A no-argument call running ``net`` on the resident input ``x``: eager, or one replay of a captured CUDA graph."""
    if mode == "eager":
        return lambda: net(x)
    side = torch.cuda.Stream()  # capture needs its warm-up off the default stream (PyTorch's CUDA graph recipe)
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            net(x)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = net(x)

    def replay():
        # The graph holds raw pointers to the weights, the input and its output: this closure keeps them alive.
        # (Returning bare graph.replay let them be freed: the first GPU run hit an illegal memory access at batch 64.)
        graph.replay()
        return net, x, out

    return replay


@torch.inference_mode()
def gpu_rows(student: str, reference: str, size: int, batches: list[int], runs: int, warmup: int,
             device: str = "cuda", modes: tuple[str, ...] = ("eager", "cuda graph")) -> list[dict]:
    """Student and reference timed alternately on the GPU for every precision, batch and mode (row keys keep the
    name ``teacher_*`` for the reference, as in JSON files written earlier)."""
    specs = {"student": parse_architecture(student), "teacher": parse_architecture(reference)}
    macs = {k: count_macs(build_generator(s), (1, s.input_nc, size, size)) for k, s in specs.items()}
    rows = []
    for precision, dtype in GPU_DTYPES.items():
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
        for batch in batches:
            for mode in modes:
                torch.manual_seed(0)
                calls = {}
                for role, spec in specs.items():
                    net = build_generator(spec).eval().to(device, dtype)
                    x = torch.rand(batch, spec.input_nc, size, size, device=device, dtype=dtype) * 2 - 1
                    calls[role] = gpu_callable(net, x, mode)
                times = {role: [] for role in calls}
                for i in range(warmup + runs):
                    for role, call in calls.items():
                        torch.cuda.synchronize()
                        start = time.perf_counter()
                        call()
                        torch.cuda.synchronize()
                        if i >= warmup:
                            times[role].append(time.perf_counter() - start)
                med = {role: statistics.median(t) * 1e3 for role, t in times.items()}
                rows.append({"precision": precision, "batch": batch, "mode": mode, "student_ms": med["student"], "teacher_ms": med["teacher"],
                             "student_img_s": batch * 1e3 / med["student"], "teacher_img_s": batch * 1e3 / med["teacher"],
                             "speedup": med["teacher"] / med["student"], "mac_ratio": macs["teacher"] / macs["student"]})
                print(f"[cuda {precision} batch {batch} {mode}] student {med['student']:.2f} ms, {reference} {med['teacher']:.2f} ms", file=sys.stderr, flush=True)
                del calls
                torch.cuda.empty_cache()
    return rows


def print_gpu_table(rows: list[dict], args: argparse.Namespace) -> None:
    """Markdown table of ``gpu_rows``."""
    print(f"\n{torch.cuda.get_device_name()}, torch {torch.__version__}, {args.size}x{args.size}, {args.runs} alternating runs after "
          f"{args.warmup} warm-up; medians; inputs resident on the GPU\n")
    ref = args.reference
    print(f"| precision | batch | mode | student ms | {ref} ms | student img/s | {ref} img/s | realized speedup | MAC ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['precision']} | {r['batch']} | {r['mode']} | {r['student_ms']:.2f} | {r['teacher_ms']:.2f} | {r['student_img_s']:.0f} | "
              f"{r['teacher_img_s']:.0f} | {r['speedup']:.1f}x | {r['mac_ratio']:.1f}x |")


BACKEND_LABELS = {
    "torch": "PyTorch eager", "compile": "torch.compile (inductor)", "onnxruntime": "ONNX Runtime", "openvino": "OpenVINO",
    "executorch": "ExecuTorch (XNNPACK)", "litert": "LiteRT",
}
PHONE_BACKENDS = ("executorch", "litert")  # converted here first (pip install -e ".[mobile]"), then run on their own runtimes


def phone_runner(architecture: str, fmt: str, settings: BenchSettings, folder: Path):
    """A random-weights generator converted to .pte / .tflite (at settings.size) and loaded on its runtime."""
    from dcdgan.backends import load_runner
    from dcdgan.export import description_json
    from dcdgan.mobile import description_file, executorch_bytes, litert_bytes

    spec = parse_architecture(architecture, settings.input_nc)
    torch.manual_seed(0)
    net = build_generator(spec).eval()
    data = executorch_bytes(net, spec) if fmt == "executorch" else litert_bytes(net, spec, settings.size)
    file = folder / f"{architecture.replace(':', '_')}{'.pte' if fmt == 'executorch' else '.tflite'}"
    file.write_bytes(data)
    description_file(file).write_text(description_json(spec))
    return load_runner(file, threads=settings.threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--student", default="mobile_resnet_9blocks:16")
    parser.add_argument("--reference", "--teacher", dest="reference", default="resnet_9blocks:64",
                        help="the generator the student is compared with (default: the original CycleGAN/pix2pix one)")
    parser.add_argument("--backends", default="torch,compile,onnxruntime,openvino")
    parser.add_argument("--extra", default="", help="comma list of student-only OpenVINO precisions, e.g. bf16,fp16")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="cuda: the GPU table (PyTorch; see above)")
    parser.add_argument("--gpu-batches", default="1,64", help="batch sizes of the GPU table")
    args = parser.parse_args()
    if args.device == "cuda":
        rows = gpu_rows(args.student, args.reference, args.size, [int(b) for b in args.gpu_batches.split(",")], args.runs, args.warmup)
        print_gpu_table(rows, args)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2) + "\n")
        return

    results = []
    for backend in [b for b in args.backends.split(",") if b]:
        settings = BenchSettings(backend, "fp32", "cpu", args.size, args.batch, args.threads, args.runs, args.warmup)
        start = time.time()
        if backend in PHONE_BACKENDS:
            with tempfile.TemporaryDirectory() as tmp:
                runners = [phone_runner(model, backend, settings, Path(tmp)) for model in (args.student, args.reference)]
                result, other = time_runners(runners, settings)
            result.update(vs=other, speedup=other["median_ms"] / result["median_ms"], mac_ratio=other["macs"] / result["macs"])
        else:
            result = bench(args.student, settings, vs=args.reference)
        result["wall_s"] = time.time() - start
        results.append(result)
        print(f"[{backend}] student {result['median_ms']:.1f} ms, {args.reference} {result['vs']['median_ms']:.1f} ms, "
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
    print(f"| backend | precision | student ms | {args.reference} ms | realized speedup | MAC ratio |")
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
