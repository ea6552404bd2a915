"""Run a generator on one backend (PyTorch eager, CUDA graphs, torch.compile, ONNX Runtime, OpenVINO) at a pinned precision.

One ``Runner`` type serves translate, bench, eval and the demo: float32 N,C,H,W in [-1, 1] in, the same out.
Every backend is pinned to the precision asked for; OpenVINO in particular runs bf16 on CPUs that support it
unless ``INFERENCE_PRECISION_HINT`` says f32, so we always set the hint and check it after compiling.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from dcdgan.assembly import generator_from_checkpoint, student_spec, teacher_spec
from dcdgan.checkpoint import load_checkpoint
from dcdgan.config import config_from_dict
from dcdgan.conversion import TorchSource, onnx_model_bytes, quantize_int8, require, run_dir_of, size_multiple_of
from dcdgan.errors import UserError
from dcdgan.nets.generators import GeneratorSpec
from dcdgan.nets.inference import inference_form
from dcdgan.runner import Runner, _params, spec_from_metadata  # noqa: F401  (Runner and spec_from_metadata: public here too)
from dcdgan.weights import load_generator

BACKENDS = ("torch", "compile", "onnxruntime", "openvino")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
RUN_PRECISIONS = (*PRECISIONS, "tf32")  # tf32: fp32 weights with TensorFloat-32 convolutions (CUDA); not an export format
CHECKPOINT_SUFFIXES = (".ckpt", ".pt", ".pth")
OV_PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}  # int8 models carry their own quantized ops


class RunnerModule(nn.Module):
    """A Runner as a generator-like module (tensors in, tensors out), for code written against nn.Module (evaluation)."""

    def __init__(self, runner: Runner):
        super().__init__()
        self.runner = runner

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.runner(images.detach().float().cpu().numpy())).to(images.device)


# ---------------------------------------------------------------- sources: what a MODEL argument names


def load_torch_source(model: str | Path, which: str = "student") -> TorchSource:
    """A run directory (student/teacher.safetensors, else its last checkpoint), a checkpoint, or a generator .safetensors."""
    if which not in ("student", "teacher"):
        raise UserError(f"which must be student or teacher, not {which!r}")
    path = Path(model)
    if not path.exists():
        raise UserError(f"{path}: model not found")
    if path.is_dir():
        weights = path / f"{which}.safetensors"
        checkpoint = path / "checkpoints" / "last.ckpt"
        if weights.is_file():
            path = weights
        elif checkpoint.is_file():
            path = checkpoint
        else:
            raise UserError(f"{path}: not a run directory (no {which}.safetensors, no checkpoints/last.ckpt)")
    if path.suffix == ".safetensors":
        net, description = load_generator(path)
        return TorchSource(net, GeneratorSpec(**description["spec"]), path, run_dir_of(path))
    if path.suffix in CHECKPOINT_SUFFIXES:
        state = load_checkpoint(path)
        if which == "teacher" and "student" not in state["networks"]:
            raise UserError(f"{path}: this run has no teacher (distill.method=none)")
        cfg = config_from_dict(state["config"])
        spec = teacher_spec(cfg) if which == "teacher" else student_spec(cfg.model, cfg.data)
        return TorchSource(generator_from_checkpoint(state, which), spec, path, run_dir_of(path))
    raise UserError(f"{path}: unknown model file (expected a run directory, .ckpt, .safetensors, .onnx, .xml or .pt2)")


# ---------------------------------------------------------------- backends


def _check_precision(backend: str, precision: str, device: str) -> None:
    if precision not in RUN_PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; choose one of {', '.join(RUN_PRECISIONS)}")
    if backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend in ("torch", "compile") and precision == "int8":
        raise UserError("int8 runs on --backend openvino (NNCF post-training quantization)")
    if precision == "tf32" and (backend not in ("torch", "compile") or device != "cuda"):
        raise UserError("tf32 (TensorFloat-32 convolutions) is a CUDA precision of --backend torch; on CPU use fp32 or bf16")
    if backend in ("torch", "compile") and precision == "fp16" and device == "cpu":
        raise UserError("fp16 in PyTorch needs --device cuda; on CPU use bf16, or --backend openvino")
    if backend == "onnxruntime" and precision != "fp32":
        raise UserError("onnxruntime runs fp32 here; for fp16/bf16/int8 use --backend openvino")
    if backend == "openvino" and device != "cpu":
        raise UserError("the openvino backend runs on CPU here (--device cpu)")
    if backend == "onnxruntime" and device != "cpu":
        raise UserError("the onnxruntime backend runs on CPU here (--device cpu)")


def _torch_forward(net: nn.Module, runner: str, precision: str, device: str, threads: int | None) -> Callable:
    from dcdgan.cuda_runners import DTYPES, torch_forward

    dtype = DTYPES[precision]
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available")
    if threads:
        torch.set_num_threads(threads)
    if not isinstance(net, torch.fx.GraphModule):  # torch.export modules refuse .eval(); they were exported in eval mode
        # the phase-split head is measured faster on CPU only (benchmarks/RESULTS.md); a GPU keeps the plain module
        net = inference_form(net) if device == "cpu" else net.eval()
    # fp32 on CUDA turns TF32 off around each call (cuda_runners.tf32): PyTorch's default would be a silent lower precision
    return torch_forward(net.to(device=device, dtype=dtype), runner, precision, device)


def onnxruntime_session(onnx_model: str | bytes, threads: int | None):
    """An ONNX Runtime CPU session with every graph optimization on and the thread count pinned."""
    ort = require("onnxruntime")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(onnx_model, options, providers=["CPUExecutionProvider"])


def _onnxruntime_forward(onnx_model: str | bytes, threads: int | None) -> Callable:
    session = onnxruntime_session(onnx_model, threads)
    name = session.get_inputs()[0].name
    return lambda images: session.run(None, {name: images})[0]


def openvino_compile(ov_model, precision: str, threads: int | None):
    """Compile an OpenVINO model for CPU with the inference precision pinned (and checked) and latency hints."""
    ov = require("openvino")
    config = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1"}
    if precision in OV_PRECISION_HINTS:
        config["INFERENCE_PRECISION_HINT"] = OV_PRECISION_HINTS[precision]
    else:  # int8: the quantized ops run int8, everything between them f32 (never a silent bf16)
        config["INFERENCE_PRECISION_HINT"] = "f32"
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = ov.Core().compile_model(ov_model, "CPU", config)
    actual = compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
    if actual != config["INFERENCE_PRECISION_HINT"]:
        raise UserError(f"OpenVINO on this CPU runs {actual}, not the requested {precision}")
    return compiled


OV_STATIC_SHAPES = 4  # static-shape compiles kept per runner (the oldest is dropped first)


def _openvino_forward(ov_model, precision: str, threads: int | None) -> Callable:
    """Inference on host arrays. The exported model has dynamic batch/H/W; an input shape seen a second time gets a
    compile of its own with that shape made static, which spares the CPU plugin its per-call shape inference (4-5%
    of the student's time at 256 px, benchmarks/RESULTS.md) at the cost of one compile (~0.1 s). Shapes seen once,
    as in a folder of mixed sizes, run on the dynamic compile and cost no compile."""
    dynamic = openvino_compile(ov_model, precision, threads).create_infer_request()
    seen: set[tuple[int, ...]] = set()
    static: dict[tuple[int, ...], object] = {}

    def forward(images: np.ndarray) -> np.ndarray:
        shape = tuple(images.shape)
        request = static.get(shape)
        if request is None and shape in seen:
            fixed = ov_model.clone()
            fixed.reshape({fixed.input(0): list(shape)})
            if len(static) == OV_STATIC_SHAPES:
                static.pop(next(iter(static)))
            request = static[shape] = openvino_compile(fixed, precision, threads).create_infer_request()
        seen.add(shape)
        return (request or dynamic).infer({0: images}, share_inputs=True)[0].copy()

    return forward


def is_int8(ov_model) -> bool:
    """Whether an OpenVINO model carries quantization (FakeQuantize) ops: an NNCF int8 export."""
    return any(op.get_type_name() == "FakeQuantize" for op in ov_model.get_ops())


# ---------------------------------------------------------------- loading


def load_runner(
    model: str | Path,
    backend: str = "torch",
    precision: str = "fp32",
    which: str = "student",
    device: str = "cpu",
    threads: int | None = None,
    runner: str = "auto",
) -> Runner:
    """MODEL: a run directory (student.safetensors, or teacher.safetensors with which="teacher"), a checkpoint, a
    generator .safetensors (+ its .json), an .onnx, or an OpenVINO .xml. A missing backend package raises UserError
    naming the extra to install (pip install "dcdgan[deploy]"). ``runner`` (PyTorch only): eager, cuda-graph, compile,
    or auto (cuda-graph on CUDA, else eager); see dcdgan.cuda_runners."""
    path = Path(model)
    if path.suffix in (".onnx", ".xml"):
        if runner not in ("auto", "eager"):
            raise UserError(f"{path}: --runner {runner} runs PyTorch models (a run directory, .safetensors, checkpoint or .pt2)")
        load = _load_onnx if path.suffix == ".onnx" else _load_openvino_xml
        return load(path, backend, precision, device, threads)
    if path.suffix == ".pt2":
        return _load_pt2(path, backend, precision, device, threads, runner)
    if path.suffix in (".pte", ".tflite"):  # phone formats, on their own runtimes (dcdgan[mobile])
        from dcdgan import mobile

        if device != "cpu":
            raise UserError(f"{path}: phone formats run on CPU here (--device cpu)")
        return (mobile.load_pte if path.suffix == ".pte" else mobile.load_tflite)(path, backend, precision, threads)
    src = load_torch_source(path, which)
    return runner_from_module(src.net, src.spec, backend, precision, device, threads, str(src.path), calibration=src, runner=runner)


def runner_from_module(
    net: nn.Module,
    spec: GeneratorSpec,
    backend: str = "torch",
    precision: str = "fp32",
    device: str = "cpu",
    threads: int | None = None,
    source: str = "",
    calibration: TorchSource | None = None,
    runner: str = "auto",
) -> Runner:
    """A Runner for a PyTorch generator: eager, CUDA graphs, compiled, or exported to ONNX first (onnxruntime, openvino).
    ``calibration`` (the net's run) provides the training images int8 calibrates on."""
    from dcdgan.cuda_runners import resolve_runner

    _check_precision(backend, precision, device)
    how = resolve_runner(runner, backend, device)
    if backend in ("onnxruntime", "openvino"):
        require(backend)  # fail on the missing package before spending seconds on the ONNX export
    if backend in ("torch", "compile"):
        forward = _torch_forward(net, how, precision, device, threads)
    else:
        onnx_bytes = onnx_model_bytes(net, spec)
        if backend == "onnxruntime":
            forward = _onnxruntime_forward(onnx_bytes, threads)
        else:
            ov_model = _ov_from_onnx_bytes(onnx_bytes)
            if precision == "int8":
                if calibration is None:
                    raise UserError(f"{source}: int8 calibrates on a run's training images; pass a run directory")
                ov_model = quantize_int8(ov_model, calibration, quiet=True)
            forward = _openvino_forward(ov_model, precision, threads)
    return Runner(backend, precision, spec.input_nc, spec.output_nc, size_multiple_of(spec), _params(spec), source, forward, spec, how)


def _ov_from_onnx_bytes(onnx_bytes: bytes):
    import tempfile

    ov = require("openvino")
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "model.onnx"
        file.write_bytes(onnx_bytes)
        return ov.convert_model(str(file))


def _channels(shape, what: Path) -> int:
    dims = [d if isinstance(d, int) else None for d in shape]
    if len(dims) != 4 or dims[1] is None:
        raise UserError(f"{what}: not an image generator (input shape {shape}, expected N,C,H,W with fixed C)")
    return dims[1]


def _load_onnx(path: Path, backend: str, precision: str, device: str, threads: int | None) -> Runner:
    onnx = require("onnx")
    if not path.is_file():
        raise UserError(f"{path}: model not found")
    backend = "onnxruntime" if backend in ("torch", "compile") else backend  # an .onnx runs on ONNX Runtime by default
    _check_precision(backend, precision, device)
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # a truncated or foreign file
        raise UserError(f"{path}: not a readable ONNX model ({type(err).__name__})") from None
    spec = spec_from_metadata({p.key: p.value for p in proto.metadata_props}.get("dcdgan"))
    shape_in = [d.dim_value if d.HasField("dim_value") else None for d in proto.graph.input[0].type.tensor_type.shape.dim]
    shape_out = [d.dim_value if d.HasField("dim_value") else None for d in proto.graph.output[0].type.tensor_type.shape.dim]
    input_nc, output_nc = _channels(shape_in, path), _channels(shape_out, path)
    if backend == "onnxruntime":
        forward = _onnxruntime_forward(str(path), threads)
    else:
        ov = require("openvino")
        ov_model = ov.convert_model(str(path))
        if precision == "int8":
            raise UserError(f"{path}: int8 needs calibration data; export it with dcdgan export RUN --format openvino --precision int8")
        forward = _openvino_forward(ov_model, precision, threads)
    return Runner(backend, precision, input_nc, output_nc, size_multiple_of(spec), _params(spec), str(path), forward, spec)


def _load_openvino_xml(path: Path, backend: str, precision: str, device: str, threads: int | None) -> Runner:
    ov = require("openvino")
    if not path.is_file():
        raise UserError(f"{path}: model not found")
    if backend != "openvino" and backend not in ("torch",):
        raise UserError(f"{path}: an OpenVINO model runs on --backend openvino, not {backend}")
    backend = "openvino"
    try:
        ov_model = ov.Core().read_model(str(path))
    except RuntimeError as err:
        raise UserError(f"{path}: not a readable OpenVINO model ({str(err).splitlines()[0][:120]})") from None
    if is_int8(ov_model):
        precision = "int8"  # an NNCF export: its quantized ops decide
    elif precision == "int8":
        raise UserError(f"{path}: not quantized; export it with --precision int8 (NNCF calibration on the run's images)")
    _check_precision(backend, precision, device)
    raw = ov_model.get_rt_info(["dcdgan"]).astype(str) if ov_model.has_rt_info(["dcdgan"]) else None
    spec = spec_from_metadata(raw)
    shape_in, shape_out = ov_model.input(0).get_partial_shape(), ov_model.output(0).get_partial_shape()
    dims = lambda shape: [d.get_length() if d.is_static else None for d in shape]  # noqa: E731
    input_nc, output_nc = _channels(dims(shape_in), path), _channels(dims(shape_out), path)
    forward = _openvino_forward(ov_model, precision, threads)
    return Runner(backend, precision, input_nc, output_nc, size_multiple_of(spec), _params(spec), str(path), forward, spec)


def _load_pt2(path: Path, backend: str, precision: str, device: str, threads: int | None, runner: str = "auto") -> Runner:
    from dcdgan.cuda_runners import resolve_runner

    if not path.is_file():
        raise UserError(f"{path}: model not found")
    if backend not in ("torch", "compile"):
        raise UserError(f"{path}: a torch.export program runs on --backend torch or compile, not {backend}")
    _check_precision(backend, precision, device)
    how = resolve_runner(runner, backend, device)
    if precision != "fp32":
        raise UserError(f"{path}: a torch.export program runs fp32 here; for bf16/fp16 load the run directory or .safetensors")
    extra = {"dcdgan.json": ""}
    try:
        program = torch.export.load(str(path), extra_files=extra)
    except Exception as err:
        raise UserError(f"{path}: not a readable torch.export program ({type(err).__name__})") from None
    spec = spec_from_metadata(extra["dcdgan.json"])
    if spec is None:
        raise UserError(f"{path}: no dcdgan metadata inside; cannot tell its channels")
    forward = _torch_forward(program.module(), how, precision, device, threads)
    return Runner(backend, precision, spec.input_nc, spec.output_nc, size_multiple_of(spec), _params(spec), str(path), forward, spec, how)
