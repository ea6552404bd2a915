"""A tiny distilled run shared by the deployment tests (export, translate, eval of exports)."""

from __future__ import annotations

from pathlib import Path

from conftest import TINY_RUN as SHARED_TINY_RUN

from dcdgan.cli import main

TINY_RUN = [*SHARED_TINY_RUN, "train.max_steps=2"]


def tiny_run(folder: Path) -> Path:
    """Distill the quickstart for 2 steps with narrow nets (student ngf 4, teacher ngf 8, 1 channel, 32px)."""
    run_dir = folder / "run"
    assert main(["distill", "quickstart", *TINY_RUN, "--run-dir", str(run_dir), "--quiet"]) == 0
    return run_dir
