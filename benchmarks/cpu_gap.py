"""Where the student's CPU time goes, and what closes part of the gap: alternated A/Bs of graph forms and runtime
settings against the exported student as the product runs it (ONNX Runtime and OpenVINO, fp32, one thread).

    taskset -c 1 python benchmarks/cpu_gap.py --runs 20 --size 256

Each row times the baseline and one variant alternately in this process (the same input, warm-up first) and gives
the medians, their ratio (variant / baseline; < 1 is faster) and the outputs' max abs difference against the
baseline's (the export's parity bound is 1e-4). Variants:

- ort-extended: ONNX Runtime at ORT_ENABLE_EXTENDED, i.e. without the NCHWc layout transformer of ORT_ENABLE_ALL.
- in-gap: each InstanceNormalization written as GlobalAveragePool / Sub / Mul / GlobalAveragePool / Add / Sqrt / Div,
  ops ONNX Runtime's NCHWc layout keeps (InstanceNormalization forces a reorder out of and back into it).
- in-reduce: the same with ReduceMean over H, W (the pattern OpenVINO fuses back into MVN).
- convT-subpixel: each ConvTranspose2d(k3, s2, p1, op1) of the decoder as a 2x2 conv to its 4 output phases plus
  pixel_shuffle (SubPixelConvTranspose below; the same products, 16/9 of the multiply-adds because of zero taps).
- ort static-shape: the ONNX input fixed to 1 x C x size x size (the export's is dynamic).
- ov-nhwc: OpenVINO fed and read NHWC (the images' own layout) through its pre/post-processing.
- ov-snippets-off: OpenVINO's snippets (its elementwise subgraph fusion) disabled.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from dcdgan.backends import onnxruntime_session, openvino_compile  # noqa: E402
from dcdgan.export import onnx_model_bytes  # noqa: E402
from dcdgan.metrics.latency import parse_architecture  # noqa: E402
from dcdgan.nets import build_generator  # noqa: E402


def decompose_instance_norm(model_bytes: bytes, reduce: str) -> bytes:
    """Each InstanceNormalization as mean/variance ops (``reduce``: 'gap' GlobalAveragePool, 'mean' ReduceMean)."""
    model = onnx.load_from_string(model_bytes)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    nodes = []
    axes = numpy_helper.from_array(np.array([2, 3], np.int64), "in_axes")
    model.graph.initializer.append(axes)
    for k, node in enumerate(model.graph.node):
        if node.op_type != "InstanceNormalization":
            nodes.append(node)
            continue
        eps = next(a.f for a in node.attribute if a.name == "epsilon")
        scale, bias = inits[node.input[1]], inits[node.input[2]]
        if not (np.all(scale == 1) and np.all(bias == 0)):
            raise ValueError("affine InstanceNorm: not handled by this benchmark")
        p = f"in{k}_"
        model.graph.initializer.append(numpy_helper.from_array(np.array(eps, np.float32), p + "eps"))

        def mean(src: str, dst: str) -> onnx.NodeProto:
            if reduce == "gap":
                return helper.make_node("GlobalAveragePool", [src], [dst])
            return helper.make_node("ReduceMean", [src, "in_axes"], [dst], keepdims=1)

        nodes += [
            mean(node.input[0], p + "m"),
            helper.make_node("Sub", [node.input[0], p + "m"], [p + "d"]),
            helper.make_node("Mul", [p + "d", p + "d"], [p + "d2"]),
            mean(p + "d2", p + "v"),
            helper.make_node("Add", [p + "v", p + "eps"], [p + "ve"]),
            helper.make_node("Sqrt", [p + "ve"], [p + "s"]),
            helper.make_node("Div", [p + "d", p + "s"], [node.output[0]]),
        ]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model.SerializeToString()


class SubPixelConvTranspose(nn.Module):
    """``ConvTranspose2d(k=3, stride=2, padding=1, output_padding=1)`` as a 2x2 conv on the input zero-padded by one
    row and column at the bottom and right, giving the 4 output phases as channels, then ``pixel_shuffle(2)``: per
    dimension an even output is x[m] * w[1], an odd one x[m] * w[2] + x[m + 1] * w[0] (x past the edge is 0)."""

    def __init__(self, ct: nn.ConvTranspose2d):
        super().__init__()
        w = ct.weight.detach()  # (in, out, 3, 3)
        in_c, out_c = w.shape[:2]
        kernel = w.new_zeros(out_c * 4, in_c, 2, 2)
        taps = {0: [(0, 1)], 1: [(0, 2), (1, 0)]}  # output phase -> [(input offset, kernel index)]
        for py in (0, 1):
            for px in (0, 1):
                for dy, ky in taps[py]:
                    for dx, kx in taps[px]:
                        kernel[py * 2 + px :: 4, :, dy, dx] = w[:, :, ky, kx].t()
        self.conv = nn.Conv2d(in_c, out_c * 4, 2, bias=ct.bias is not None)
        self.conv.weight.data.copy_(kernel)
        if ct.bias is not None:
            self.conv.bias.data.copy_(ct.bias.detach().repeat_interleave(4))

    def forward(self, x: Tensor) -> Tensor:
        return F.pixel_shuffle(self.conv(F.pad(x, (0, 1, 0, 1))), 2)


def subpixel_decoder(net: nn.Module) -> nn.Module:
    """A copy of ``net`` whose k3/s2/p1/op1 transposed convs are SubPixelConvTranspose."""
    net = copy.deepcopy(net)
    layers = [SubPixelConvTranspose(m) if isinstance(m, nn.ConvTranspose2d) and m.kernel_size == (3, 3) and m.stride == (2, 2)
              and m.padding == (1, 1) and m.output_padding == (1, 1) and m.groups == 1 else m for m in net.model]
    net.model = nn.Sequential(*layers)
    return net


def static_dims(model_bytes: bytes, size: int, channels: int) -> bytes:
    """The ONNX model with its input fixed to 1 x C x size x size (and shapes inferred)."""
    from onnx.tools.update_model_dims import update_inputs_outputs_dims

    model = onnx.load_from_string(model_bytes)
    model = update_inputs_outputs_dims(model, {"input": [1, channels, size, size]}, {"output": [1, -1, size, size]})
    return onnx.shape_inference.infer_shapes(model).SerializeToString()


def ort_forward(model: bytes, threads: int, level: str = "all"):
    import onnxruntime as ort

    session = onnxruntime_session(model, threads)
    if level != "all":
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.intra_op_num_threads, options.inter_op_num_threads, options.log_severity_level = threads, 1, 3
        session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"input": x})[0]


def ov_forward(model: bytes, threads: int, size: int, nhwc: bool = False, extra: dict | None = None):
    """A static-shape OpenVINO compile (as the product's runner makes for a repeated shape)."""
    import openvino as ov

    ov_model = ov.Core().read_model(model=model, weights=b"")
    ov_model.reshape({ov_model.input(0): [1, 3, size, size]})
    if nhwc:
        ppp = ov.preprocess.PrePostProcessor(ov_model)
        ppp.input().tensor().set_layout(ov.Layout("NHWC"))
        ppp.input().model().set_layout(ov.Layout("NCHW"))
        ppp.output().model().set_layout(ov.Layout("NCHW"))
        ppp.output().tensor().set_layout(ov.Layout("NHWC"))
        ov_model = ppp.build()
    if extra:
        config = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1", "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads, **extra}
        request = ov.Core().compile_model(ov_model, "CPU", config).create_infer_request()
    else:
        request = openvino_compile(ov_model, "fp32", threads).create_infer_request()
    return lambda x: request.infer({0: x}, share_inputs=True)[0].copy()  # NHWC in and out for ov-nhwc


def ort_profile(model: bytes, x: np.ndarray, threads: int, runs: int, level: str) -> None:
    """ONNX Runtime's own per-node timings, summed by op type (ms per run)."""
    import collections
    import json

    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL if level == "all" else ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.intra_op_num_threads, options.inter_op_num_threads, options.enable_profiling = threads, 1, True
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    for _ in range(runs):
        session.run(None, {"input": x})
    per_op: collections.Counter = collections.Counter()
    nodes: collections.Counter = collections.Counter()
    with open(session.end_profiling()) as f:
        for event in json.load(f):
            if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
                per_op[event["args"]["op_name"]] += event["dur"] / 1e3 / runs
                nodes[event["args"]["op_name"]] += 1 / runs
    total = sum(per_op.values())
    print(f"ONNX Runtime profile ({level}): {total:.1f} ms of kernels per run\n| op | ms | share | nodes |\n|---|---|---|---|")
    for op, ms in per_op.most_common():
        print(f"| {op} | {ms:.1f} | {ms / total:.0%} | {nodes[op]:.0f} |")
    print()


def ab(base, variant, x_base, x_variant, runs: int, warmup: int) -> tuple[float, float]:
    """Medians (ms) of ``base`` and ``variant`` timed alternately."""
    for _ in range(warmup):
        base(x_base), variant(x_variant)
    a, b = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        base(x_base)
        t1 = time.perf_counter()
        variant(x_variant)
        t2 = time.perf_counter()
        a.append((t1 - t0) * 1e3)
        b.append((t2 - t1) * 1e3)
    return statistics.median(a), statistics.median(b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mobile_resnet_9blocks:16")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--only", help="comma-separated variant names")
    parser.add_argument("--ort-profile", action="store_true", help="first print ONNX Runtime's per-op profile (ENABLE_ALL and EXTENDED)")
    args = parser.parse_args()

    import onnxruntime
    import openvino

    spec = parse_architecture(args.model)
    torch.manual_seed(0)
    net = build_generator(spec).eval()
    base = onnx_model_bytes(net, spec)
    subpixel = onnx_model_bytes(subpixel_decoder(net), spec)
    static = static_dims(base, args.size, spec.input_nc)
    gap, reduce = decompose_instance_norm(base, "gap"), decompose_instance_norm(base, "mean")
    x = np.random.default_rng(0).uniform(-1, 1, (1, spec.input_nc, args.size, args.size)).astype(np.float32)
    x_nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    t, s = args.threads, args.size
    variants = {
        "ort-extended": ("onnxruntime", lambda: ort_forward(base, t), lambda: ort_forward(base, t, "extended"), False),
        "ort in-gap": ("onnxruntime", lambda: ort_forward(base, t), lambda: ort_forward(gap, t), False),
        "ort in-reduce": ("onnxruntime", lambda: ort_forward(base, t), lambda: ort_forward(reduce, t), False),
        "ort convT-subpixel": ("onnxruntime", lambda: ort_forward(base, t), lambda: ort_forward(subpixel, t), False),
        "ort static-shape": ("onnxruntime", lambda: ort_forward(base, t), lambda: ort_forward(static, t), False),
        "ov convT-subpixel": ("openvino", lambda: ov_forward(base, t, s), lambda: ov_forward(subpixel, t, s), False),
        "ov in-gap": ("openvino", lambda: ov_forward(base, t, s), lambda: ov_forward(gap, t, s), False),
        "ov in-reduce": ("openvino", lambda: ov_forward(base, t, s), lambda: ov_forward(reduce, t, s), False),
        "ov-nhwc": ("openvino", lambda: ov_forward(base, t, s), lambda: ov_forward(base, t, s, nhwc=True), True),
        "ov-snippets-off": ("openvino", lambda: ov_forward(base, t, s), lambda: ov_forward(base, t, s, extra={"SNIPPETS_MODE": "DISABLE"}), False),
    }
    chosen = [] if args.only == "" else args.only.split(",") if args.only else list(variants)
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), platform.processor())
    print(f"{args.model} 1x{spec.input_nc}x{s}x{s}, fp32, {t} thread(s), {args.runs} alternated runs after {args.warmup} warm-up; medians")
    print(f"host: {cpu}, {len(os.sched_getaffinity(0))} usable CPU(s), load {os.getloadavg()[0]:.1f}; "
          f"onnxruntime {onnxruntime.__version__}, openvino {openvino.__version__}, torch {torch.__version__}\n")
    if args.ort_profile:
        for level in ("all", "extended"):
            ort_profile(base, x, t, args.runs, level)
    print("| variant | backend | baseline ms | variant ms | ratio | max abs diff vs baseline |\n|---|---|---|---|---|---|")
    for name in chosen:
        backend, make_base, make_variant, nhwc = variants[name]
        f_base, f_var = make_base(), make_variant()
        xv = x_nhwc if nhwc else x
        y_base, y_var = f_base(x), f_var(xv)
        if nhwc:
            y_var = y_var.transpose(0, 3, 1, 2)
        diff = float(np.abs(y_base - y_var).max())
        a, b = ab(f_base, f_var, x, xv, args.runs, args.warmup)
        print(f"| {name} | {backend} | {a:.2f} | {b:.2f} | {b / a:.3f} | {diff:.1e} |", flush=True)


if __name__ == "__main__":
    main()
