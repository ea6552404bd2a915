"""Stopping a run cleanly: Ctrl-C/SIGTERM on any process, and NaN/Inf loss terms.

Both are decided in one fused check per step (one device sync, one tiny all-reduce when several processes
run), so every process stops after the same step.
"""

from __future__ import annotations

import signal
import threading

import torch
from accelerate import Accelerator
from torch import Tensor
from tqdm.auto import tqdm

from dcdgan.errors import UserError


class StopRequest:
    """First Ctrl-C/SIGTERM: finish the current step, save, stop. A second Ctrl-C interrupts at once.

    A SIGTERM never interrupts at once: launchers relay one to every worker after a Ctrl-C (torchrun does), and
    that must not abort the checkpoint the first signal asked for.
    """

    def __init__(self, announce: bool = True) -> None:
        self.requested = False
        self.announce = announce
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.requested:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            return
        self.requested = True
        if self.announce:
            tqdm.write("stopping after this step and saving checkpoints/last.ckpt (press Ctrl-C again to abort at once)")

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class NonFiniteLoss(UserError):
    """A loss term became NaN/Inf: the run stops, keeping its last good checkpoint. Not bad input: its own exit code."""

    exit_code = 3


def check_step(accelerator: Accelerator, losses: dict[str, Tensor], stop_requested: bool) -> tuple[bool, list[str]]:
    """(stop now?, the non-finite loss terms), agreed by all processes: one stacked isfinite, one sync."""
    names = list(losses)
    flags = torch.tensor([float(stop_requested)], device=accelerator.device)
    if losses:
        bad = (~torch.isfinite(torch.stack([losses[n] for n in names]))).float()
        flags = torch.cat([bad, flags])
    if accelerator.num_processes > 1:
        flags = accelerator.reduce(flags, "sum")
    values = flags.tolist()
    return values[-1] > 0, [name for name, flag in zip(names, values) if flag > 0]
