"""Converting a PyTorch generator for the deployment runtimes: ONNX bytes, an OpenVINO model, int8 quantization.

The pieces both ``backends`` (running a model) and ``export`` (writing one) need, so that neither imports the
other: what a MODEL argument resolves to (``TorchSource``), the optional-package guard, the ONNX graph, and the
run's own images that int8 calibrates on.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dcdgan.errors import UserError
from dcdgan.nets.generators import GeneratorSpec
from dcdgan.nets.inference import inference_form
from dcdgan.weights import FORMAT

DEPLOY_EXTRA = 'pip install "dcdgan[deploy]"'
CALIBRATION_IMAGES = 300  # NNCF's default subset size


def size_multiple_of(spec: GeneratorSpec | None) -> int:
    """What H and W must be multiples of: 2**(stride-2 levels); unknown nets get 4 (the ResNet generators)."""
    if spec is None:
        return 4
    return {"unet_256": 256, "unet_128": 128}.get(spec.netG, 4)


def require(module: str):
    """Import an optional backend package, or raise a one-line UserError naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"{module} is not installed; {DEPLOY_EXTRA}") from None


@dataclass
class TorchSource:
    """A generator rebuilt in PyTorch from a run directory, checkpoint or .safetensors file."""

    net: nn.Module
    spec: GeneratorSpec
    path: Path  # the weights file
    run_dir: Path | None  # the run it belongs to (its config and data), when known


def run_dir_of(path: Path) -> Path | None:
    """The run directory a weights file or checkpoint sits in (the folder holding config.yaml), if any."""
    for folder in (path, path.parent, path.parent.parent):
        if folder.is_dir() and (folder / "config.yaml").is_file():
            return folder
    return None


def description_json(spec: GeneratorSpec, precision: str = "fp32") -> str:
    """What an export carries about itself: the dcdgan generator description plus its precision."""
    return json.dumps({"format": FORMAT, "spec": spec.to_dict(), "precision": precision})


def example_and_dims(spec: GeneratorSpec) -> tuple[torch.Tensor, dict]:
    """An example batch and dynamic shapes: batch free, H and W any multiple of the stride (at least 2 steps)."""
    m = size_multiple_of(spec)
    steps = 16 if m == 4 else 2  # a U-Net example of 2 steps (512px); ResNets 64px
    Dim = torch.export.Dim
    dims = {0: Dim("batch", min=1, max=4096), 2: m * Dim("h_steps", min=2, max=4096), 3: m * Dim("w_steps", min=2, max=4096)}
    return torch.randn(2, spec.input_nc, m * steps, m * steps), {"x": dims}


def onnx_model_bytes(net: nn.Module, spec: GeneratorSpec, precision: str = "fp32") -> bytes:
    """The generator's inference form as a serialized ONNX model (opset 18, dynamic batch/H/W, input 'input',
    output 'output')."""
    onnx = require("onnx")
    require("onnxscript")  # torch's exporter builds the graph with it
    example, dims = example_and_dims(spec)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the exporter prints its progress; keep --json output clean
            program = torch.onnx.export(
                inference_form(net), (example,), dynamo=True, dynamic_shapes=dims, input_names=["input"], output_names=["output"], verbose=False
            )
    except Exception as err:
        raise UserError(f"ONNX export failed for {spec.netG}: {str(err).splitlines()[0][:200]}") from None
    proto = program.model_proto
    onnx.helper.set_model_props(proto, {"dcdgan": description_json(spec, precision)})
    return proto.SerializeToString()


def openvino_model(onnx_bytes: bytes, spec: GeneratorSpec, precision: str = "fp32"):
    """An OpenVINO model converted from the ONNX graph, carrying the dcdgan description in its rt_info."""
    ov = require("openvino")
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "model.onnx"
        file.write_bytes(onnx_bytes)
        model = ov.convert_model(str(file))
    model.set_rt_info(description_json(spec, precision), ["dcdgan"])
    return model


# ---------------------------------------------------------------- the run's images


def run_images(src: TorchSource, role: str, max_images: int = CALIBRATION_IMAGES) -> list[np.ndarray] | None:
    """Unaugmented inputs (1,C,H,W float32 each) of the run a model belongs to: its ``train`` split (int8
    calibration) or its ``val`` split (parity on real images, precision cost); None when there is no run."""
    if src.run_dir is None:
        return None
    from dcdgan.config import load_config
    from dcdgan.data import DataRoot
    from dcdgan.scan import read_skip_list

    cfg = load_config(str(src.run_dir / "config.yaml"))
    data = DataRoot(cfg.data, exclude=read_skip_list(src.run_dir))  # the files the run skipped as bad
    dataset = data.eval_inputs(cfg.data.train_split if role == "train" else cfg.data.val_split)
    return [dataset[i]["A"].unsqueeze(0).numpy() for i in range(min(max_images, len(dataset)))]


def quantize_int8(ov_model, src: TorchSource, quiet: bool = False):
    """NNCF post-training int8 quantization of an OpenVINO model, calibrated on the run's training images."""
    nncf = require("nncf")
    images = run_images(src, "train")
    if images is None:
        raise UserError(f"{src.path}: int8 calibrates on the run's training images; pass the run directory (or a file inside it)")
    if not quiet:
        print(f"int8: NNCF calibration on {len(images)} training images of {src.run_dir}")
    return nncf.quantize(ov_model, nncf.Dataset(images), subset_size=len(images))
