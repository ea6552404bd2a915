"""``dcdgan.stepping`` for code trees from before it existed (``code_ab.py`` copies it into such a tree's copy).

Before commit ada53ab there was no Stepper, and before 612c9be ``distill.setup`` returned the run itself (with its
``batches`` and ``updater``) rather than a run holding a ``loop``. This backport gives ``train_speed.py``'s worker the
same one-step API over either, so the trees' steps are timed by the same harness.
"""

from __future__ import annotations

import time
from pathlib import Path

from dcdgan.distill import setup, train_step


class Stepper:
    """One run's training steps, one call each (as ``dcdgan.stepping.Stepper``)."""

    def __init__(self, cfg, run_dir: Path):
        run = setup(cfg, Path(run_dir), resume=False, quiet=True)
        self._loop = getattr(run, "loop", run)  # the run itself before the Run/Loop split
        self.steps = 0

    def step(self) -> tuple[dict[str, float], float]:
        """Train one step: its losses, and its seconds without fetching the batch."""
        phase, _, batch = next(self._loop.batches)
        start = time.perf_counter()
        losses = train_step(self._loop, phase, self.steps, batch)
        self._loop.updater.applied()
        values = {name: float(value) for name, value in losses.items()}
        elapsed = time.perf_counter() - start
        self.steps += 1
        return values, elapsed
