"""The plan: phases, learning rates, resume positions."""

from __future__ import annotations

import pytest

from dcdgan.config import load_config
from dcdgan.schedule import JOINT, STUDENT, TASK, build_plan, locate, lr_factor, phase_lr_factor, total_steps


def test_linear_policy_matches_pix2pix():
    # pix2pix: lr_l = 1 - max(0, epoch + 1 - n_epochs) / (n_epochs_decay + 1)
    assert [round(lr_factor(e, 2, 3), 4) for e in range(5)] == [1.0, 1.0, 0.75, 0.5, 0.25]


def test_interleaved_plan():
    cfg = load_config("quickstart", ["train.nepochs=2", "train.nepochs_decay=1", "train.batch_size=4"])
    plan = build_plan(cfg, train_size=10, student_size=0)
    assert [(p.kind, p.epoch, p.steps) for p in plan] == [(JOINT, 0, 3), (JOINT, 1, 3), (JOINT, 2, 3)]
    assert [phase_lr_factor(cfg, p) for p in plan] == [1.0, 1.0, 0.5]
    assert total_steps(plan) == 9 and locate(plan, 4) == (1, 1) and locate(plan, 9) == (3, 0)


def test_method_none_trains_task_networks_only():
    plan = build_plan(load_config("quickstart", ["distill.method=none", "train.nepochs=1", "train.nepochs_decay=0"]), 16, 0)
    assert [p.kind for p in plan] == [TASK]


def test_burst_plan_follows_the_reference():
    cfg = load_config("quickstart_unpaired", ["distill.schedule=burst", "distill.n_dis=2", "distill.burst_every=2", "train.nepochs=2", "train.nepochs_decay=1"])
    plan = build_plan(cfg, train_size=8, student_size=6)
    kinds = [p.kind for p in plan]
    # every 2 teacher epochs a burst of n_dis x burst_every = 4 student epochs; a final burst after the last teacher epoch
    assert kinds == [TASK, TASK] + [STUDENT] * 4 + [TASK] + [STUDENT] * 4
    student = [p for p in plan if p.kind == STUDENT]
    assert [p.epoch for p in student] == list(range(8)) and all(p.epochs == 8 and p.steps == 2 for p in student)
    assert [phase_lr_factor(cfg, p) for p in student] == pytest.approx([1, 1, 1, 1, 1, 0.75, 0.5, 0.25])
