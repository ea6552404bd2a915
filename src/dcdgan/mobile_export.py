"""dcdgan export --format executorch | litert | coreml: convert, check against PyTorch, write.

ExecuTorch and LiteRT exports are run by their own runtimes on random input at two sizes (and H != W) and on the
run's validation images; the max abs difference is printed and an export over ``parity.PARITY_TOLERANCE`` is
refused (nothing written). ``--precision int8`` (ExecuTorch, LiteRT; one image size) calibrates on the run's
training images and is checked like OpenVINO int8, by its PSNR against PyTorch fp32 on the run's validation images,
refused below ``mobile.INT8_MIN_PSNR`` (a LiteRT int8 model is quantized from the fp32 .tflite, whose parity is
checked first). Core ML is fp32 and cannot run off Apple hardware, so its package is checked
structurally: one input and one output with the generator's channels and dynamic H/W, and as many convolutions
as the network has.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from torch import nn

from dcdgan import mobile, parity
from dcdgan.backends import load_runner, load_torch_source
from dcdgan.checkpoint import atomic_write
from dcdgan.conversion import description_json, run_images, size_multiple_of
from dcdgan.errors import UserError

PRECISION_COST_IMAGES = 100  # validation images int8's PSNR is measured on (as export.PRECISION_COST_IMAGES)
PHONE_SUFFIXES = {"executorch": ".pte", "litert": ".tflite", "coreml": ".mlpackage"}  # as export.SUFFIXES

def _default_sizes(spec, images) -> tuple[int, int]:
    m = size_multiple_of(spec)
    base = images[0].shape[-1] if images else 64
    first = max(m, -(-base // m) * m)
    return first, min(mobile.MAX_SIDE, first + 2 * m)


def _write_with_description(data: bytes, out: Path, description: str) -> None:
    atomic_write(mobile.description_file(out), lambda tmp: tmp.write_text(description))
    atomic_write(out, lambda tmp: tmp.write_bytes(data))


def export_phone(model, fmt: str, out: Path, precision: str, which: str, sizes: tuple[int, ...], quiet: bool) -> dict:
    """Export to a phone format, check it, write ``out`` (+ ``out.json``); returns the same fields as ``export_model``."""
    say = (lambda *a: None) if quiet else print
    mobile.require_mobile({"executorch": "executorch", "litert": "litert_torch", "coreml": "coremltools"}[fmt])
    src = load_torch_source(model, which)
    spec, net = src.spec, src.net.eval()
    images = run_images(src, "val", max_images=16)
    sizes = sizes or _default_sizes(spec, images)
    if max(sizes) + size_multiple_of(spec) > mobile.MAX_SIDE:
        raise UserError(f"parity sizes {sizes}: phone exports take images up to {mobile.MAX_SIDE}px")
    if images is None:
        say(f"note: {src.path} is not inside a run directory; parity is checked on random input only")
    result = {"out": str(out), "format": fmt, "precision": precision, "source": str(src.path)}
    if fmt == "coreml":
        return _export_coreml(net, src.spec, out, result, say)

    random_inputs = parity.parity_inputs(spec, sizes)
    real_inputs = images or []
    description = description_json(spec, "fp32")
    data = None
    if fmt == "litert" or precision == "int8":  # one fixed image size (see mobile.litert_bytes, executorch_int8_bytes)
        side = sizes[0]
        random_inputs = [x for x in random_inputs if x.shape[2:] == (side, side)]
        real_inputs = [x for x in real_inputs if x.shape[2:] == (side, side)]
        if images and not real_inputs:
            say(f"note: the run's validation images are not {side}x{side}; parity is checked on random input only")
        description = json.dumps({**json.loads(description_json(spec, precision)), "size": side})
        result["size"] = side
    if precision == "int8":  # before any conversion: a refusal should not wait for one
        calibration = _int8_images(src, "train", side, mobile.INT8_CALIBRATION_IMAGES)
        check = _int8_images(src, "val", side, PRECISION_COST_IMAGES)
    if fmt == "litert":
        say(f"litert: a static 1x{spec.input_nc}x{side}x{side} model (litert-torch 0.10 cannot convert this net with dynamic H/W)")
        data = mobile.litert_bytes(net, spec, side)
    elif precision == "fp32":
        data = mobile.executorch_bytes(net, spec)
    if data is not None:  # the fp32 conversion (LiteRT int8 quantizes it), checked against PyTorch
        _check_candidate(data, fmt, description_json(spec, "fp32"), lambda runner: _check_parity(runner, net, random_inputs, real_inputs, fmt, out, result, say))
    if precision == "int8":
        say(f"int8: calibration on {len(calibration)} training images of {src.run_dir}")
        data = mobile.litert_int8_bytes(data, calibration) if fmt == "litert" else mobile.executorch_int8_bytes(net, spec, calibration)
        _check_candidate(data, fmt, description, lambda runner: _check_int8_cost(runner, net, check, fmt, out, result, say))
    _write_with_description(data, out, description)
    result["bytes"] = len(data)
    say(f"wrote {out} ({len(data) / 1e3:.0f} kB) + {mobile.description_file(out).name}")
    return result


def _check_candidate(data: bytes, fmt: str, description: str, check) -> None:
    """Write ``data`` to a temporary file, load it on the format's runtime, run ``check(runner)`` on it."""
    with tempfile.TemporaryDirectory() as tmp:
        candidate = Path(tmp) / f"model{PHONE_SUFFIXES[fmt]}"
        _write_with_description(data, candidate, description)
        check(load_runner(candidate, backend=fmt))


def _int8_images(src, role: str, side: int, count: int) -> list:
    """The run's ``train`` (calibration) or ``val`` (cost) images at the int8 export's one size; UserError without them."""
    images = run_images(src, role, max_images=count)
    if images is None:
        raise UserError(f"{src.path}: int8 calibrates on the run's training images; pass the run directory (or a file inside it)")
    fitting = [x for x in images if x.shape[2:] == (side, side)]
    if not images:
        raise UserError(f"{src.path}: the run has no {role} images for int8")
    if not fitting:
        h, w = images[0].shape[2:]
        raise UserError(f"{src.path}: an int8 phone export takes the run's image size; its {role} images are {h}x{w}, not {side}x{side} (--size {h})")
    return fitting


def _check_int8_cost(runner, net: nn.Module, check: list, fmt: str, out: Path, result: dict, say) -> None:
    """PSNR (and max abs diff) of the int8 model against PyTorch fp32 on validation images; a UserError under the bound."""
    reference = parity.torch_outputs(net, check)
    result["psnr_vs_fp32"] = parity.psnr_against(runner, check, reference)
    result["max_abs_diff_vs_fp32"] = parity.max_abs_difference(runner, check, reference)
    say(f"int8 cost: PSNR {result['psnr_vs_fp32']:.2f} dB against fp32 on {len(check)} validation images (max abs diff {result['max_abs_diff_vs_fp32']:.3f})")
    if result["psnr_vs_fp32"] < mobile.INT8_MIN_PSNR:
        raise UserError(
            f"{out}: int8 {fmt} export reaches PSNR {result['psnr_vs_fp32']:.2f} dB against fp32 on validation images "
            f"(< {mobile.INT8_MIN_PSNR:g} dB); not written"
        )


def _check_parity(runner, net: nn.Module, random_inputs, real_inputs, fmt: str, out: Path, result: dict, say) -> None:
    """Max abs difference against PyTorch on random and real input; a UserError over the tolerance."""
    for label, inputs in (("random", random_inputs), ("real", real_inputs)):
        if not inputs:
            continue
        diff = parity.max_abs_difference(runner, inputs, parity.torch_outputs(net, inputs))
        shapes = ", ".join(sorted({f"{x.shape[2]}x{x.shape[3]}" for x in inputs}))
        say(f"parity fp32 {fmt} vs PyTorch, {label} input ({len(inputs)} batches, {shapes}): max abs diff {diff:.2e}")
        result[f"max_abs_diff_{label}"] = diff
        if diff > parity.PARITY_TOLERANCE:
            raise UserError(f"{out}: {fmt} export differs from PyTorch by {diff:.2e} on {label} input (> {parity.PARITY_TOLERANCE:g}); not written")
    result["max_abs_diff"] = max(v for k, v in result.items() if k.startswith("max_abs_diff_") and k != "max_abs_diff_vs_fp32")


def coreml_expected_convs(net: nn.Module) -> int:
    """Convolutions (plain and transposed) of the network (its inference form has as many: the split head is one)."""
    return sum(isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) for m in net.modules())


def _export_coreml(net: nn.Module, spec, out: Path, result: dict, say) -> dict:
    """Convert to .mlpackage in a temporary folder, check its structure, move it into place."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.stem}."))
    try:
        package = tmp / out.name
        mobile.coreml_package(net, spec, package)
        structure = mobile.coreml_structure(package)
        problems = []
        (in_name, in_shape), = structure["inputs"].items() if len(structure["inputs"]) == 1 else [(None, None)]
        (out_name, out_shape), = structure["outputs"].items() if len(structure["outputs"]) == 1 else [(None, None)]
        if in_shape is None or len(in_shape) != 4 or in_shape[1] != spec.input_nc or isinstance(in_shape[2], int):
            problems.append(f"input {structure['inputs']} (expected one 1x{spec.input_nc}xHxW with dynamic H, W)")
        if out_shape is None or len(out_shape) != 4 or out_shape[1] != spec.output_nc:
            problems.append(f"output {structure['outputs']} (expected one 1x{spec.output_nc}xHxW)")
        convs = structure["ops"].get("conv", 0) + structure["ops"].get("conv_transpose", 0)
        if convs != coreml_expected_convs(net):
            problems.append(f"{convs} convolutions (the network has {coreml_expected_convs(net)})")
        if problems:
            raise UserError(f"{out}: Core ML package fails its structural check: {'; '.join(problems)}; not written")
        if out.exists():
            shutil.rmtree(out) if out.is_dir() else out.unlink()
        os.replace(package, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    total = sum(structure["ops"].values())
    say(f"Core ML structure: input {in_name} {in_shape}, output {out_name} {out_shape}, {total} ops ({convs} convolutions); "
        "prediction needs macOS, so no parity here")
    result.update(inputs=structure["inputs"], outputs=structure["outputs"], ops=structure["ops"], op_count=total, convolutions=convs)
    say(f"wrote {out}")
    return result
