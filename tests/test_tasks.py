"""The task objects: their facts, exactly, and that no other module decides by comparing the task's name."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

import dcdgan
from dcdgan.config import Config, paper_defaults
from dcdgan.errors import UserError
from dcdgan.tasks import CYCLEGAN, PIX2PIX, TASKS, Task

PACKAGE = Path(dcdgan.__file__).parent


def test_each_task_states_its_facts():
    assert TASKS == {"pix2pix": PIX2PIX, "cyclegan": CYCLEGAN}
    assert dataclasses.asdict(PIX2PIX) == {
        "name": "pix2pix", "conditional_disc": True, "two_way": False, "pools_fakes": False, "needs_paired": True,
        "burst_schedule": False, "gan_mode": "hinge", "lambda_dcd": 1.0, "ndf": 128, "fid_vs_train_test": False,
    }
    assert dataclasses.asdict(CYCLEGAN) == {
        "name": "cyclegan", "conditional_disc": False, "two_way": True, "pools_fakes": True, "needs_paired": False,
        "burst_schedule": True, "gan_mode": "lsgan", "lambda_dcd": 0.1, "ndf": 64, "fid_vs_train_test": True,
    }
    with pytest.raises(dataclasses.FrozenInstanceError):
        PIX2PIX.ndf = 64  # type: ignore[misc]


def test_discriminator_channels_and_pool_size_follow_the_task():
    assert (PIX2PIX.disc_channels(1, 3), CYCLEGAN.disc_channels(1, 3)) == (4, 3)
    assert (PIX2PIX.pool_size(50), CYCLEGAN.pool_size(50), CYCLEGAN.pool_size(0)) == (0, 50, 0)


def test_the_config_accepts_exactly_the_task_names():
    choices = {f.name: f for f in dataclasses.fields(Config)}["task"].metadata["choices"]
    assert choices == ("pix2pix", "cyclegan")
    with pytest.raises(UserError, match="task: 'stargan' is not one of pix2pix, cyclegan"):
        paper_defaults(["task=stargan"])


def test_validation_asks_the_task():
    with pytest.raises(UserError, match=r"^task pix2pix needs paired data \(data.mode=paired\)$"):
        paper_defaults(["data.mode=unpaired", "data.root=builtin:shoes_unpaired"])
    with pytest.raises(UserError, match=r"^task cyclegan translates both ways, so data.input_nc must equal data.output_nc$"):
        paper_defaults(["task=cyclegan", "data.mode=unpaired", "data.root=builtin:shoes_unpaired", "data.input_nc=1"])
    with pytest.raises(UserError, match=r"^distill.schedule=burst is the CycleGAN reference schedule; use interleaved for pix2pix$"):
        paper_defaults(["distill.schedule=burst"])


def task_name_comparisons(source: str) -> list[int]:
    """Lines of ``source`` that compare something with a task's name (``cfg.task == "pix2pix"``, ``in ("cyclegan",)``)."""
    names = set(TASKS)
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            literals = [n.value for side in [node.left, *node.comparators] for n in ast.walk(side) if isinstance(n, ast.Constant)]
            if names & set(literals):
                lines.append(node.lineno)
    return lines


def test_the_scan_finds_a_comparison():
    assert task_name_comparisons('x = 1\nif cfg.task == "pix2pix":\n    pass\ny = t != "cyclegan"\nz = a in ("cyclegan",)\n') == [2, 4, 5]
    assert task_name_comparisons('TASKS = {"pix2pix": 1}\nname = "cyclegan"\n') == []


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"  # the user-facing benchmarks read the tasks too


def test_no_module_but_tasks_compares_the_task_name():
    files = [*PACKAGE.rglob("*.py"), *BENCHMARKS.rglob("*.py")]
    assert len(files) > len(list(PACKAGE.rglob("*.py")))  # the benchmarks were found, so they were scanned
    found = {file.name: lines for file in sorted(files) if file.name != "tasks.py" if (lines := task_name_comparisons(file.read_text()))}
    assert found == {}, f"ask TASKS[cfg.task] instead of comparing the name: {found}"


def test_a_task_is_plain_data():
    assert all(isinstance(task, Task) and TASKS[task.name] is task for task in TASKS.values())
