"""What a run delivers beside its checkpoints: student.safetensors and teacher.safetensors (and their _last
versions), each with a .json saying which step it is, why it was chosen, and against what it was scored."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from dcdgan.assembly import student_spec, teacher_spec
from dcdgan.checkpoint import load_checkpoint
from dcdgan.config import Config, DataConfig, pretrained_teacher
from dcdgan.nets import build_generator
from dcdgan.runs import best_checkpoint
from dcdgan.weights import save_generator

LAST = {"chosen": "last", "selection": None}


def deliverable_info(data: DataConfig, task: str, step: int, role: str) -> dict:
    """What the .json beside a delivered generator says about it."""
    return {"image_size": data.crop_size, "direction": data.direction, "input_range": [-1, 1], "step": step, "task": task, "role": role}


def save_best_teacher(run_dir: Path, teacher: nn.Module, cfg: Config, step: int, metric: str, score: float) -> None:
    """teacher.safetensors: the teacher of ``step``, its best so far on validation. Takes the whole Config: the
    teacher's architecture reads model, data and distill."""
    chosen = {"chosen": "best on validation", "selection": {"metric": metric, "score": score, "split": cfg.data.val_split}}
    save_generator(run_dir / "teacher.safetensors", teacher, teacher_spec(cfg), deliverable_info(cfg.data, cfg.task, step, "teacher") | chosen)


def write_deliverables(run_dir: Path, cfg: Config, step: int, deliverable: nn.Module, teacher: nn.Module | None, student_record: dict | None,
                       teacher_selected: bool) -> None:
    """student.safetensors: the best-on-validation student (from best.ckpt) when selection ran (``student_record``, what
    its .json says about the selection), else the last; student_last.safetensors: the last. The same for the teacher:
    its best was written when it was scored (``save_best_teacher``; ``teacher_selected``); unscored
    (eval.select_teacher=false, no metric), teacher.safetensors is the last teacher and says so; a pretrained teacher
    is delivered as loaded, "pretrained, frozen". Takes the whole Config: it reads model, data, distill, eval and the task."""
    save_generator(run_dir / "student_last.safetensors", deliverable, student_spec(cfg.model, cfg.data), deliverable_info(cfg.data, cfg.task, step, "student") | LAST)
    best_path = best_checkpoint(run_dir)
    if student_record is not None and best_path.is_file():
        best = load_checkpoint(best_path)
        student = build_generator(student_spec(cfg.model, cfg.data))
        student.load_state_dict(best["networks"]["student" if cfg.distill.method != "none" else "gen_ab"])
        chosen = {"chosen": "best on validation", "selection": student_record}
        save_generator(run_dir / "student.safetensors", student, student_spec(cfg.model, cfg.data), deliverable_info(cfg.data, cfg.task, best["step"], "student") | chosen)
    else:
        save_generator(run_dir / "student.safetensors", deliverable, student_spec(cfg.model, cfg.data), deliverable_info(cfg.data, cfg.task, step, "student") | LAST)
    if teacher is None:
        return
    info = deliverable_info(cfg.data, cfg.task, step, "teacher")
    save_generator(run_dir / "teacher_last.safetensors", teacher, teacher_spec(cfg), info | LAST)
    if pretrained_teacher(cfg.model, cfg.distill):  # never trained here, never scored: delivered as it was loaded
        frozen = {"chosen": "pretrained, frozen", "selection": None, "source": cfg.model.teacher_weights}
        save_generator(run_dir / "teacher.safetensors", teacher, teacher_spec(cfg), info | frozen)
    elif not cfg.eval.select_teacher or not teacher_selected or not (run_dir / "teacher.safetensors").is_file():
        save_generator(run_dir / "teacher.safetensors", teacher, teacher_spec(cfg), info | LAST)
