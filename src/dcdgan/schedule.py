"""The training plan: which kind of step runs at each global step, over which data pass, at which learning rate.

A plan is a list of phases (one data pass each). It is a pure function of the config and dataset sizes,
so a resumed run finds its place from the step counter alone and learning rates need no saved state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dcdgan.config import Config, TrainConfig, burst_plan

JOINT, TASK, STUDENT = "joint", "task", "student"


@dataclass(frozen=True)
class Phase:
    kind: str  # joint: task networks and student on the same batches; task: task networks only; student: student only
    index: int  # position in the plan; seeds the pass's data order
    epoch: int  # epoch number among phases of this kind (drives the learning rate)
    epochs: int  # phases of this kind in the plan
    steps: int


def lr_factor(epoch: int, constant: int, decay: int) -> float:
    """pix2pix 'linear' policy: 1 for ``constant`` epochs, then linearly towards 0 over ``decay`` epochs."""
    return 1.0 - max(0, epoch + 1 - constant) / float(decay + 1)


def build_plan(cfg: Config, train_size: int, student_size: int, processes: int = 1) -> list[Phase]:
    """Phases for the configured method and schedule; ``student_size`` is the burst schedule's A-image count.

    Burst applies only to a teacher that trains (``burst_plan``); otherwise every step is a joint (or, for
    method=none, a task) step.

    A step consumes ``batch_size`` items on each of ``processes`` data-parallel processes. Takes the whole Config:
    it reads train, distill and (whether the teacher is pretrained) model.
    """
    bs = cfg.train.batch_size * processes
    epochs = cfg.train.nepochs + cfg.train.nepochs_decay
    steps = math.ceil(train_size / bs)
    d = cfg.distill
    if not burst_plan(cfg.model, cfg.distill):  # a pretrained, frozen teacher: the student trains from the first step whatever the schedule
        kind = TASK if d.method == "none" else JOINT
        return [Phase(kind, e, e, epochs, steps) for e in range(epochs)]
    burst = d.burst_ratio * d.burst_every
    n_bursts = math.ceil(epochs / d.burst_every)
    student_steps = math.ceil(student_size / bs)
    plan: list[Phase] = []
    student_epoch = 0
    for e in range(epochs):
        plan.append(Phase(TASK, len(plan), e, epochs, steps))
        if (e + 1) % d.burst_every == 0 or e == epochs - 1:
            for _ in range(burst):
                plan.append(Phase(STUDENT, len(plan), student_epoch, n_bursts * burst, student_steps))
                student_epoch += 1
    return plan


def phase_lr_factor(train: TrainConfig, phase: Phase) -> float:
    """Learning-rate factor of a phase: the configured constant/decay split, scaled to the phase kind's epoch count."""
    total = train.nepochs + train.nepochs_decay
    constant = round(phase.epochs * train.nepochs / total)
    return lr_factor(phase.epoch, constant, phase.epochs - constant)


def locate(plan: list[Phase], step: int) -> tuple[int, int]:
    """(phase position, steps already done inside it) for a global step count."""
    for position, phase in enumerate(plan):
        if step < phase.steps:
            return position, step
        step -= phase.steps
    return len(plan), 0


def total_steps(plan: list[Phase]) -> int:
    """Steps in the whole plan."""
    return sum(p.steps for p in plan)
