"""Phone formats: ExecuTorch (.pte, XNNPACK delegate), LiteRT (.tflite, through litert-torch) and Core ML (.mlpackage).

ExecuTorch takes the generator's inference form through ``torch.export`` with batch 1 and dynamic height and
width (multiples of the net's stride, at most ``MAX_SIDE``): it plans its memory for the largest shape when a
program loads, so the bound is what a phone pays in RAM. LiteRT takes one fixed size (``litert_bytes`` says
why). The runners (``executorch`` runtime,
``ai-edge-litert`` interpreter) run a batch one image at a time. The generator's description travels beside the
file as ``<file>.json`` (the formats' own metadata slots are not read back by their Python runtimes alike).

Core ML converts on Linux but predicts only on macOS; here it is checked structurally (``coreml_structure``).
int8 (post-training, calibrated on the run's training images) exists for ExecuTorch and LiteRT, each for one
image size: ``executorch_int8_bytes`` (XNNPACK's pt2e quantizer, a static-shape program: the dynamic-shape one
fails at run time) and ``litert_int8_bytes`` (ai-edge-quantizer's static-range recipe on the fp32 .tflite; the
pt2e route inside litert-torch fails). benchmarks/RESULTS.md has what failed and what int8 costs.
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
from dcdgan.nets.inference import inference_form, litert_form, row_mean_norms
from dcdgan.runner import Runner, _params, spec_from_metadata

MOBILE_EXTRA = 'pip install "dcdgan[mobile]"'
MAX_SIDE = 512  # largest height/width a phone export accepts (ExecuTorch plans memory for it)
INT8_CALIBRATION_IMAGES = 32  # training images int8 calibrates on (the int8 tries of benchmarks/RESULTS.md used 32)
# Lowest PSNR (dB, uint8 images, against PyTorch fp32 on validation images) an int8 phone export may reach. Measured
# on the tests' 2-step student (32 px, 100 validation images): ExecuTorch 38.6 dB, LiteRT 33.7 dB; below 30 dB the
# quantization has gone wrong (a range that clips, a layer calibrated on the wrong data), not merely rounded.
INT8_MIN_PSNR = 30.0


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
    """The generator as an ExecuTorch program lowered to XNNPACK, fp32, with dynamic H/W (int8:
    ``executorch_int8_bytes``, one size). Instance norms as ``RowMeanInstanceNorm``: ExecuTorch's own instance norm
    kernel missed PyTorch by 1.5e-2 at 256 px (its docstring says why)."""
    exir = require_mobile("executorch.exir")
    partitioner = require_mobile("executorch.backends.xnnpack.partition.xnnpack_partitioner")
    program = _mobile_program(row_mean_norms(inference_form(net)), spec)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            lowered = exir.to_edge_transform_and_lower(program, partitioner=[partitioner.XnnpackPartitioner()])
            return lowered.to_executorch().buffer
    except Exception as err:
        raise UserError(f"ExecuTorch lowering failed for {spec.netG}: {str(err).splitlines()[0][:200]}") from None


def executorch_int8_bytes(net: nn.Module, spec: GeneratorSpec, calibration: list[np.ndarray]) -> bytes:
    """The generator as an int8 ExecuTorch program for 1 x C x H x W images of the calibration images' size: XNNPACK's
    pt2e quantizer (symmetric, per-channel weights, static activation ranges from ``calibration``), lowered to
    XNNPACK. Static: lowered with dynamic H/W (up to MAX_SIDE), the int8 program fails at its first run in a view
    outside the delegate sized for the bound ("et_view.cpp:102 Check failed (self.numel() == out.numel())")."""
    exir = require_mobile("executorch.exir")
    partitioner = require_mobile("executorch.backends.xnnpack.partition.xnnpack_partitioner")
    quantizer = require_mobile("executorch.backends.xnnpack.quantizer.xnnpack_quantizer")
    pt2e = require_mobile("torchao.quantization.pt2e.quantize_pt2e")
    example = (torch.zeros(calibration[0].shape),)  # not an image: its strides could become the program's dim order
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            module = torch.export.export(inference_form(net), example).module()
            config = quantizer.get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False)
            module = pt2e.prepare_pt2e(module, quantizer.XNNPACKQuantizer().set_global(config))
            with torch.no_grad():
                for x in calibration:
                    module(torch.from_numpy(x))
            program = torch.export.export(pt2e.convert_pt2e(module), example)
            lowered = exir.to_edge_transform_and_lower(program, partitioner=[partitioner.XnnpackPartitioner()])
            return lowered.to_executorch().buffer
    except Exception as err:
        raise UserError(f"ExecuTorch int8 conversion failed for {spec.netG}: {str(err).splitlines()[0][:200]}") from None


def litert_bytes(net: nn.Module, spec: GeneratorSpec, side: int = 64) -> bytes:
    """The generator as a LiteRT flatbuffer for 1 x C x side x side images (litert-torch, transposed convolutions
    cropped), fp32. Static: with dynamic H/W, litert-torch 0.10.0 fails on the ``arange`` of the reflection pads'
    indices ("'<=' not supported between instances of 'int' and 'Node'", in its int64->int32 rewrite), so a
    .tflite takes one image size. int8: ``litert_int8_bytes``."""
    litert_torch = require_mobile("litert_torch")
    example = (torch.randn(1, spec.input_nc, side, side),)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            edge = litert_torch.convert(litert_form(net), example)
        return edge.model_content()
    except Exception as err:
        raise UserError(f"LiteRT conversion failed for {spec.netG}: {str(err).splitlines()[0][:200]}") from None


def litert_int8_bytes(fp32: bytes, calibration: list[np.ndarray]) -> bytes:
    """A static-range int8 LiteRT model (int8 weights and activations, int8 input and output with their scales)
    from an fp32 one, by ai-edge-quantizer's ``static_wi8_ai8`` recipe calibrated on ``calibration``. litert-torch's
    own pt2e route fails on this net ("'stablehlo.uniform_dequantize' op operand #0 must be ranked tensor of
    per-tensor in[teger quantized values]", benchmarks/RESULTS.md)."""
    aeq = require_mobile("ai_edge_quantizer.quantizer")
    recipe = require_mobile("ai_edge_quantizer.recipe")
    interpreter_module = require_mobile("ai_edge_litert.interpreter")
    (signature, io_names), = interpreter_module.Interpreter(model_content=fp32).get_signature_list().items()
    try:  # progress bars (stderr) are not news; the quantizer's report (stdout) neither
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            quantizer = aeq.Quantizer(bytearray(fp32), recipe.static_wi8_ai8())
            ranges = quantizer.calibrate({signature: [{io_names["inputs"][0]: x} for x in calibration]}, num_threads=1)
            return bytes(quantizer.quantize(ranges, enable_progress_bar=False, enable_progress_report=False).quantized_model)
    except Exception as err:
        raise UserError(f"LiteRT int8 quantization failed: {str(err).splitlines()[0][:200]}") from None


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


def _description_beside(path: Path) -> tuple[GeneratorSpec | None, dict]:
    """The generator spec and the whole description (precision, an int8 program's size) written beside a phone export."""
    file = description_file(path)
    if not file.is_file():
        return None, {}
    raw = file.read_text()
    try:
        description = json.loads(raw)
    except ValueError:
        description = None
    return spec_from_metadata(raw), description if isinstance(description, dict) else {}


def _one_at_a_time(run_one: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    def forward(images: np.ndarray) -> np.ndarray:
        return np.concatenate([run_one(images[i : i + 1]) for i in range(len(images))])

    return forward


def _check_side(path: Path, images: np.ndarray, max_side: int) -> None:
    if max(images.shape[2:]) > max_side:
        raise UserError(f"{path}: exported for images up to {max_side}x{max_side}, got {images.shape[2]}x{images.shape[3]}")


def _check_request(path: Path, precision: str, backend: str, own_backend: str, why: str) -> tuple[GeneratorSpec | None, str]:
    """The refusals both phone runners share (fp32 or int8 only, the file must exist, only their own runtime runs
    it); returns the spec and the precision the file was exported at, which it runs at (as an OpenVINO int8 model)."""
    if precision not in ("fp32", "int8"):
        raise UserError(f"{path}: phone exports run fp32 or int8 (as exported); for {precision} use --backend openvino")
    if not path.is_file():
        raise UserError(f"{path}: model not found")
    if backend not in ("torch", own_backend):
        raise UserError(f"{path}: {why}, not --backend {backend}")
    spec, description = _description_beside(path)
    exported = description.get("precision", "fp32")
    if precision == "int8" and exported != "int8":
        raise UserError(f"{path}: not quantized; export it with --precision int8 (calibrated on the run's training images)")
    return spec, exported


def load_pte(path: Path, backend: str, precision: str, threads: int | None):
    """A Runner for an ExecuTorch program, on the executorch runtime (XNNPACK delegate)."""

    runtime = require_mobile("executorch.runtime")
    spec, precision = _check_request(path, precision, backend, "executorch", "an ExecuTorch program runs on its own runtime")
    if threads:
        from executorch.extension.pybindings import portable_lib

        portable_lib._unsafe_reset_threadpool(threads)
    try:
        method = runtime.Runtime.get().load_program(str(path)).load_method("forward")
    except Exception as err:
        raise UserError(f"{path}: not a loadable ExecuTorch program ({type(err).__name__})") from None
    meta = method.metadata
    in_shape, out_shape = list(meta.input_tensor_meta(0).sizes()), list(meta.output_tensor_meta(0).sizes())
    static = precision == "int8"  # an int8 program is lowered for one size (executorch_int8_bytes says why)

    def run_one(x: np.ndarray) -> np.ndarray:
        if static and list(x.shape) != in_shape:
            raise UserError(f"{path}: an int8 ExecuTorch program takes {in_shape[2]}x{in_shape[3]} images, got {x.shape[2]}x{x.shape[3]} (export again with --size)")
        _check_side(path, x, MAX_SIDE)
        # a fresh C-order copy: an image's strides over its size-1 dims can read as another dim order, which the
        # portable kernels outside the delegate refuse ("2 input tensors have different dim orders")
        return method.execute([torch.from_numpy(x.copy(order="C"))])[0].numpy()

    return Runner("executorch", precision, in_shape[1], out_shape[1], size_multiple_of(spec), _params(spec), str(path), _one_at_a_time(run_one), spec)


def load_tflite(path: Path, backend: str, precision: str, threads: int | None):
    """A Runner for a LiteRT flatbuffer, on the ai-edge-litert interpreter (one image per call, at the export's size)."""

    interpreter_module = require_mobile("ai_edge_litert.interpreter")
    spec, precision = _check_request(path, precision, backend, "litert", "a LiteRT model runs on its own interpreter")
    try:
        interpreter = interpreter_module.Interpreter(model_path=str(path), num_threads=threads or None)
    except (ValueError, RuntimeError) as err:
        raise UserError(f"{path}: not a loadable LiteRT model ({str(err).splitlines()[0][:120]})") from None
    inp, outp = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    fixed = tuple(int(d) for d in inp["shape"])
    interpreter.allocate_tensors()

    def run_one(x: np.ndarray) -> np.ndarray:
        if x.shape[1:] != fixed[1:]:
            raise UserError(f"{path}: a LiteRT export takes {fixed[2]}x{fixed[3]} images, got {x.shape[2]}x{x.shape[3]} (export again with --size)")
        interpreter.set_tensor(inp["index"], _to_tensor(x, inp))
        interpreter.invoke()
        return _from_tensor(interpreter.get_tensor(outp["index"]), outp)

    channels = lambda s: int(s[1])  # noqa: E731  NCHW: litert-torch keeps PyTorch's layout at the model's edge
    return Runner(
        "litert", precision, channels(inp["shape_signature"]), channels(outp["shape_signature"]), size_multiple_of(spec), _params(spec), str(path),
        _one_at_a_time(run_one), spec,
    )


def _to_tensor(x: np.ndarray, detail: dict) -> np.ndarray:
    """Float32 input as the interpreter's input tensor: as is, or int8 by its scale and zero point (a static int8 model)."""
    if detail["dtype"] != np.int8:
        return x
    scale, zero = detail["quantization"]
    return np.clip(np.round(x / scale) + zero, -128, 127).astype(np.int8)


def _from_tensor(y: np.ndarray, detail: dict) -> np.ndarray:
    """The interpreter's output tensor as float32 (an int8 one through its scale and zero point)."""
    if detail["dtype"] != np.int8:
        return y.copy()
    scale, zero = detail["quantization"]
    return (y.astype(np.float32) - zero) * np.float32(scale)
