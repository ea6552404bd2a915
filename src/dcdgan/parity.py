"""How an export is checked against PyTorch: random inputs at the parity sizes, PyTorch's fp32 outputs, the largest
difference (refused above ``PARITY_TOLERANCE``), and PSNR for the lower precisions. Shared by every exporter
(``export``, ``mobile_export``, ``web``), below all of them.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from dcdgan.conversion import size_multiple_of
from dcdgan.nets.generators import GeneratorSpec

PARITY_TOLERANCE = 1e-4


def parity_inputs(spec: GeneratorSpec, sizes: tuple[int, ...], seed: int = 0) -> list[np.ndarray]:
    """Random batches of 2 at each size (square, and one with W one step wider, so H != W is covered)."""
    m = size_multiple_of(spec)
    rng = np.random.default_rng(seed)
    shapes = [(s, s) for s in sizes] + [(sizes[0], sizes[0] + m)]
    return [rng.uniform(-1, 1, (2, spec.input_nc, h, w)).astype(np.float32) for h, w in shapes]


@torch.no_grad()
def torch_outputs(net: nn.Module, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """PyTorch fp32 outputs of ``net`` for each input batch."""
    net.eval()
    return [net(torch.from_numpy(x)).numpy() for x in inputs]


def max_abs_difference(runner, inputs: list[np.ndarray], expected: list[np.ndarray]) -> float:
    """Largest |runner(x) - expected| over all inputs."""
    return max(float(np.abs(runner(x) - y).max()) for x, y in zip(inputs, expected))


def psnr_against(runner, inputs: list[np.ndarray], reference: list[np.ndarray]) -> float:
    """Mean per-image PSNR (dB, uint8 images) of the runner's outputs against reference outputs."""
    from dcdgan.metrics.paired import psnr_ssim, to_uint8

    values = []
    for x, y in zip(inputs, reference):
        values.append(psnr_ssim(to_uint8(torch.from_numpy(runner(x))), to_uint8(torch.from_numpy(y)))[0])
    return float(torch.cat(values).clamp(max=100).mean())  # identical images (inf dB) count as 100 dB
