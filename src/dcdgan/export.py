"""Export a generator to ONNX, OpenVINO IR or a torch.export program, with a parity check and lower precisions.

Every export has dynamic batch, height and width (H and W in steps of the net's stride multiple), carries the
generator's spec in its metadata (so translate/bench know channels, params and MACs), and is checked against
PyTorch on random input and on real images of the run: the max abs difference is printed and an fp32 export
that differs by more than 1e-4 fails. Lower precisions print their cost: PSNR of their outputs against fp32
on the validation images (disjoint from the training images int8 calibrates on).
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

from dcdgan.backends import load_runner, load_torch_source
from dcdgan.checkpoint import atomic_write
from dcdgan.conversion import (
    description_json,
    example_and_dims,
    onnx_model_bytes,
    openvino_model,
    quantize_int8,
    require,
    run_images,
    size_multiple_of,
)
from dcdgan.errors import UserError
from dcdgan.nets.generators import GeneratorSpec
from dcdgan.nets.inference import inference_form
from dcdgan.parity import PARITY_TOLERANCE, max_abs_difference, parity_inputs, psnr_against, torch_outputs  # noqa: F401  (export.PARITY_TOLERANCE is public)

FORMATS = ("onnx", "openvino", "pt2", "executorch", "litert", "coreml")
SUFFIXES = {"onnx": ".onnx", "openvino": ".xml", "pt2": ".pt2", "executorch": ".pte", "litert": ".tflite", "coreml": ".mlpackage"}
FORMAT_PRECISIONS = {
    "onnx": ("fp32",), "openvino": ("fp32", "fp16", "bf16", "int8"), "pt2": ("fp32",),
    "executorch": ("fp32", "int8"), "litert": ("fp32", "int8"), "coreml": ("fp32",),  # phone int8: see dcdgan.mobile
}
RUNNER_BACKEND = {"onnx": "onnxruntime", "openvino": "openvino", "pt2": "torch", "executorch": "executorch", "litert": "litert"}
PHONE_FORMATS = ("executorch", "litert")  # converted by dcdgan.mobile and run by their own runtimes
PRECISION_COST_IMAGES = 100


def torch_program(net: nn.Module, spec: GeneratorSpec) -> torch.export.ExportedProgram:
    """torch.export of the generator's inference form (eval mode), with dynamic batch/H/W."""
    example, dims = example_and_dims(spec)
    try:
        return torch.export.export(inference_form(net), (example,), dynamic_shapes=dims)
    except Exception as err:  # the exporter's messages are long; keep the first line
        raise UserError(f"torch.export failed for {spec.netG}: {str(err).splitlines()[0][:200]}") from None


# ---------------------------------------------------------------- checks


# ---------------------------------------------------------------- writing


def _write_onnx(onnx_bytes: bytes, out: Path) -> None:
    atomic_write(out, lambda tmp: tmp.write_bytes(onnx_bytes))


def _write_openvino(model, out: Path, precision: str) -> None:
    """model.xml + model.bin, written to a temporary folder first and then moved into place."""
    ov = require("openvino")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.stem}."))
    try:
        ov.save_model(model, str(tmp / out.name), compress_to_fp16=precision == "fp16")  # default would store fp16 weights
        os.replace(tmp / out.with_suffix(".bin").name, out.with_suffix(".bin"))
        os.replace(tmp / out.name, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_pt2(program, spec: GeneratorSpec, out: Path) -> None:
    buffer = io.BytesIO()  # torch.export.save warns about a path not ending in .pt2, such as atomic_write's temporary name
    torch.export.save(program, buffer, extra_files={"dcdgan.json": description_json(spec)})
    atomic_write(out, lambda tmp: tmp.write_bytes(buffer.getvalue()))


def export_model(
    model: str | Path, fmt: str, out: str | Path, precision: str = "fp32", which: str = "student", sizes: tuple[int, ...] = (), quiet: bool = False
) -> dict:
    """Export, check against PyTorch, write ``out``; returns {'out', 'max_abs_diff', 'psnr_vs_fp32' (lower precisions)}."""
    if fmt not in FORMATS:
        raise UserError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if precision not in FORMAT_PRECISIONS[fmt]:
        raise UserError(f"--format {fmt} exports {', '.join(FORMAT_PRECISIONS[fmt])}; for {precision} use --format openvino")
    out = Path(out)
    if out.suffix != SUFFIXES[fmt]:
        raise UserError(f"{out}: a {fmt} export must end in {SUFFIXES[fmt]}")
    if fmt in PHONE_FORMATS or fmt == "coreml":
        from dcdgan.mobile_export import export_phone

        return export_phone(model, fmt, out, precision, which, sizes, quiet)
    say = (lambda *a: None) if quiet else print
    src = load_torch_source(model, which)
    spec, net = src.spec, src.net.eval()
    images = run_images(src, "val", max_images=16)
    if not sizes:
        base = images[0].shape[-1] if images else 64
        m = size_multiple_of(spec)
        sizes = (max(m, -(-base // m) * m), max(m, -(-base // m) * m) + 2 * m)
    random_inputs = parity_inputs(spec, sizes)
    real_inputs = images or []
    if images is None:
        say(f"note: {src.path} is not inside a run directory; parity is checked on random input only")

    # The fp32 graph: exported, written to a temporary file, checked against PyTorch.
    with tempfile.TemporaryDirectory() as tmp:
        fp32_file = Path(tmp) / f"model{SUFFIXES[fmt]}"
        if fmt == "pt2":
            program = torch_program(net, spec)
            _write_pt2(program, spec, fp32_file)
        else:
            onnx_bytes = onnx_model_bytes(net, spec)
            if fmt == "onnx":
                _write_onnx(onnx_bytes, fp32_file)
            else:
                _write_openvino(openvino_model(onnx_bytes, spec), fp32_file, "fp32")
        fp32 = load_runner(fp32_file, backend=RUNNER_BACKEND[fmt], precision="fp32")
        result = {"out": str(out), "format": fmt, "precision": precision, "source": str(src.path)}
        for label, inputs in (("random", random_inputs), ("real", real_inputs)):
            if not inputs:
                continue
            diff = max_abs_difference(fp32, inputs, torch_outputs(net, inputs))
            shapes = ", ".join(sorted({f"{x.shape[2]}x{x.shape[3]}" for x in inputs}))
            say(f"parity fp32 {fmt} vs PyTorch, {label} input ({len(inputs)} batches, {shapes}): max abs diff {diff:.2e}")
            result[f"max_abs_diff_{label}"] = diff
            if diff > PARITY_TOLERANCE:
                raise UserError(f"{out}: {fmt} export differs from PyTorch by {diff:.2e} on {label} input (> {PARITY_TOLERANCE:g}); not written")
        result["max_abs_diff"] = max(v for k, v in result.items() if k.startswith("max_abs_diff_"))
        if precision == "fp32":
            _move_export(fp32_file, out)
            say(f"wrote {out}")
            return result

        # Lower precision (OpenVINO): the cost is PSNR against the fp32 outputs on validation images.
        model_lp = openvino_model(onnx_bytes, spec, precision)
        if precision == "int8":
            model_lp = quantize_int8(model_lp, src, quiet=quiet)
        _write_openvino(model_lp, out, precision)
    low = load_runner(out, backend="openvino", precision=precision)
    check = run_images(src, "val", max_images=PRECISION_COST_IMAGES) or random_inputs
    reference = torch_outputs(net, check)
    result["psnr_vs_fp32"] = psnr_against(low, check, reference)
    result["max_abs_diff_vs_fp32"] = max_abs_difference(low, check, reference)
    on = f"{len(check)} validation images" if real_inputs else f"{len(check)} random batches (no run data)"
    say(f"{precision} cost: PSNR {result['psnr_vs_fp32']:.2f} dB against fp32 on {on} (max abs diff {result['max_abs_diff_vs_fp32']:.3f})")
    say(f"wrote {out} (+ {out.with_suffix('.bin').name})")
    return result


def _move_export(file: Path, out: Path) -> None:
    """Move a checked export (and an OpenVINO .bin beside it) from the temporary folder to ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if file.suffix == ".xml":
        shutil.move(str(file.with_suffix(".bin")), out.with_suffix(".bin"))
    shutil.move(str(file), out)
