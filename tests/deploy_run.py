"""A tiny distilled run shared by the deployment tests (export, translate, eval of exports)."""

from __future__ import annotations

from pathlib import Path

from dcdgan.cli import main

TINY_RUN = [
    "model.teacher_ngf=8",
    "model.student_ngf=4",
    "model.ndf=8",
    "perceptual.weights=none",
    "eval.final=false",
    "eval.max_images=8",
    "train.max_steps=2",
    "train.sample_every=0",
    "train.checkpoint_every=0",
]


def tiny_run(folder: Path) -> Path:
    """Distill the quickstart for 2 steps with narrow nets (student ngf 4, teacher ngf 8, 1 channel, 32px)."""
    run_dir = folder / "run"
    assert main(["distill", "quickstart", *TINY_RUN, "--run-dir", str(run_dir), "--quiet"]) == 0
    return run_dir
