"""Run a generator on one backend (torch only in this minimal version).

Interim copy written on the demo branch so that the demo runs before the deployment branch lands; it has
exactly the agreed interface and is replaced by the deployment helper's full implementation (onnxruntime,
OpenVINO, compile, precisions) at merge time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dcdgan.errors import UserError

BACKENDS = ("torch", "compile", "onnxruntime", "openvino")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
_SIZE_MULTIPLE = {"unet_256": 256, "unet_128": 128}  # resnets need multiples of 4 (two stride-2 downsamplings)


@dataclass
class Runner:
    """One loaded generator on one backend: float32 N,C,H,W in [-1, 1] in and out."""

    backend: str
    precision: str
    input_nc: int
    output_nc: int
    size_multiple: int
    params: int | None
    source: str
    net: nn.Module = field(repr=False)
    device: str = "cpu"

    @torch.no_grad()
    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Translate a batch."""
        x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).to(self.device)
        return self.net(x).float().cpu().numpy()

    def macs(self, height: int, width: int) -> int | None:
        """MACs of one forward pass on a height x width image (torchprofile convention)."""
        from dcdgan.metrics.profile import count_macs

        return count_macs(self.net, (1, self.input_nc, height, width))


def _generator_file(model: Path, which: str) -> Path:
    if model.is_dir():
        path = model / f"{which}.safetensors"
        if not path.is_file():
            raise UserError(f"{model}: no {which}.safetensors (is it a finished dcdgan run directory?)")
        return path
    if model.suffix != ".safetensors":
        raise UserError(f"{model}: this build reads run directories and generator .safetensors files only (torch backend)")
    return model


def load_runner(
    model: str | Path, backend: str = "torch", precision: str = "fp32", which: str = "student", device: str = "cpu", threads: int | None = None
) -> Runner:
    """MODEL: a run directory (student.safetensors, or teacher.safetensors with which="teacher") or a generator .safetensors (+ .json)."""
    from dcdgan.metrics.profile import count_params
    from dcdgan.weights import load_generator

    if backend not in BACKENDS:
        raise UserError(f"unknown backend {backend!r} (choose from {', '.join(BACKENDS)})")
    if backend != "torch" or precision != "fp32":
        raise UserError(f"backend {backend} / precision {precision}: only torch fp32 in this build (pip install \"dcdgan[deploy]\")")
    if which not in ("student", "teacher"):
        raise UserError(f"which={which!r}: choose student or teacher")
    if threads:
        torch.set_num_threads(threads)
    path = _generator_file(Path(model), which)
    net, description = load_generator(path)
    spec = description["spec"]
    return Runner(
        backend="torch",
        precision="fp32",
        input_nc=spec["input_nc"],
        output_nc=spec["output_nc"],
        size_multiple=_SIZE_MULTIPLE.get(spec["netG"], 4),
        params=count_params(net),
        source=str(path),
        net=net.to(device),
        device=device,
    )
