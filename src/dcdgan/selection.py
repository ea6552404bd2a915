"""Model selection during training: which metric, the validation scores so far, the best student and teacher, and
the burst schedule's teacher snapshot (``Selector``, what the loop calls).

Scores are computed once, on the main process, and broadcast, so every process agrees on ``best`` and on the
burst schedule's teacher snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import functools

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list
from torch import nn

from dcdgan.assembly import Networks, teacher_spec
from dcdgan.config import Config, pretrained_teacher
from dcdgan.data import DataRoot
from dcdgan.deliverables import save_best_teacher
from dcdgan.evaluate import reference_stats, validation_score
from dcdgan.metrics.fid import ReferenceStats
from dcdgan.metrics.inception import FIDInception, inception_available, load_inception
from dcdgan.nets import build_generator
from dcdgan.runs import MetricsLog


def choose_metric(cfg: Config) -> str | None:
    """The validation metric: FID when its weights are at hand (or asked for), else L1 when a target exists. Takes the
    whole Config: it reads eval, data and distill."""
    metric = cfg.eval.metric
    if metric == "auto":
        metric = "fid" if inception_available(cfg.eval.inception) else "l1"
    if metric == "l1" and cfg.data.mode == "unpaired" and cfg.distill.method == "none":
        return None  # no ground truth and no teacher: nothing to compare against without FID
    return metric


@dataclass
class Selection:
    """Model-selection state: validation metric and the best scores so far (lower is better)."""

    metric: str | None  # "fid", "l1" or None when nothing can be measured
    best_score: float | None = None
    best_step: int | None = None
    teacher_best_score: float | None = None
    teacher_best_step: int | None = None
    history: list[dict] = field(default_factory=list)
    # Unpaired L1 with a teacher that trains: the fixed reference is the teacher of this step, copied once (its weights
    # are kept here, so a resumed run compares with the same reference)
    reference_step: int | None = None
    reference_weights: dict | None = None

    def state(self) -> dict:
        """Checkpoint form."""
        return dict(vars(self))

    def load(self, saved: dict) -> None:
        """Continue from a checkpoint's selection state (kept only when it was made with the same metric)."""
        if saved["metric"] == self.metric:
            for key, value in saved.items():
                setattr(self, key, value)

    def improves(self, score: float) -> bool:
        """Whether a student score beats the best so far."""
        return self.best_score is None or score < self.best_score

    def teacher_improves(self, score: float) -> bool:
        """Whether a teacher score beats the teacher's best so far."""
        return self.teacher_best_score is None or score < self.teacher_best_score


class Validator:
    """Scores a generator on the validation split: computed on the main process, the number broadcast to all. Takes
    the whole Config: it reads data, eval, model and distill."""

    def __init__(self, cfg: Config, data: DataRoot, accelerator: Accelerator, metric: str | None, run_dir, quiet: bool):
        self.cfg, self.data, self.accelerator, self.metric = cfg, data, accelerator, metric
        self.split = cfg.data.val_split
        self.unpaired = cfg.data.mode == "unpaired"
        self.frozen_teacher = pretrained_teacher(cfg.model, cfg.distill)
        self.fixed_teacher: nn.Module | None = None  # unpaired L1: the teacher copy the student is compared with
        self.inception: FIDInception | None = None
        self.reference: ReferenceStats | None = None
        if metric == "fid" and accelerator.is_main_process:  # the statistics, like every score, exist on rank 0 only
            self.inception = load_inception(cfg.eval.inception).to(accelerator.device)
            self.reference = reference_stats(run_dir, data, self.split, self.inception, cfg.eval.batch_size, cfg.eval.max_images, quiet)

    def teacher_metric(self) -> str | None:
        """The metric a teacher can be scored with (an unpaired teacher has no L1 target)."""
        return None if self.unpaired and self.metric == "l1" else self.metric

    def compares_with_teacher(self) -> bool:
        """Whether the student's score is its L1 to a teacher's outputs (unpaired data without FID: no target)."""
        return self.unpaired and self.metric == "l1"

    def score_student(self, student: nn.Module, teacher: nn.Module | None, selection: Selection, step: int) -> float:
        """The deliverable's score with the run's metric; unpaired L1 compares with a fixed teacher (``l1_reference``)."""
        return self._score(student, self.metric, self.l1_reference(teacher, selection, step) if self.compares_with_teacher() else None)

    def l1_reference(self, teacher: nn.Module, selection: Selection, step: int) -> nn.Module:
        """The teacher whose outputs unpaired L1 compares with, the same at every validation so that scores compare:
        a pretrained teacher (frozen), else a copy of the online teacher taken at the first validation."""
        if self.frozen_teacher:
            return teacher
        if selection.reference_weights is None:
            state = self.accelerator.unwrap_model(teacher, keep_torch_compile=False).state_dict()
            selection.reference_step, selection.reference_weights = step, {k: v.detach().cpu().clone() for k, v in state.items()}
        if self.fixed_teacher is None:
            self.fixed_teacher = build_generator(teacher_spec(self.cfg))
            self.fixed_teacher.load_state_dict(selection.reference_weights)
            self.fixed_teacher = self.fixed_teacher.to(self.accelerator.device).eval().requires_grad_(False)
        return self.fixed_teacher

    def describe_reference(self, selection: Selection) -> str:
        """What the student's score is measured against, for the deliverable's JSON."""
        if self.metric == "fid":
            return f"FID against the real target images of the {self.split} split"
        if not self.compares_with_teacher():
            return f"L1 to the real target images of the {self.split} split"
        if self.frozen_teacher:
            return "L1 to the outputs of the pretrained, frozen teacher"
        return f"L1 to the outputs of the teacher of step {selection.reference_step}, copied at the first validation and fixed since"

    def score_teacher(self, teacher: nn.Module) -> float:
        """The teacher's score with ``teacher_metric()`` (call only when it is not None)."""
        return self._score(teacher, self.teacher_metric(), None)

    def _score(self, gen: nn.Module, metric: str, l1_reference: nn.Module | None) -> float:
        """Lower-is-better score, computed on the main process and broadcast to every process."""
        result = [None]
        if self.accelerator.is_main_process:
            unwrap = functools.partial(self.accelerator.unwrap_model, keep_torch_compile=False)  # train.compile: the bare module
            reference = unwrap(l1_reference) if l1_reference is not None else None
            result[0] = validation_score(unwrap(gen), self.data, self.split, metric, self.accelerator.device, self.cfg.eval,
                                         self.inception, self.reference, teacher=reference)
        if self.accelerator.num_processes > 1:
            broadcast_object_list(result, from_process=0)
        return float(result[0])


def copy_into(target: nn.Module, source: nn.Module) -> None:
    """Load ``source``'s weights into ``target`` (the burst snapshot), without tracking gradients."""
    with torch.no_grad():
        target.load_state_dict(source.state_dict())


class Selector:
    """What the loop calls for model selection: scores the deliverable (and an online teacher) on validation, keeps
    the best scores, writes the best teacher, and picks the burst schedule's teacher snapshot. best.ckpt is the
    loop's to write (a checkpoint of the whole run), when ``validate`` says the student improved. Takes the whole
    Config: selection reads data, eval, model and distill, the best teacher's file the task too."""

    def __init__(self, cfg: Config, data: DataRoot, accelerator: Accelerator, run_dir, quiet: bool, metrics_log: MetricsLog):
        self.cfg, self.accelerator, self.run_dir, self.metrics_log = cfg, accelerator, run_dir, metrics_log
        self.selection = Selection(choose_metric(cfg))
        self.validator = Validator(cfg, data, accelerator, self.selection.metric, run_dir, quiet)

    def validate(self, step: int, nets: Networks) -> bool:
        """Score the deliverable (once, broadcast), logging the score; an online teacher of the interleaved schedule
        is scored first, so that the delivered teacher is its best on validation too. Returns whether the student
        is the best so far."""
        sel = self.selection
        if sel.metric is None:
            return False
        if self.scores_teacher_at_validation(nets):
            self.validate_teacher(step, nets.teacher)
        score = self.validator.score_student(nets.deliverable, nets.teacher, sel, step)
        sel.history.append({"step": step, f"val_{sel.metric}": score})
        self.metrics_log.write({"step": step, f"val/{sel.metric}": score})
        self.accelerator.log({f"val/{sel.metric}": score}, step=step)
        if not sel.improves(score):
            return False
        sel.best_score, sel.best_step = score, step
        return True

    def scores_teacher_at_validation(self, nets: Networks) -> bool:
        """Whether validation also scores the teacher: it trains online (a pretrained one never changes), the schedule
        is interleaved (burst scores it when a burst begins, see select_snapshot), and a teacher metric exists."""
        cfg = self.cfg
        return (cfg.eval.select_teacher and nets.teacher is not None and not pretrained_teacher(cfg.model, cfg.distill)
                and cfg.distill.schedule != "burst" and self.validator.teacher_metric() is not None)

    def validate_teacher(self, step: int, teacher: nn.Module) -> bool:
        """Score the teacher (once, broadcast); when it is the best so far, it becomes teacher.safetensors (with
        eval.select_teacher) and, for the burst schedule, the snapshot. Returns whether it is the best so far."""
        sel, metric = self.selection, self.validator.teacher_metric()
        score = self.validator.score_teacher(teacher)
        self.metrics_log.write({"step": step, f"val/teacher_{metric}": score})
        if not sel.teacher_improves(score):
            return False
        sel.teacher_best_score, sel.teacher_best_step = score, step
        if self.cfg.eval.select_teacher and self.accelerator.is_main_process:  # false: the snapshot may be chosen, the deliverable is the last
            save_best_teacher(self.run_dir, self.accelerator.unwrap_model(teacher, keep_torch_compile=False), self.cfg, step, metric, score)
        return True

    def select_snapshot(self, step: int, nets: Networks) -> None:
        """Burst schedule: the student's teacher becomes the best-on-validation (or latest) teacher so far."""
        if self.cfg.distill.teacher_snapshot == "latest" or self.validator.teacher_metric() is None or self.validate_teacher(step, nets.teacher):
            copy_into(nets.snapshot, self.accelerator.unwrap_model(nets.teacher, keep_torch_compile=False))

    def student_record(self) -> dict | None:
        """The selection record of the delivered student (student.json's ``selection``), or None when none ran."""
        sel = self.selection
        if sel.best_step is None:
            return None
        return {"metric": sel.metric, "score": sel.best_score, "split": self.cfg.data.val_split, "reference": self.validator.describe_reference(sel)}
