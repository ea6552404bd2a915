"""What a loaded generator is to translate, eval, bench and the demo, whatever runs it: ``Runner``.

Below the backends (PyTorch, ONNX Runtime, OpenVINO in ``backends``; the phone runtimes in ``mobile``), so that each
of them builds Runners without importing the others.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable

import numpy as np

from dcdgan.errors import UserError
from dcdgan.nets.generators import GeneratorSpec, build_generator


@dataclass
class Runner:
    """One loaded generator on one backend."""

    backend: str  # the backend actually used
    precision: str
    input_nc: int
    output_nc: int
    size_multiple: int  # H and W must be multiples of this
    params: int | None  # None when unknown (e.g. a bare .onnx with no dcdgan metadata)
    source: str  # the file it came from
    forward: Callable[[np.ndarray], np.ndarray] = field(repr=False, default=None)
    spec: GeneratorSpec | None = field(repr=False, default=None)
    runner: str | None = None  # how PyTorch calls the net (eager, cuda-graph, compile); None on ONNX Runtime / OpenVINO

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """float32 N,C,H,W in [-1, 1] -> float32 N,C,H,W in [-1, 1]."""
        images = np.ascontiguousarray(images, dtype=np.float32)
        if images.ndim != 4 or images.shape[1] != self.input_nc:
            raise UserError(f"{self.source}: expects N,{self.input_nc},H,W images, got shape {images.shape}")
        return np.asarray(self.forward(images), dtype=np.float32)

    def macs(self, height: int, width: int) -> int | None:
        """MACs of one image (torchprofile convention), or None when the architecture is unknown."""
        return None if self.spec is None else _macs(self.spec, height, width)


@lru_cache(maxsize=32)
def _macs(spec: GeneratorSpec, height: int, width: int) -> int:
    from dcdgan.metrics.profile import count_macs

    return count_macs(build_generator(spec), (1, spec.input_nc, height, width))


def spec_from_metadata(raw: str | None) -> GeneratorSpec | None:
    """The GeneratorSpec an export embedded (dcdgan description JSON), or None."""
    if not raw:
        return None
    try:
        return GeneratorSpec(**json.loads(raw)["spec"])
    except (ValueError, KeyError, TypeError):
        return None


def _params(spec: GeneratorSpec | None) -> int | None:
    from dcdgan.metrics.profile import count_params

    return None if spec is None else count_params(build_generator(spec))
