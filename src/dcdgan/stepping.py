"""A configured run trained one step at a time, set up exactly as ``dcdgan distill`` sets it up.

The small public API that the benchmarks time (``benchmarks/train_speed.py``, ``benchmarks/device/step_rate.py``),
so that they do not reach into the loop's internals: no validation, samples or checkpoints happen here.
"""

from __future__ import annotations

import time
from pathlib import Path

from dcdgan.config import Config
from dcdgan.distill import setup, train_step


class Stepper:
    """One run's training steps, one call each."""

    def __init__(self, cfg: Config, run_dir: Path):
        self._loop = setup(cfg, Path(run_dir), resume=False, quiet=True).loop
        self.steps = 0

    def step(self) -> tuple[dict[str, float], float]:
        """Train one step: its losses, and the seconds it took without fetching its batch (reading the losses is
        included, as a log step reads them, so the work is done even where the device runs asynchronously)."""
        phase, _, batch = next(self._loop.batches)
        start = time.perf_counter()
        losses = train_step(self._loop, phase, self.steps, batch)
        self._loop.updater.applied()
        values = {name: float(value) for name, value in losses.items()}
        elapsed = time.perf_counter() - start
        self.steps += 1
        return values, elapsed
