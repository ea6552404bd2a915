"""Crash safety end to end: SIGTERM saves, SIGKILL loses nothing a checkpoint held, and resuming ends exactly where an
uninterrupted run ends.

Slow (three interpreter launches): run with ``python -m pytest -m slow``; .ci/run does.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dcdgan.checkpoint import load_checkpoint
from dcdgan.cli import main

pytestmark = pytest.mark.slow

STEPS = 24
ARGS = [
    "quickstart", "model.teacher_ngf=8", "model.student_ngf=4", "model.ndf=8", "model.teacher_dropout=0.5", "model.student_dropout=0.5", "perceptual.weights=none",
    "eval.final=false", "eval.max_images=8", "eval.every=0", "train.log_every=1", "train.sample_every=0",
    "train.checkpoint_every=1", f"train.max_steps={STEPS}",
]


def env(tmp_path: Path) -> dict:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "DCDGAN_VGG16": "", "TORCH_HOME": str(tmp_path / "torch")}


def logged_steps(run: Path) -> int:
    path = run / "metrics.jsonl"
    return path.read_text().count("\n") if path.exists() else 0


def start(tmp_path: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dcdgan", "distill", *args, "--quiet"], env=env(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_steps(proc: subprocess.Popen, run: Path, steps: int) -> None:
    deadline = time.time() + 600
    while time.time() < deadline and logged_steps(run) < steps and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be interrupted"


def test_sigterm_then_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path):
    run = tmp_path / "interrupted"
    proc = start(tmp_path, *ARGS, "--run-dir", str(run))
    wait_for_steps(proc, run, 3)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    termed = load_checkpoint(run / "checkpoints" / "last.ckpt")["step"]
    assert "stopped at step" in out and termed >= 3

    proc = start(tmp_path, "--resume", str(run))
    wait_for_steps(proc, run, termed + 3)
    proc.kill()  # SIGKILL: no handler runs, a checkpoint or metrics line may be half-written
    proc.wait(timeout=60)
    killed_at = load_checkpoint(run / "checkpoints" / "last.ckpt")["step"]
    assert termed < killed_at < STEPS

    assert main(["distill", "--resume", str(run), "--quiet"]) == 0
    straight = tmp_path / "straight"
    assert main(["distill", *ARGS, "--run-dir", str(straight), "--quiet"]) == 0

    a = load_checkpoint(straight / "checkpoints" / "last.ckpt")
    b = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert a["step"] == b["step"] == STEPS
    for net, state in a["networks"].items():
        for key, value in state.items():
            assert torch.equal(value, b["networks"][net][key]), f"{net}.{key}"
    losses = lambda r: [json.loads(line) for line in (r / "metrics.jsonl").read_text().splitlines() if "phase" in line]  # noqa: E731
    assert losses(run) == losses(straight)
    kept = sorted(p.name for p in (run / "checkpoints").glob("last*.ckpt"))
    assert kept == ["last.1.ckpt", "last.2.ckpt", "last.ckpt"] and not list((run / "checkpoints").glob(".*.tmp"))
