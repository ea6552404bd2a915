"""Model selection: which step best.ckpt holds, which teacher the burst schedule's student learns from, and the
validation scores themselves (recomputed here from the image files)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from conftest import TINY_RUN, read_images

from dcdgan.checkpoint import load_checkpoint
from dcdgan.cli import main
from dcdgan.weights import load_generator


def distill(run_dir: Path, recipe: str, *overrides: str) -> Path:
    assert main(["distill", recipe, *TINY_RUN, *overrides, "--run-dir", str(run_dir), "--quiet"]) == 0
    return run_dir


def resume(run_dir: Path, *overrides: str) -> None:
    assert main(["distill", "--resume", str(run_dir), *overrides, "--quiet"]) == 0


def records(run_dir: Path, key: str) -> list[tuple[int, float]]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r[key]) for r in lines if key in r]


@pytest.fixture
def scripted(monkeypatch):
    """Validation scores chosen by the test, in call order (student and teacher scores kept apart).

    The only place the tests replace part of the product: the loop's scoring function, so that selection logic
    can be checked against scores whose best is known. ``install`` returns the list of calls made.
    """
    from dcdgan.selection import Validator

    def install(student: list[float], teacher: list[float] = ()) -> list[tuple[str, float]]:
        scores = {False: iter(student), True: iter(teacher)}
        calls: list[tuple[str, float]] = []

        def score(teacher: bool) -> float:
            value = next(scores[teacher])
            calls.append(("teacher" if teacher else "student", value))
            return value

        monkeypatch.setattr(Validator, "score_student", lambda self, *args, **kwargs: score(False))
        monkeypatch.setattr(Validator, "score_teacher", lambda self, *args, **kwargs: score(True))
        return calls

    return install


def same_weights(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_best_checkpoint_holds_the_step_with_the_lowest_score(tmp_path, offline, scripted):
    calls = scripted([3.0, 1.0, 1.0, 5.0], teacher=[4.0, 6.0, 2.0, 2.0])  # a tie at step 3: the earlier step stays best
    run = distill(tmp_path / "run", "quickstart", "eval.every=1", "train.max_steps=4")
    assert calls == [("teacher", 4.0), ("student", 3.0), ("teacher", 6.0), ("student", 1.0),
                     ("teacher", 2.0), ("student", 1.0), ("teacher", 2.0), ("student", 5.0)]
    assert records(run, "val/l1") == [(1, 3.0), (2, 1.0), (3, 1.0), (4, 5.0)]
    assert records(run, "val/teacher_l1") == [(1, 4.0), (2, 6.0), (3, 2.0), (4, 2.0)]
    best, last = (load_checkpoint(run / "checkpoints" / f"{n}.ckpt") for n in ("best", "last"))
    assert best["step"] == 2 and last["step"] == 4
    assert last["selection"]["best_step"] == 2 and last["selection"]["best_score"] == 1.0
    assert [h["val_l1"] for h in last["selection"]["history"]] == [3.0, 1.0, 1.0, 5.0]
    assert not same_weights(best["networks"]["student"], last["networks"]["student"])
    assert last["selection"]["teacher_best_step"] == 3 and last["selection"]["teacher_best_score"] == 2.0
    teacher = json.loads((run / "teacher.json").read_text())
    assert teacher["chosen"] == "best on validation" and teacher["step"] == 3
    assert teacher["selection"] == {"metric": "l1", "score": 2.0, "split": "val"}
    assert json.loads((run / "teacher_last.json").read_text())["step"] == 4


def test_best_checkpoint_is_the_weights_of_that_step(tmp_path, offline, scripted):
    scripted([2.0, 1.0, 4.0], teacher=[2.0, 1.0, 3.0])
    run = distill(tmp_path / "run", "quickstart", "eval.every=1", "train.max_steps=3")
    scripted([7.0], teacher=[7.0])
    short = distill(tmp_path / "short", "quickstart", "train.max_steps=2")  # the same run, stopped at step 2
    best = load_checkpoint(run / "checkpoints" / "best.ckpt")
    at_two = load_checkpoint(short / "checkpoints" / "last.ckpt")
    for name in ("student", "gen_ab", "disc_b", "projector"):
        assert same_weights(best["networks"][name], at_two["networks"][name]), name
    # teacher.safetensors is the teacher of step 2 (its best), not of step 3
    delivered = load_file(run / "teacher.safetensors")
    assert same_weights(delivered, at_two["networks"]["gen_ab"])
    assert not same_weights(delivered, load_checkpoint(run / "checkpoints" / "last.ckpt")["networks"]["gen_ab"])


def test_teacher_is_not_scored_when_select_teacher_is_off(tmp_path, offline, scripted):
    calls = scripted([2.0, 1.0])
    run = distill(tmp_path / "run", "quickstart", "eval.every=1", "train.max_steps=2", "eval.select_teacher=false")
    assert calls == [("student", 2.0), ("student", 1.0)]
    teacher = json.loads((run / "teacher.json").read_text())
    assert teacher["chosen"] == "last" and teacher["step"] == 2 and teacher["selection"] is None


def test_selection_state_survives_resume(tmp_path, offline, scripted):
    scripted([3.0, 1.0], teacher=[1.0, 2.0])
    run = distill(tmp_path / "run", "quickstart", "eval.every=1", "train.max_steps=2")
    scripted([2.0, 1.5], teacher=[1.5, 1.0])  # student worse than step 2's 1.0: best.ckpt must stay at step 2 after the resume
    resume(run, "train.max_steps=4")
    last = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert load_checkpoint(run / "checkpoints" / "best.ckpt")["step"] == 2
    assert last["selection"]["best_step"] == 2 and [h["step"] for h in last["selection"]["history"]] == [1, 2, 3, 4]
    assert last["selection"]["teacher_best_step"] == 1  # the resumed teacher's 1.0 ties step 1's: the earlier stays
    scripted([0.5], teacher=[0.5])  # better: the resumed run takes over best.ckpt and teacher.safetensors
    resume(run, "train.max_steps=5")
    assert load_checkpoint(run / "checkpoints" / "best.ckpt")["step"] == 5
    assert json.loads((run / "teacher.json").read_text())["step"] == 5


BURST = ["distill.schedule=burst", "distill.burst_every=1", "distill.burst_ratio=1", "train.nepochs=3", "train.nepochs_decay=0",
         "data.max_train_images=4", "train.batch_size=2", "eval.max_images=8"]


def test_burst_student_learns_from_the_best_teacher_so_far(tmp_path, offline, scripted, tiny_inception):
    # plan: teacher 2 steps, student 2 steps, three times; the teacher is scored when each student burst begins
    fid = ["eval.metric=fid", f"eval.inception={tiny_inception}", "distill.teacher_snapshot=best"]
    calls = scripted([1.0], teacher=[2.0, 1.0, 3.0])
    run = distill(tmp_path / "run", "quickstart_unpaired", *BURST, *fid)
    assert calls == [("teacher", 2.0), ("teacher", 1.0), ("teacher", 3.0), ("student", 1.0)]
    assert records(run, "val/teacher_fid") == [(2, 2.0), (6, 1.0), (10, 3.0)]
    last = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert last["step"] == 12
    assert last["selection"]["teacher_best_step"] == 6 and last["selection"]["teacher_best_score"] == 1.0
    # the snapshot is the teacher as it was at step 6: the same run stopped there has that teacher
    scripted([1.0], teacher=[2.0])
    short = distill(tmp_path / "short", "quickstart_unpaired", *BURST, *fid, "train.max_steps=6")
    teacher_at_6 = load_checkpoint(short / "checkpoints" / "last.ckpt")["networks"]["gen_ab"]
    assert same_weights(last["networks"]["snapshot"], teacher_at_6)
    assert not same_weights(last["networks"]["snapshot"], last["networks"]["gen_ab"])


def test_burst_with_select_teacher_off_delivers_the_last_teacher(tmp_path, offline, scripted, tiny_inception):
    """eval.select_teacher=false: the snapshot is still the best teacher (distill.teacher_snapshot=best), but the
    delivered teacher.safetensors is the last one, labelled so, as the README promises."""
    fid = ["eval.metric=fid", f"eval.inception={tiny_inception}", "distill.teacher_snapshot=best", "eval.select_teacher=false"]
    scripted([1.0], teacher=[2.0, 1.0, 3.0])
    run = distill(tmp_path / "run", "quickstart_unpaired", *BURST, *fid)
    last = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert last["selection"]["teacher_best_step"] == 6
    teacher = json.loads((run / "teacher.json").read_text())
    assert (teacher["chosen"], teacher["step"], teacher["selection"]) == ("last", 12, None)
    assert same_weights(load_file(run / "teacher.safetensors"), last["networks"]["gen_ab"])


def test_burst_latest_snapshot_is_the_teacher_at_the_last_burst(tmp_path, offline):
    run = distill(tmp_path / "run", "quickstart_unpaired", *BURST, "train.nepochs=2", "distill.teacher_snapshot=latest")
    short = distill(tmp_path / "short", "quickstart_unpaired", *BURST, "train.nepochs=2", "train.max_steps=6")
    last = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert last["step"] == 8
    assert same_weights(last["networks"]["snapshot"], load_checkpoint(short / "checkpoints" / "last.ckpt")["networks"]["gen_ab"])
    assert last["selection"]["teacher_best_step"] is None  # nothing was scored


def test_paired_l1_validation_is_the_distance_to_the_targets(tmp_path, offline, folder_data):
    run = distill(tmp_path / "run", "quickstart", f"data.root={folder_data['paired']}", "train.batch_size=4", "train.max_steps=2", "eval.metric=l1", "eval.max_images=0")
    student, _ = load_generator(run / "student.safetensors")
    val = folder_data["paired"] / "val"
    with torch.no_grad():
        expected = (student.eval()(read_images(val / "A")) - read_images(val / "B")).abs().mean().item()
    assert records(run, "val/l1") == [(2, pytest.approx(expected, rel=1e-5))]
    assert load_checkpoint(run / "checkpoints" / "best.ckpt")["selection"]["best_score"] == pytest.approx(expected, rel=1e-5)
    teacher, _ = load_generator(run / "teacher.safetensors")  # scored on the same split, against the same targets
    with torch.no_grad():
        expected = (teacher.eval()(read_images(val / "A")) - read_images(val / "B")).abs().mean().item()
    assert records(run, "val/teacher_l1") == [(2, pytest.approx(expected, rel=1e-5))]


def test_unpaired_l1_validation_is_the_distance_to_the_teacher(tmp_path, offline, folder_data):
    data = [f"data.root={folder_data['unpaired']}", "train.batch_size=4", "train.max_steps=2", "eval.metric=l1", "eval.max_images=0"]
    run = distill(tmp_path / "run", "quickstart_unpaired", *data)
    student, _ = load_generator(run / "student.safetensors")
    teacher, _ = load_generator(run / "teacher.safetensors")
    a = read_images(folder_data["unpaired"] / "valA")
    with torch.no_grad():
        expected = (student.eval()(a) - teacher.eval()(a)).abs().mean().item()
        to_b = (student(a) - read_images(folder_data["unpaired"] / "valB")).abs().mean().item()
    assert records(run, "val/l1") == [(2, pytest.approx(expected, rel=1e-5))]
    assert abs(expected - to_b) > 1e-3  # unpaired B images are not targets of these inputs


def test_unpaired_l1_selection_compares_every_step_with_the_same_teacher(tmp_path, offline, folder_data):
    """The teacher trains: scores against its current outputs would each have another reference. The reference is
    the teacher of the first validation (step 1), kept; student.json says so."""
    data = [f"data.root={folder_data['unpaired']}", "train.batch_size=4", "eval.metric=l1", "eval.max_images=0", "eval.every=1"]
    run = distill(tmp_path / "run", "quickstart_unpaired", *data, "train.max_steps=2")
    first = distill(tmp_path / "first", "quickstart_unpaired", *data, "train.max_steps=1")  # the same run, stopped at step 1
    student, _ = load_generator(run / "student_last.safetensors")
    teacher_1, _ = load_generator(first / "teacher_last.safetensors")
    teacher_2, _ = load_generator(run / "teacher_last.safetensors")
    a = read_images(folder_data["unpaired"] / "valA")
    with torch.no_grad():
        expected = (student.eval()(a) - teacher_1.eval()(a)).abs().mean().item()
        moving = (student(a) - teacher_2.eval()(a)).abs().mean().item()
    assert records(run, "val/l1")[1] == (2, pytest.approx(expected, rel=1e-5))
    assert abs(expected - moving) > 1e-4  # the teacher moved between the two validations
    selection = json.loads((run / "student.json").read_text())["selection"]
    assert selection["reference"] == "L1 to the outputs of the teacher of step 1, copied at the first validation and fixed since"
    # resumed, the run keeps comparing with the same copy
    assert main(["distill", "--resume", str(first), "train.max_steps=2", "--quiet"]) == 0
    assert records(first, "val/l1") == records(run, "val/l1")


def test_eval_and_the_final_table_score_the_delivered_teacher(tmp_path, offline, scripted, capsys):
    """teacher.safetensors (its best on validation, step 2) is what demo, export and translate use: the final table
    and `dcdgan eval` score that one, labelled, not the teacher of last.ckpt (step 3)."""
    from dcdgan.evaluate import evaluate_run, generator_from_checkpoint, score_generator
    from dcdgan.config import config_from_dict
    from dcdgan.data import DataRoot

    scripted([2.0, 1.0, 4.0], teacher=[2.0, 1.0, 3.0])
    capsys.readouterr()
    run = distill(tmp_path / "run", "quickstart", "eval.every=1", "train.max_steps=3", "eval.final=true", "eval.metric=l1",
                  "eval.inception=no-such-file")  # no Inception: the final table without FID
    table = capsys.readouterr().out
    assert [line.split()[:4] for line in table.splitlines() if line.startswith("teacher")] == [["teacher", "(best", "on", "val)"]]
    assert [line.split()[4] for line in table.splitlines() if line.startswith("teacher")] == ["2"]
    metrics = evaluate_run(run, split="test", fid="skip", quiet=True)
    teacher = metrics["models"]["teacher"]
    assert (teacher["step"], teacher["source"], teacher["chosen"]) == (2, "teacher.safetensors", "best on validation")
    # its PSNR is the step-2 teacher's, not the last one's
    last = load_checkpoint(run / "checkpoints" / "last.ckpt")
    cfg = config_from_dict(last["config"])
    dataset = DataRoot(cfg.data).eval_dataset("test")
    delivered, _ = load_generator(run / "teacher.safetensors")
    expected = score_generator(delivered, dataset, torch.device("cpu"), cfg.eval.batch_size, cfg.eval.max_images, quiet_bar=True)["psnr"]
    at_last = score_generator(generator_from_checkpoint(last, "teacher"), dataset, torch.device("cpu"), cfg.eval.batch_size, cfg.eval.max_images, quiet_bar=True)["psnr"]
    assert teacher["psnr"] == expected and teacher["psnr"] != at_last
