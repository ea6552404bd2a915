"""Read intermediate activations of any ``nn.Module`` by module path (``model.9``), with forward hooks.

Hooks live on the unwrapped module and results are keyed by tap name, never by device, so they work
unchanged under DistributedDataParallel (the DCD reference keyed them by device and broke there).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import Tensor, nn

from dcdgan.errors import UserError


def resolve_taps(net: nn.Module, taps: list[str], what: str) -> dict[str, nn.Module]:
    """Map each module path to its submodule, or raise a one-line error listing nearby valid paths."""
    modules = dict(net.named_modules())
    missing = [t for t in taps if t not in modules]
    if missing:
        prefix = missing[0].rsplit(".", 1)[0] if "." in missing[0] else ""
        nearby = [n for n in modules if n and n.startswith(prefix)][:12] or [n for n in modules if n][:12]
        raise UserError(f"{what}: no module at {', '.join(missing)}; valid paths include {', '.join(nearby)}")
    return {t: modules[t] for t in taps}


@contextmanager
def capture(net: nn.Module, taps: list[str], what: str = "network") -> Iterator[dict[str, Tensor]]:
    """Within the block, every forward of ``net`` stores (copies of) the outputs of the tapped modules in the yielded dict."""
    features: dict[str, Tensor] = {}
    handles = []
    for tap, module in resolve_taps(net, taps, what).items():
        def hook(_module: nn.Module, _inputs: tuple, output: Tensor, tap: str = tap) -> None:
            # A copy: the next layer may be an in-place op (the U-Net parent's ReLU(inplace=True) rewrites a skip
            # block's output), and DCD must read the output as produced. clone() keeps the autograd graph.
            features[tap] = output.clone()

        handles.append(module.register_forward_hook(hook))
    try:
        yield features
    finally:
        for handle in handles:
            handle.remove()


def tap_channels(net: nn.Module, taps: list[str], input_shape: tuple[int, ...], what: str = "network") -> dict[str, int]:
    """Channel count of each tap, found by one forward pass on zeros (works for any architecture)."""
    param = next(net.parameters())
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad(), capture(net, taps, what) as feats:
            net(torch.zeros(input_shape, device=param.device))
    finally:
        net.train(was_training)
    return {t: feats[t].shape[1] for t in taps}


class _StopForward(Exception):
    pass


def forward_until(net: nn.Module, tap: str, x: Tensor, what: str = "network") -> Tensor:
    """Run ``net`` on ``x`` only as far as module ``tap`` and return that module's output.

    Stopping there skips the layers after the tap, which also lets a PatchGAN read inputs whose tap map
    is smaller than its last kernel.
    """
    module = resolve_taps(net, [tap], what)[tap]
    captured: list[Tensor] = []

    def hook(_module: nn.Module, _inputs: tuple, output: Tensor) -> None:
        captured.append(output)
        raise _StopForward

    handle = module.register_forward_hook(hook)
    try:
        net(x)
    except _StopForward:
        pass
    finally:
        handle.remove()
    if not captured:
        raise RuntimeError(f"{what}: module {tap} was not reached by forward()")
    return captured[0]
