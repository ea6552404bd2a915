"""Temporary network modes for a block: eval mode (no dropout, BatchNorm statistics) and frozen parameters."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from torch import nn


@contextmanager
def eval_mode(*nets: nn.Module | None) -> Iterator[None]:
    """Put networks in eval mode (BatchNorm statistics, no dropout) for the block, then restore their modes."""
    present = [n for n in nets if n is not None]
    modes = [n.training for n in present]
    for n in present:
        n.eval()
    try:
        yield
    finally:
        for n, mode in zip(present, modes):
            n.train(mode)


@contextmanager
def frozen(*nets: nn.Module | None) -> Iterator[None]:
    """No gradients reach these networks inside the block; each parameter's previous flag is restored after."""
    params = [p for n in nets if n is not None for p in n.parameters()]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
