"""How a PyTorch generator is called: eagerly, replayed from CUDA graphs, or through torch.compile.

On a GPU at batch 1 the student is launch-bound: its depthwise + pointwise + InstanceNorm blocks are many small
kernels, and in eager PyTorch it was no faster than resnet_9blocks on an H200 (5.97 vs 5.44 ms), while the same
forward replayed as one CUDA graph took 1.16 ms (benchmarks/RESULTS.md). So the ``cuda-graph`` runner captures one
forward per input shape and replays it: the input is copied into a static buffer the graph reads, the graph is
replayed, and the output is copied out of the static buffer the graph writes (a later replay overwrites it).
``compile`` is ``torch.compile(mode="reduce-overhead")``, which records CUDA graphs of the compiled code itself.

The shape bookkeeping (``GraphRunner``) takes the capture function as a parameter, so it runs on any device with a
graph-like object; the real capture (``capture_cuda_graph``) needs CUDA.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Callable, Iterator, Protocol

import numpy as np
import torch
from torch import nn

from dcdgan.errors import UserError

RUNNERS = ("auto", "eager", "cuda-graph", "compile")  # auto: cuda-graph on --device cuda, else eager
CAPTURED_RUNNERS = ("cuda-graph", "compile")  # run at fixed shapes: translate fills short batches up to its batch size
GRAPH_BOUND = 4  # graphs kept per runner (each holds its own input, output and activation memory); oldest use dropped
WARMUP_CALLS = 3  # eager calls before a capture: cuDNN picks its algorithms and the allocator fills (PyTorch's recipe)
DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

# The stated cost of each CUDA precision: the least PSNR (dB, uint8 images, as `dcdgan export` reports it) of its
# outputs against fp32 eager outputs on the same input. tf32 and fp16 keep 10 mantissa bits, bf16 7 (8x coarser);
# on CPU (torch 2.14, random weights, 256 px) bf16 gave 47.1 dB for the student and 43.1 dB for the ngf-64 teacher,
# fp16 52.1 dB for the student (not yet measured on a GPU). fp32 runners (cuda-graph, compile) run the same arithmetic as eager fp32 and must stay
# within FP32_MAX_ABS_DIFF of it, the export parity bound. benchmarks/device/gpu_serving.py checks both on a GPU.
MIN_PSNR_VS_FP32 = {"tf32": 40.0, "fp16": 40.0, "bf16": 35.0}
FP32_MAX_ABS_DIFF = 1e-4


def resolve_runner(runner: str, backend: str, device: str) -> str | None:
    """The runner a (runner, backend, device) request means; None for ONNX Runtime and OpenVINO (not PyTorch modules)."""
    if runner not in RUNNERS:
        raise UserError(f"unknown runner {runner!r}; choose one of {', '.join(RUNNERS)}")
    if backend not in ("torch", "compile"):
        if runner not in ("auto", "eager"):
            raise UserError(f"--runner {runner} runs PyTorch modules; it does not apply to --backend {backend}")
        return None
    if backend == "compile":
        if runner == "cuda-graph":
            raise UserError("--backend compile is --runner compile; for --runner cuda-graph use --backend torch")
        return "compile"
    if runner == "cuda-graph" and (device != "cuda" or not torch.cuda.is_available()):
        where = "no CUDA device is available here" if not torch.cuda.is_available() else "add --device cuda"
        raise UserError(f"--runner cuda-graph replays CUDA graphs and needs a CUDA GPU: {where}")
    if runner == "auto":
        return "cuda-graph" if device == "cuda" else "eager"
    return runner


@contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    """TensorFloat-32 in cuDNN convolutions and matmuls on or off for the duration, restored after.

    PyTorch runs cuDNN convolutions in TF32 by default: fp32 would silently be a lower precision. The flags are
    process-wide, so each call sets them for itself (two runners of different precisions can share a process)."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


# ---------------------------------------------------------------- CUDA graphs, one per input shape


class Graph(Protocol):
    """What a captured graph offers: replay reads the static input and writes the static output."""

    def replay(self) -> None: ...


Capture = Callable[[nn.Module, torch.Tensor], tuple[Graph, torch.Tensor]]  # (net, static input) -> (graph, static output)


def capture_cuda_graph(net: nn.Module, static_in: torch.Tensor) -> tuple[Graph, torch.Tensor]:
    """Record one forward of ``net`` on ``static_in`` as a CUDA graph; returns it and the output tensor it writes."""
    side = torch.cuda.Stream()  # the warm-up runs off the default stream, as PyTorch's CUDA graph recipe asks
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(WARMUP_CALLS):
            net(static_in)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    # thread_local: another thread's CUDA calls during this capture (a server) do not invalidate it
    with torch.cuda.graph(graph, capture_error_mode="thread_local"):
        static_out = net(static_in)
    return graph, static_out


@dataclass
class Captured:
    """One graph and the two buffers it points to."""

    graph: Graph
    static_in: torch.Tensor
    static_out: torch.Tensor


class GraphRunner:
    """Replay ``net`` from captured graphs, one per input shape, at most ``bound`` of them (least recently used dropped).

    The runner holds the net (its weights and buffers are what the graphs read) and each graph's static input and
    output: the graphs hold raw pointers, so nothing they read may be freed while they live. A call copies its input
    into the static input, replays, and returns a float32 CPU copy of the static output, so a later replay cannot
    change what an earlier caller holds. One lock: two threads must not share the static buffers at once."""

    def __init__(self, net: nn.Module, dtype: torch.dtype, device: str | torch.device, capture: Capture = capture_cuda_graph, bound: int = GRAPH_BOUND):
        if bound < 1:
            raise ValueError("bound must be at least 1")
        self.net, self.dtype, self.device, self.capture, self.bound = net, dtype, torch.device(device), capture, bound
        self.graphs: OrderedDict[tuple[int, ...], Captured] = OrderedDict()
        self.captures = 0  # graphs captured so far, evicted ones included
        self._lock = threading.Lock()

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """net(images) as a new float32 CPU tensor."""
        shape = tuple(images.shape)
        with self._lock:
            entry = self.graphs.get(shape)
            if entry is None:
                entry = self._capture(shape)
            else:
                self.graphs.move_to_end(shape)
            entry.static_in.copy_(images)  # host -> device and the cast to the runner's dtype in one copy
            entry.graph.replay()
            return entry.static_out.to(device="cpu", dtype=torch.float32, copy=True)

    def _capture(self, shape: tuple[int, ...]) -> Captured:
        while len(self.graphs) >= self.bound:
            self.graphs.popitem(last=False)  # its graph, buffers and memory pool are freed with it
        static_in = torch.zeros(shape, dtype=self.dtype, device=self.device)
        graph, static_out = self.capture(self.net, static_in)
        self.captures += 1
        entry = self.graphs[shape] = Captured(graph, static_in, static_out)
        return entry


# ---------------------------------------------------------------- the forward of a Runner


def compiled_call(net: nn.Module, device: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """torch.compile: mode="reduce-overhead" (CUDA graphs of the compiled code) on CUDA, the default mode on CPU."""
    if device != "cuda":
        compiled = torch.compile(net)
        return lambda x: compiled(x).float().cpu()
    compiled = torch.compile(net, mode="reduce-overhead", dynamic=False)  # one specialised graph per input shape

    def call(x: torch.Tensor) -> torch.Tensor:
        torch.compiler.cudagraph_mark_step_begin()  # each call is a new step: the previous output may be overwritten
        return compiled(x).to(device="cpu", dtype=torch.float32, copy=True)

    return call


def torch_forward(net: nn.Module, runner: str, precision: str, device: str) -> Callable[[np.ndarray], np.ndarray]:
    """float32 N,C,H,W host arrays -> float32 host arrays through ``net`` (already on ``device`` in the runner's dtype)."""
    dtype = DTYPES[precision]
    if runner == "cuda-graph":
        call: Callable[[torch.Tensor], torch.Tensor] = GraphRunner(net, dtype, device)  # copies into its static input itself
    else:
        run = compiled_call(net, device) if runner == "compile" else (lambda x: net(x).float().cpu())
        call = lambda images: run(images.to(device=device, dtype=dtype))  # noqa: E731

    @torch.inference_mode()
    def forward(images: np.ndarray) -> np.ndarray:
        with tf32(precision == "tf32") if device == "cuda" else nullcontext():
            return call(torch.from_numpy(images)).numpy()

    return forward
