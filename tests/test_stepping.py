"""The public step API the benchmarks time (dcdgan.stepping): a run set up as `dcdgan distill` sets it up, trained
one step per call; and the user-facing benchmarks use it rather than the loop's internals."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import torch

from conftest import REPO, TINY_RUN
from dcdgan.config import load_config
from dcdgan.stepping import Stepper


def test_each_call_trains_one_step_and_returns_its_losses(tmp_path):
    cfg = load_config("quickstart", [*TINY_RUN, "distill.method=dcd"])
    stepper = Stepper(cfg, tmp_path / "run")
    student = stepper._loop.nets.student
    before = [p.detach().clone() for p in student.parameters()]
    losses, seconds = stepper.step()
    assert stepper.steps == 1 and seconds > 0
    assert {"D", "S_dcd"} <= set(losses) and all(math.isfinite(v) for v in losses.values())
    assert any(not torch.equal(b, p) for b, p in zip(before, student.parameters()))  # the student was updated
    stepper.step()
    assert stepper.steps == 2
    assert not (tmp_path / "run" / "checkpoints").exists() or not any((tmp_path / "run" / "checkpoints").iterdir())


def test_user_facing_benchmarks_do_not_import_the_loop_internals():
    internals = {"dcdgan.distill", "dcdgan.steps", "dcdgan.schedule"}
    files = [*(REPO / "benchmarks").glob("*.py"), *(REPO / "benchmarks" / "device").glob("*.py")]  # experiments/ are one-offs
    assert any(f.name == "train_speed.py" for f in files)
    found = {}
    for file in files:
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module in internals:
                found.setdefault(Path(file).name, []).append(node.module)
    assert found == {}, f"benchmarks should use dcdgan.stepping: {found}"
