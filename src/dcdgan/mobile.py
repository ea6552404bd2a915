"""Phone formats: ExecuTorch (.pte, XNNPACK delegate), LiteRT (.tflite, through litert-torch) and Core ML (.mlpackage).

ExecuTorch takes the generator's inference form through ``torch.export`` with batch 1 and dynamic height and
width (multiples of the net's stride, at most ``MAX_SIDE``): it plans its memory for the largest shape when a
program loads, so the bound is what a phone pays in RAM. LiteRT takes one fixed size (``litert_bytes`` says
why). The runners (``executorch`` runtime,
``ai-edge-litert`` interpreter) run a batch one image at a time. The generator's description travels beside the
file as ``<file>.json`` (the formats' own metadata slots are not read back by their Python runtimes alike).

Core ML converts on Linux but predicts only on macOS; here it is checked structurally (``coreml_structure``).
Both export fp32 only; int8 failed in each converter (``executorch_bytes``, ``litert_bytes`` and
benchmarks/RESULTS.md say how).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import logging
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from dcdgan.conversion import size_multiple_of
from dcdgan.errors import UserError
from dcdgan.nets.generators import GeneratorSpec
from dcdgan.nets.inference import inference_form, litert_form
from dcdgan.runner import Runner, _params, spec_from_metadata

MOBILE_EXTRA = 'pip install "dcdgan[mobile]"'
MAX_SIDE = 512  # largest height/width a phone export accepts (ExecuTorch plans memory for it)


def require_mobile(module: str):
    """Import a phone-format package, or raise a one-line UserError naming the extra to install."""
    # coremltools logs a warning per macOS-only native library it cannot load on Linux: expected here, not news
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"{module.split('.')[0]} is not installed; {MOBILE_EXTRA}") from None


def description_file(model: Path) -> Path:
    """Where a phone export's dcdgan description sits: ``student.pte`` -> ``student.pte.json``."""
    return model.with_name(model.name + ".json")


def _mobile_program(net: nn.Module, spec: GeneratorSpec, max_side: int = MAX_SIDE) -> torch.export.ExportedProgram:
    """torch.export of ``net`` (already in its deployment form) at batch 1 with dynamic H and W up to ``max_side``."""
    dims = {"x": program_dynamic_shapes(spec, max_side)[0]}
    try:
        return torch.export.export(net, mobile_example(spec), dynamic_shapes=dims)
    except Exception as err:
        raise UserError(f"torch.export failed for {spec.netG}: {str(err).splitlines()[0][:200]}") from None


def executorch_bytes(net: nn.Module, spec: GeneratorSpec) -> bytes:
    """The generator as an ExecuTorch program lowered to XNNPACK, fp32. No int8 yet: XNNPACK's pt2e quantizer
    converts and lowers, but the dynamic-shape program fails at run time (benchmarks/RESULTS.md)."""
    exir = require_mobile("executorch.exir")
    partitioner = require_mobile("executorch.backends.xnnpack.partition.xnnpack_partitioner")
    program = _mobile_program(inference_form(net), spec)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            lowered = exir.to_edge_transform_and_lower(program, partitioner=[partitioner.XnnpackPartitioner()])
            return lowered.to_executorch().buffer
    except Exception as err:
        raise UserError(f"ExecuTorch lowering failed for {spec.netG}: {str(err).splitlines()[0][:200]}") from None


def litert_bytes(net: nn.Module, spec: GeneratorSpec, side: int = 64) -> bytes:
    """The generator as a LiteRT flatbuffer for 1 x C x side x side images (litert-torch, transposed convolutions
    cropped), fp32. Static: with dynamic H/W, litert-torch 0.10.0 fails on the ``arange`` of the reflection pads'
    indices ("'<=' not supported between instances of 'int' and 'Node'", in its int64->int32 rewrite), so a
    .tflite takes one image size. No int8: litert-torch 0.10.0's pt2e path fails on this net's convolutions, per
    channel and per tensor ("'stablehlo.uniform_dequantize' op operand #0 must be ranked tensor of per-tensor
    in[teger quantized values]", benchmarks/RESULTS.md)."""
    litert_torch = require_mobile("litert_torch")
    example = (torch.randn(1, spec.input_nc, side, side),)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            edge = litert_torch.convert(litert_form(net), example)
        return edge.model_content()
    except Exception as err:
        raise UserError(f"LiteRT conversion failed for {spec.netG}: {str(err).splitlines()[0][:200]}") from None


def mobile_example(spec: GeneratorSpec) -> tuple[torch.Tensor]:
    """The example input phone exports trace with: one image of 64px (a U-Net: its stride multiple)."""

    m = size_multiple_of(spec)
    side = m * max(1, 64 // m)
    return (torch.randn(1, spec.input_nc, side, side),)


def program_dynamic_shapes(spec: GeneratorSpec, max_side: int = MAX_SIDE) -> tuple:
    """The dynamic H/W of ``_mobile_program`` as a positional spec (what litert-torch takes)."""

    m = size_multiple_of(spec)
    Dim = torch.export.Dim
    low = 2 if m == 4 else 1
    return ({2: m * Dim("h_steps", min=low, max=max_side // m), 3: m * Dim("w_steps", min=low, max=max_side // m)},)


def coreml_package(net: nn.Module, spec: GeneratorSpec, out: Path) -> None:
    """Convert to a Core ML ML Program (.mlpackage, fp32 compute) from torch.export; runs only on Apple hardware."""
    ct = require_mobile("coremltools")
    program = _mobile_program(inference_form(net), spec).run_decompositions({})
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            model = ct.convert(
                program, convert_to="mlprogram", compute_precision=ct.precision.FLOAT32, minimum_deployment_target=ct.target.iOS17
            )
    except Exception as err:
        raise UserError(f"Core ML conversion failed for {spec.netG}: {str(err).splitlines()[0][:200]}") from None
    model.user_defined_metadata["dcdgan"] = json.dumps({"spec": spec.to_dict()})
    model.save(str(out))


def coreml_structure(package: Path) -> dict:
    """What can be checked of a .mlpackage without Apple hardware: input/output names and shapes, op counts by type."""
    ct = require_mobile("coremltools")
    model = ct.models.MLModel(str(package), skip_model_load=True)
    spec = model.get_spec()
    ops: dict[str, int] = {}
    produced: dict[str, list] = {}  # tensor name -> shape given by the op that produces it

    def count(block) -> None:
        for op in block.operations:
            ops[op.type] = ops.get(op.type, 0) + 1
            for value in op.outputs:
                dims = value.type.tensorType.dimensions
                produced[value.name] = [d.constant.size if d.HasField("constant") else "?" for d in dims]
            for inner in op.blocks:
                count(inner)

    for function in spec.mlProgram.functions.values():
        for block in function.block_specializations.values():
            count(block)

    def shape(feature) -> list:
        array = feature.type.multiArrayType
        ranges = array.shapeRange.sizeRanges
        if ranges:
            return [r.lowerBound if r.lowerBound == r.upperBound else f"{r.lowerBound}..{r.upperBound}" for r in ranges]
        return list(array.shape) or produced.get(feature.name, [])  # an output's shape: from the op that makes it

    return {
        "inputs": {f.name: shape(f) for f in spec.description.input},
        "outputs": {f.name: shape(f) for f in spec.description.output},
        "ops": ops,
        "metadata": dict(spec.description.metadata.userDefined),
    }


# ---------------------------------------------------------------- runners


def _spec_beside(path: Path) -> GeneratorSpec | None:

    file = description_file(path)
    return spec_from_metadata(file.read_text()) if file.is_file() else None


def _one_at_a_time(run_one: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    def forward(images: np.ndarray) -> np.ndarray:
        return np.concatenate([run_one(images[i : i + 1]) for i in range(len(images))])

    return forward


def _check_side(path: Path, images: np.ndarray, max_side: int) -> None:
    if max(images.shape[2:]) > max_side:
        raise UserError(f"{path}: exported for images up to {max_side}x{max_side}, got {images.shape[2]}x{images.shape[3]}")


def _fp32_only(path: Path, precision: str) -> None:
    if precision != "fp32":
        raise UserError(f"{path}: phone exports run fp32 (their int8 conversions fail, benchmarks/RESULTS.md); for {precision} use --backend openvino")


def _check_request(path: Path, precision: str, backend: str, own_backend: str, why: str) -> None:
    """The refusals both phone runners share: fp32 only, the file must exist, and only their own runtime runs it."""
    _fp32_only(path, precision)
    if not path.is_file():
        raise UserError(f"{path}: model not found")
    if backend not in ("torch", own_backend):
        raise UserError(f"{path}: {why}, not --backend {backend}")


def load_pte(path: Path, backend: str, precision: str, threads: int | None):
    """A Runner for an ExecuTorch program, on the executorch runtime (XNNPACK delegate)."""

    runtime = require_mobile("executorch.runtime")
    _check_request(path, precision, backend, "executorch", "an ExecuTorch program runs on its own runtime")
    if threads:
        from executorch.extension.pybindings import portable_lib

        portable_lib._unsafe_reset_threadpool(threads)
    try:
        method = runtime.Runtime.get().load_program(str(path)).load_method("forward")
    except Exception as err:
        raise UserError(f"{path}: not a loadable ExecuTorch program ({type(err).__name__})") from None
    spec = _spec_beside(path)
    meta = method.metadata
    in_shape, out_shape = list(meta.input_tensor_meta(0).sizes()), list(meta.output_tensor_meta(0).sizes())

    def run_one(x: np.ndarray) -> np.ndarray:
        _check_side(path, x, MAX_SIDE)
        return method.execute([torch.from_numpy(x)])[0].numpy()

    return Runner("executorch", precision, in_shape[1], out_shape[1], size_multiple_of(spec), _params(spec), str(path), _one_at_a_time(run_one), spec)


def load_tflite(path: Path, backend: str, precision: str, threads: int | None):
    """A Runner for a LiteRT flatbuffer, on the ai-edge-litert interpreter (one image per call, at the export's size)."""

    interpreter_module = require_mobile("ai_edge_litert.interpreter")
    _check_request(path, precision, backend, "litert", "a LiteRT model runs on its own interpreter")
    try:
        interpreter = interpreter_module.Interpreter(model_path=str(path), num_threads=threads or None)
    except (ValueError, RuntimeError) as err:
        raise UserError(f"{path}: not a loadable LiteRT model ({str(err).splitlines()[0][:120]})") from None
    spec = _spec_beside(path)
    inp, outp = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    fixed = tuple(int(d) for d in inp["shape"])
    interpreter.allocate_tensors()

    def run_one(x: np.ndarray) -> np.ndarray:
        if x.shape[1:] != fixed[1:]:
            raise UserError(f"{path}: a LiteRT export takes {fixed[2]}x{fixed[3]} images, got {x.shape[2]}x{x.shape[3]} (export again with --size)")
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        return interpreter.get_tensor(outp["index"]).copy()

    channels = lambda s: int(s[1])  # noqa: E731  NCHW: litert-torch keeps PyTorch's layout at the model's edge
    return Runner(
        "litert", precision, channels(inp["shape_signature"]), channels(outp["shape_signature"]), size_multiple_of(spec), _params(spec), str(path),
        _one_at_a_time(run_one), spec,
    )
