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
    assert [phase_lr_factor(cfg.train, p) for p in plan] == [1.0, 1.0, 0.5]
    assert total_steps(plan) == 9 and locate(plan, 4) == (1, 1) and locate(plan, 9) == (3, 0)


def test_method_none_trains_task_networks_only():
    plan = build_plan(load_config("quickstart", ["distill.method=none", "train.nepochs=1", "train.nepochs_decay=0"]), 16, 0)
    assert [p.kind for p in plan] == [TASK]


def test_burst_plan_follows_the_reference():
    cfg = load_config("quickstart_unpaired", ["distill.schedule=burst", "distill.burst_ratio=2", "distill.burst_every=2", "train.nepochs=2", "train.nepochs_decay=1"])
    plan = build_plan(cfg, train_size=8, student_size=6)
    kinds = [p.kind for p in plan]
    # every 2 teacher epochs a burst of burst_ratio x burst_every = 4 student epochs; a final burst after the last teacher epoch
    assert kinds == [TASK, TASK] + [STUDENT] * 4 + [TASK] + [STUDENT] * 4
    student = [p for p in plan if p.kind == STUDENT]
    assert [p.epoch for p in student] == list(range(8)) and all(p.epochs == 8 and p.steps == 2 for p in student)
    assert [phase_lr_factor(cfg.train, p) for p in student] == pytest.approx([1, 1, 1, 1, 1, 0.75, 0.5, 0.25])


def test_steps_count_the_batch_on_every_process():
    cfg = load_config("quickstart", ["train.nepochs=1", "train.nepochs_decay=0", "train.batch_size=4"])
    assert [p.steps for p in build_plan(cfg, train_size=17, student_size=0, processes=1)] == [5]  # ceil(17 / 4)
    assert [p.steps for p in build_plan(cfg, train_size=17, student_size=0, processes=2)] == [3]  # ceil(17 / 8)


def test_burst_plan_with_a_final_partial_burst():
    cfg = load_config("quickstart_unpaired", ["distill.schedule=burst", "distill.burst_ratio=1", "distill.burst_every=2", "train.nepochs=3",
                                              "train.nepochs_decay=0", "train.batch_size=2"])
    plan = build_plan(cfg, train_size=4, student_size=5)
    assert [(p.kind, p.index, p.epoch, p.epochs, p.steps) for p in plan] == [
        (TASK, 0, 0, 3, 2), (TASK, 1, 1, 3, 2), (STUDENT, 2, 0, 4, 3), (STUDENT, 3, 1, 4, 3), (TASK, 4, 2, 3, 2),
        (STUDENT, 5, 2, 4, 3), (STUDENT, 6, 3, 4, 3),
    ]
    assert total_steps(plan) == 3 * 2 + 4 * 3
    assert locate(plan, 0) == (0, 0) and locate(plan, 4) == (2, 0) and locate(plan, 6) == (2, 2) and locate(plan, 7) == (3, 0)
    assert locate(plan, total_steps(plan)) == (len(plan), 0) and locate(plan, 100) == (len(plan), 0)


def test_method_none_ignores_the_burst_schedule():
    cfg = load_config("quickstart_unpaired", ["distill.method=none", "distill.schedule=burst", "train.nepochs=2", "train.nepochs_decay=0"])
    assert [p.kind for p in build_plan(cfg, train_size=8, student_size=8)] == [TASK, TASK]


def test_phase_lr_rounds_the_constant_share():
    # 3 constant + 1 decay epochs over a phase kind with 6 epochs: round(6 * 3/4) = round(4.5) = 4 constant, 2 decaying
    cfg = load_config("quickstart", ["train.nepochs=3", "train.nepochs_decay=1"])
    from dcdgan.schedule import Phase

    factors = [phase_lr_factor(cfg.train, Phase(STUDENT, i, i, 6, 1)) for i in range(6)]
    assert factors == pytest.approx([1, 1, 1, 1, 1 - 1 / 3, 1 - 2 / 3])
    assert lr_factor(0, 0, 1) == pytest.approx(0.5) and lr_factor(3, 5, 2) == 1.0


def test_interleaved_phases_carry_their_index_and_epoch_count():
    cfg = load_config("quickstart", ["train.nepochs=2", "train.nepochs_decay=1"])
    assert [(p.index, p.epoch, p.epochs) for p in build_plan(cfg, train_size=10, student_size=0)] == [(0, 0, 3), (1, 1, 3), (2, 2, 3)]


def test_bursts_come_after_every_burst_every_teacher_epochs_counted_from_one():
    cfg = load_config("quickstart_unpaired", ["distill.schedule=burst", "distill.burst_ratio=1", "distill.burst_every=3", "train.nepochs=7",
                                              "train.nepochs_decay=0"])
    kinds = "".join("T" if p.kind == TASK else "S" for p in build_plan(cfg, train_size=8, student_size=8))
    assert kinds == "TTTSSSTTTSSSTSSS"  # after teacher epochs 3 and 6, and a final burst after the 7th


def test_a_pretrained_frozen_teacher_gets_no_teacher_epochs_whatever_the_schedule():
    """burst with a frozen teacher: no teacher to train between bursts, so every step trains the student (and D)."""
    cfg = load_config("quickstart_unpaired", ["distill.schedule=burst", "distill.burst_every=2", "train.nepochs=2", "train.nepochs_decay=1",
                                              "model.teacher_weights=teacher.safetensors"])
    plan = build_plan(cfg, train_size=8, student_size=6)
    assert [(p.kind, p.epoch, p.epochs, p.steps) for p in plan] == [(JOINT, 0, 3, 2), (JOINT, 1, 3, 2), (JOINT, 2, 3, 2)]
