"""The training loop: exact resume with dropout, rotating checkpoints and their fallback, numerical faults,
mixed precision, and which generators a run delivers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dcdgan.checkpoint import load_checkpoint, load_newest, older_files, rank_state, restore_run, run_state, save_rotating
from dcdgan.cli import main
from dcdgan.errors import UserError
from dcdgan.pool import ImagePool
from conftest import TINY_RUN

TINY = TINY_RUN


def distill(tmp_path: Path, name: str, *overrides: str, recipe: str = "quickstart") -> Path:
    run_dir = tmp_path / name
    assert main(["distill", recipe, *TINY, *overrides, "--run-dir", str(run_dir), "--quiet"]) == 0
    return run_dir


def resume(run_dir: Path, *overrides: str) -> int:
    return main(["distill", "--resume", str(run_dir), *overrides, "--quiet"])


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def train_records(run_dir: Path) -> list[dict]:
    return [r for r in records(run_dir) if "phase" in r]


def same_networks(a: Path, b: Path) -> None:
    sa, sb = load_checkpoint(a)["networks"], load_checkpoint(b)["networks"]
    assert set(sa) == set(sb)
    for net, state in sa.items():
        for key, value in state.items():
            assert torch.equal(value, sb[net][key]), f"{net}.{key}"


# ---------------------------------------------------------------- resume


def test_resume_is_exact_with_dropout(tmp_path, offline):
    """Dropout draws from the global RNG every step: the RNG must be restored after every iterator exists."""
    straight = distill(tmp_path, "straight", "model.teacher_dropout=0.5", "model.student_dropout=0.5", "train.max_steps=4")
    first = distill(tmp_path, "resumed", "model.teacher_dropout=0.5", "model.student_dropout=0.5", "train.max_steps=2")
    assert resume(first, "train.max_steps=4") == 0
    assert train_records(first) == train_records(straight)
    same_networks(straight / "checkpoints" / "last.ckpt", first / "checkpoints" / "last.ckpt")


# ---------------------------------------------------------------- rotating checkpoints


def test_rotation_keeps_the_newest_and_last_is_the_newest(tmp_path):
    save_rotating(tmp_path, {"step": 1}, keep=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]
    for step in range(2, 6):
        save_rotating(tmp_path, {"step": step, "w": torch.full((3,), float(step))}, keep=3)
    assert [p.name for p in older_files(tmp_path)] == ["last.1.ckpt", "last.2.ckpt"]
    assert [load_checkpoint(p)["step"] for p in (tmp_path / "last.ckpt", *older_files(tmp_path))] == [5, 4, 3]
    assert not list(tmp_path.glob(".*.tmp"))
    save_rotating(tmp_path, {"step": 6}, keep=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_corrupt_newest_checkpoint_falls_back_with_one_line(tmp_path):
    for step in (1, 2, 3):
        save_rotating(tmp_path, {"step": step, "w": torch.zeros(1000)}, keep=3)
    last = tmp_path / "last.ckpt"
    last.write_bytes(last.read_bytes()[:300])
    lines: list[str] = []
    path, state = load_newest(tmp_path, lines.append)
    assert path.name == "last.1.ckpt" and state["step"] == 2
    assert len(lines) == 1 and "last.ckpt: not a readable dcdgan checkpoint" in lines[0] and "resuming from last.1.ckpt (step 2)" in lines[0]
    for p in tmp_path.glob("last*.ckpt"):
        p.write_bytes(b"garbage")
    with pytest.raises(UserError, match="last.ckpt: not a readable dcdgan checkpoint.*2 older checkpoints are unreadable too"):
        load_newest(tmp_path)


def test_resume_from_a_corrupt_last_checkpoint_continues_from_the_previous(tmp_path, offline, capsys):
    run = distill(tmp_path, "run", "train.max_steps=3", "train.checkpoint_every=1")
    assert [load_checkpoint(p)["step"] for p in older_files(run / "checkpoints")] == [2, 1]
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])
    capsys.readouterr()
    assert resume(run, "train.max_steps=4") == 0
    out = capsys.readouterr().out
    assert "resuming from last.1.ckpt (step 2) instead" in out and "resumed" in out
    assert load_checkpoint(last)["step"] == 4
    assert [r["step"] for r in train_records(run)] == [1, 2, 3, 4]


def test_checkpoint_holds_world_size_every_rank_and_the_loss_scaler(tmp_path):
    """run_state/restore_run: per-rank RNG and pools, the GradScaler state, and a one-line refusal on another world size."""
    net = torch.nn.Linear(2, 2)
    opt = torch.optim.Adam(net.parameters())
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    pools = {"a": ImagePool(2, 1), "b": ImagePool(2, 2)}
    pools["b"].query(torch.ones(1, 1, 4, 4))
    ranks = [rank_state(pools), rank_state({"a": ImagePool(2, 3), "b": ImagePool(2, 4)})]
    state = run_state({}, 7, 10, {"net": net}, {"opt": opt}, scaler.state_dict(), ranks, {}, 0.0)
    assert state["world_size"] == 2 and len(state["other_ranks"]) == 1
    assert state["pools"]["b"]["images"].shape == (1, 1, 4, 4) and state["other_ranks"][0]["pools"]["b"]["images"].numel() == 0

    restored_scaler = torch.amp.GradScaler("cpu", init_scale=1.0)
    fresh = {"a": ImagePool(2, 9), "b": ImagePool(2, 9)}
    rng = restore_run(state, 10, 2, 1, {"net": torch.nn.Linear(2, 2)}, {"opt": opt}, fresh, torch.device("cpu"), restored_scaler)
    assert restored_scaler.get_scale() == 1024.0
    assert torch.equal(rng["torch"], ranks[1]["rng"]["torch"])
    assert torch.equal(fresh["a"].generator.get_state(), ImagePool(2, 3).generator.get_state())  # rank 1's pools
    with pytest.raises(UserError, match=r"written by 2 process\(es\) and this run has 1.*torchrun --nproc_per_node 2"):
        restore_run(state, 10, 1, 0, {"net": net}, {"opt": opt}, fresh, torch.device("cpu"))


def scaled_steps(net: torch.nn.Module, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler, losses: list[float]) -> None:
    """One GradScaler step per loss factor (inf: an overflowing step, which the scaler skips and backs off from)."""
    for factor in losses:
        opt.zero_grad()
        loss = net(torch.ones(1, 2)).sum() * factor
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()


def test_fp16_loss_scaler_state_survives_a_checkpoint_file_and_continues_the_same(tmp_path):
    """fp16 resume: the scale after a backoff and the growth tracker (steps since the last overflow, towards the next
    growth) go through the checkpoint file, so the resumed run scales and skips exactly as the uninterrupted one.
    On CPU: Accelerate creates its fp16 scaler only on a GPU, so this drives torch's GradScaler (enabled on CPU) through
    the same run_state / save / load / restore_run path the loop uses (test_fp16_resume_on_gpu runs the loop itself)."""
    torch.manual_seed(0)
    net = torch.nn.Linear(2, 2)
    opt = torch.optim.Adam(net.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=3)
    scaled_steps(net, opt, scaler, [1.0, float("inf"), 1.0, 1.0])  # backoff to 512, then two good steps towards growth
    assert scaler.state_dict()["scale"] == 512.0 and scaler.state_dict()["_growth_tracker"] == 2
    save_rotating(tmp_path, run_state({}, 4, 10, {"net": net}, {"opt": opt}, scaler.state_dict(), [rank_state({})], {}, 0.0), keep=1)
    _, state = load_newest(tmp_path)

    net2 = torch.nn.Linear(2, 2)
    opt2 = torch.optim.Adam(net2.parameters(), lr=0.1)
    scaler2 = torch.amp.GradScaler("cpu")  # defaults: scale 65536, tracker 0
    restore_run(state, 10, 1, 0, {"net": net2}, {"opt": opt2}, {}, torch.device("cpu"), scaler2)
    assert scaler2.state_dict() == scaler.state_dict()
    scaled_steps(net, opt, scaler, [1.0, 2.0])  # the third good step grows the scale back to 1024
    scaled_steps(net2, opt2, scaler2, [1.0, 2.0])
    assert scaler2.get_scale() == scaler.get_scale() == 1024.0
    assert torch.equal(net2.weight, net.weight) and torch.equal(net2.bias, net.bias)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 training needs CUDA: Accelerate creates its loss scaler only on a GPU")
def test_fp16_resume_on_gpu(tmp_path, offline):
    """The loop itself with fp16: the scaler state saved at step 4 is the same straight and resumed at step 2 (a lost
    state would restart the growth tracker at 0 and read 2 here)."""
    straight = distill(tmp_path, "straight", "train.mixed_precision=fp16", "train.max_steps=4")
    first = distill(tmp_path, "first", "train.mixed_precision=fp16", "train.max_steps=2")
    assert resume(first, "train.max_steps=4") == 0
    a, b = (load_checkpoint(r / "checkpoints" / "last.ckpt")["grad_scaler"] for r in (straight, first))
    assert a is not None and a == b


# ---------------------------------------------------------------- numerical faults


def test_nonfinite_loss_stops_naming_term_and_step_and_keeps_the_checkpoint(tmp_path, offline, capsys):
    run = distill(tmp_path, "run", "train.max_steps=2")
    saved = (run / "checkpoints" / "last.ckpt").read_bytes()
    capsys.readouterr()
    assert resume(run, "train.max_steps=5", "loss.lambda_recon=inf") == 3  # its own exit code: the input was not bad
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert err.startswith("dcdgan distill: error: step 3: loss G_L1 is not finite; stopped, keeping") and "(step 2)" in err
    assert (run / "checkpoints" / "last.ckpt").read_bytes() == saved
    assert json.loads((run / "student_last.json").read_text())["step"] == 2  # no deliverable from the broken run


def test_skip_drops_the_nonfinite_update_and_stops_after_the_limit(tmp_path, offline, capsys):
    run = distill(tmp_path, "run", "train.max_steps=2")
    teacher_before = load_checkpoint(run / "checkpoints" / "last.ckpt")["networks"]["gen_ab"]
    capsys.readouterr()
    # the generator update is inf at every step: skipped (the discriminator's, before it, is applied)
    assert resume(run, "train.max_steps=4", "loss.lambda_recon=inf", "train.on_nonfinite=skip", "train.skip_limit=5") == 0
    out = capsys.readouterr().out
    assert "step 3: loss G_L1 is not finite; update skipped (1 in a row)" in out
    assert "step 4: loss G_L1 is not finite; update skipped (2 in a row)" in out
    state = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert state["step"] == 4
    assert all(torch.equal(v, state["networks"]["gen_ab"][k]) for k, v in teacher_before.items())  # no G update applied
    assert all(math.isfinite(v) for r in train_records(run) for k, v in r.items() if isinstance(v, float))
    assert resume(run, "train.max_steps=8", "loss.lambda_recon=inf", "train.on_nonfinite=skip", "train.skip_limit=2") == 3
    assert "step 6: 2 steps in a row had non-finite losses (G_L1); stopped" in capsys.readouterr().err


# ---------------------------------------------------------------- mixed precision


@pytest.fixture
def fresh_accelerate_state():
    """Accelerate keeps one process-wide state whose precision cannot change; runs in this process used "no"."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def test_bf16_cpu_run_trains_in_bf16_and_stays_finite(tmp_path, offline, fresh_accelerate_state):
    # bf16 keeps fp32's 8 exponent bits, so nothing in this run can overflow (fp16's overflow of the VGG Gram
    # matrices is tested where it happens, under fp16 autocast: test_losses.py::test_style_loss_on_half_activations_
    # equals_fp32). What can break here is the option itself: a run that quietly trains in fp32, or bf16
    # activations clashing with the fp32 losses and weights. So the same seeded run in fp32 is the reference.
    from accelerate.state import AcceleratorState

    run = distill(tmp_path, "bf16", "train.mixed_precision=bf16", "train.max_steps=3")
    AcceleratorState._reset_state(reset_partial_state=True)  # the process-wide state keeps its first precision
    plain = distill(tmp_path, "fp32", "train.max_steps=3")
    rows, rows_fp32 = train_records(run), train_records(plain)
    assert [r["step"] for r in rows] == [r["step"] for r in rows_fp32] == [1, 2, 3]
    assert all(math.isfinite(v) for r in rows for k, v in r.items() if isinstance(v, float))
    first, first_fp32 = rows[0], rows_fp32[0]  # step 1: both runs start from the same weights and batch
    losses = [k for k in first if k not in ("step", "phase", "epoch", "lr")]
    assert losses == ["D", "G_gan", "G_L1", "S_dcd"]
    assert all(first[k] != first_fp32[k] for k in losses), "bf16 rounding moves every loss: the run was not bf16"
    # bf16 keeps 8 significant bits (each op rounds by up to 2**-9 relative): the step-1 losses agree to ~1e-3
    # relative; G_gan, a mean of discriminator outputs of scale ~1 that lies near 0, to ~1e-2 absolute
    for k in ("D", "G_L1", "S_dcd"):
        assert first[k] == pytest.approx(first_fp32[k], rel=1e-2), k
    assert first["G_gan"] == pytest.approx(first_fp32["G_gan"], abs=2e-2)
    student = load_file(run / "student.safetensors")
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in student.values())  # weights stay fp32


# ---------------------------------------------------------------- deliverables


def test_student_and_teacher_files_are_the_best_on_validation_and_the_last(tmp_path, offline):
    run = distill(tmp_path, "run", "train.max_steps=4", "eval.every=1")
    best = load_checkpoint(run / "checkpoints" / "best.ckpt")
    last = load_checkpoint(run / "checkpoints" / "last.ckpt")
    described = json.loads((run / "student.json").read_text())
    assert described["chosen"] == "best on validation" and described["step"] == best["step"]
    assert described["selection"]["metric"] == "l1" and described["selection"]["split"] == "val"
    assert described["selection"]["score"] == best["selection"]["best_score"]
    for key, value in load_file(run / "student.safetensors").items():
        assert torch.equal(value, best["networks"]["student"][key])
    last_described = json.loads((run / "student_last.json").read_text())
    assert last_described["chosen"] == "last" and last_described["step"] == 4
    for key, value in load_file(run / "student_last.safetensors").items():
        assert torch.equal(value, last["networks"]["student"][key])

    # the online teacher is scored at each validation too: teacher.json names its best step and score
    teacher = json.loads((run / "teacher.json").read_text())
    teacher_scores = {r["step"]: r["val/teacher_l1"] for r in records(run) if "val/teacher_l1" in r}
    assert sorted(teacher_scores) == [1, 2, 3, 4]
    best_step = min(teacher_scores, key=lambda s: (teacher_scores[s], s))
    assert teacher["chosen"] == "best on validation" and teacher["step"] == best_step
    assert teacher["selection"] == {"metric": "l1", "score": teacher_scores[best_step], "split": "val"}
    assert json.loads((run / "teacher_last.json").read_text())["step"] == 4
    for key, value in load_file(run / "teacher_last.safetensors").items():
        assert torch.equal(value, last["networks"]["gen_ab"][key])


def test_burst_delivers_the_best_teacher_it_selected(tmp_path, offline, tiny_inception, monkeypatch):
    from dcdgan.selection import Validator

    teacher_scores = iter([2.0, 1.0, 3.0])  # scored when each student burst begins, at steps 2, 6 and 10
    monkeypatch.setattr(Validator, "score_teacher", lambda self, *args, **kwargs: next(teacher_scores))
    monkeypatch.setattr(Validator, "score_student", lambda self, *args, **kwargs: 1.0)
    burst = ["distill.schedule=burst", "distill.burst_every=1", "train.nepochs=3", "train.nepochs_decay=0", "data.max_train_images=4",
             "train.batch_size=2", "eval.metric=fid", f"eval.inception={tiny_inception}", "distill.teacher_snapshot=best"]
    run = distill(tmp_path, "burst", *burst, recipe="quickstart_unpaired")
    teacher = json.loads((run / "teacher.json").read_text())
    assert teacher["chosen"] == "best on validation" and teacher["step"] == 6
    assert teacher["selection"] == {"metric": "fid", "score": 1.0, "split": "val"}
    last = load_checkpoint(run / "checkpoints" / "last.ckpt")
    for key, value in load_file(run / "teacher.safetensors").items():
        assert torch.equal(value, last["networks"]["snapshot"][key])  # the teacher the student learnt from
    assert json.loads((run / "teacher_last.json").read_text())["step"] == 12


def test_without_selection_the_delivered_student_is_the_last(tmp_path, offline):
    run = distill(tmp_path, "none", "train.max_steps=2", "distill.method=none", "eval.metric=l1", recipe="quickstart_unpaired")
    described = json.loads((run / "student.json").read_text())
    assert described["chosen"] == "last" and described["selection"] is None and described["step"] == 2
    assert not (run / "teacher.safetensors").exists()
