"""End-to-end `dcdgan distill` through the CLI on the embedded data, resume exactness, failure behaviour."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dcdgan.checkpoint import load_checkpoint
from dcdgan.cli import main
from dcdgan.weights import load_generator
from conftest import TINY_RUN

# tiny and fast: narrow networks, no VGG, no final FID; 2 steps
TINY = TINY_RUN


def distill(tmp_path: Path, name: str, recipe: str, *overrides: str) -> Path:
    """Run a tiny distillation; the test's overrides come last, so they win over TINY."""
    run_dir = tmp_path / name
    assert main(["distill", recipe, *TINY, *overrides, "--run-dir", str(run_dir), "--quiet"]) == 0
    return run_dir


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_paired_two_steps_writes_the_run_directory(tmp_path, offline):
    run = distill(tmp_path, "paired", "quickstart", "train.max_steps=2")
    for rel in ["config.yaml", "checkpoints/last.ckpt", "checkpoints/best.ckpt", "student.safetensors", "student.json",
                "teacher.safetensors", "teacher.json", "metrics.jsonl", "report.html", "samples/step_0000002.png"]:
        assert (run / rel).is_file(), rel
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    steps = []
    for events in (run / "tb").rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events))
        acc.Reload()
        steps += [e.step for e in acc.Scalars("train/S_dcd")] if "train/S_dcd" in acc.Tags()["scalars"] else []
    assert sorted(steps) == [1, 2]  # losses were logged, not just the events file created
    train = [r for r in records(run) if "phase" in r]
    assert [r["step"] for r in train] == [1, 2]
    assert {"D", "G_gan", "G_L1", "S_dcd"} <= set(train[0]) and "S_style" not in train[0]
    student, description = load_generator(run / "student.safetensors")
    assert description["spec"] == {"netG": "mobile_resnet_9blocks", "ngf": 4, "input_nc": 1, "output_nc": 1, "dropout": 0.0, "norm": "instance"}
    assert student(torch.zeros(1, 1, 32, 32)).shape == (1, 1, 32, 32)
    state = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert state["step"] == 2 and set(state["networks"]) == {"gen_ab", "disc_b", "student", "projector"}
    assert set(state["optimizers"]) == {"disc", "gen", "student"}
    assert "model.10.weight" in load_file(run / "teacher.safetensors") or "model.10.conv_block.1.conv.0.weight" in load_file(run / "teacher.safetensors")


def test_unpaired_two_steps(tmp_path, offline):
    run = distill(tmp_path, "unpaired", "quickstart_unpaired", "train.max_steps=2")
    train = [r for r in records(run) if "phase" in r]
    assert {"G_cycle", "G_idt", "D_A", "D_B", "S_dcd"} <= set(train[-1])
    state = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert {"gen_ab", "gen_ba", "disc_a", "disc_b", "student", "projector"} == set(state["networks"])
    assert state["pools"]["b"]["images"].shape == (8, 1, 32, 32)  # 2 steps x batch 4 fakes pooled


RESUME_CASES = [
    ("quickstart", []),
    ("quickstart_unpaired", ["loss.pool_size=2"]),  # full image pools (their contents and RNG) and both discriminators
    # the student's own discriminator: its weights, its Adam state and its image pool
    ("quickstart_unpaired", ["loss.pool_size=2", "distill.student_gan_weight=1", "distill.student_gan_disc=own"]),
    # burst: 3-step phases, so the run stops mid teacher phase and resumes into the teacher snapshot and student burst
    ("quickstart_unpaired", ["distill.schedule=burst", "distill.burst_every=1", "data.max_train_images=6", "train.batch_size=2"]),
]


@pytest.mark.parametrize("recipe, extra", RESUME_CASES)
def test_resume_is_exact(tmp_path, offline, recipe, extra):
    straight = distill(tmp_path, "straight", recipe, "train.max_steps=4", *extra)
    first = distill(tmp_path, "resumed", recipe, "train.max_steps=2", *extra)
    assert main(["distill", "--resume", str(first), "train.max_steps=4", "--quiet"]) == 0
    losses = lambda run: [r for r in records(run) if "phase" in r]  # noqa: E731
    assert losses(first) == losses(straight)
    a = load_checkpoint(straight / "checkpoints" / "last.ckpt")
    b = load_checkpoint(first / "checkpoints" / "last.ckpt")
    assert a["step"] == b["step"] == 4
    for net, state in a["networks"].items():
        for key, value in state.items():
            assert torch.equal(value, b["networks"][net][key]), f"{net}.{key}"


def test_own_student_discriminator_is_trained_logged_and_checkpointed(tmp_path, offline):
    run = distill(tmp_path, "own", "quickstart", "train.max_steps=2", "distill.student_gan_weight=1", "distill.student_gan_disc=own")
    train = [r for r in records(run) if "phase" in r]
    assert {"D", "S_gan", "D_S"} <= set(train[-1])
    state = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert set(state["networks"]) == {"gen_ab", "disc_b", "student", "projector", "student_disc"}
    assert set(state["optimizers"]) == {"disc", "gen", "student", "student_disc"} and set(state["pools"]) == {"a", "b", "s"}
    # the same architecture as the task's conditional discriminator: it reads cat(A, B)
    shapes = {k: tuple(v.shape) for k, v in state["networks"]["student_disc"].items()}
    assert shapes == {k: tuple(v.shape) for k, v in state["networks"]["disc_b"].items()} and shapes["model.0.weight"][1] == 2
    assert not torch.equal(state["networks"]["student_disc"]["model.0.weight"], state["networks"]["disc_b"]["model.0.weight"])
    # CycleGAN: an unconditional discriminator, shown the student's past fakes through a pool as the task's are
    run = distill(tmp_path, "own_unpaired", "quickstart_unpaired", "train.max_steps=2", "distill.student_gan_weight=1", "distill.student_gan_disc=own")
    state = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert state["networks"]["student_disc"]["model.0.weight"].shape[1] == 1
    assert state["pools"]["s"]["images"].shape == (8, 1, 32, 32)  # 2 steps x batch 4 student fakes pooled


def test_pretrained_teacher_stays_frozen(tmp_path, offline):
    source = distill(tmp_path, "source", "quickstart", "train.max_steps=1")
    run = distill(tmp_path, "frozen", "quickstart", "train.max_steps=2", f"model.teacher_weights={source / 'teacher.safetensors'}")
    teacher = load_file(source / "teacher.safetensors")
    state = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert all(torch.equal(v, state["networks"]["gen_ab"][k]) for k, v in teacher.items())
    assert "gen" not in state["optimizers"] and "G_L1" not in records(run)[0]
    # a frozen teacher never changes: validation does not score it, and it is delivered as it is
    assert any("val/l1" in r for r in records(run)) and not any("val/teacher_l1" in r for r in records(run))
    delivered = json.loads((run / "teacher.json").read_text())
    assert delivered["chosen"] == "pretrained, frozen" and delivered["selection"] is None
    assert delivered["source"] == str(source / "teacher.safetensors")


def test_method_none_says_it_does_not_use_a_teacher_file(tmp_path, offline, capsys):
    source = distill(tmp_path, "source", "quickstart", "train.max_steps=1")
    capsys.readouterr()
    run = distill(tmp_path, "none", "quickstart", "distill.method=none", "train.max_steps=1", f"model.teacher_weights={source / 'teacher.safetensors'}")
    out = capsys.readouterr().out
    assert "model.teacher_weights is not used with distill.method=none: the student trains alone, from scratch\n" in out
    assert not (run / "teacher.safetensors").exists()


def test_method_none_is_the_student_alone(tmp_path, offline):
    run = distill(tmp_path, "none", "quickstart", "distill.method=none", "train.max_steps=2")
    state = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert set(state["networks"]) == {"gen_ab", "disc_b"}
    assert not (run / "teacher.safetensors").exists()
    _, description = load_generator(run / "student.safetensors")
    assert description["spec"]["ngf"] == 4


def test_missing_vgg_uses_the_documented_weight_free_setting(tmp_path, offline, capsys):
    run_dir = tmp_path / "fallback"
    args = [a for a in TINY if not a.startswith("perceptual")]
    assert main(["distill", "train.max_steps=1", *args, "--run-dir", str(run_dir), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "VGG16 weights not found" in out and "weight-free setting (L1 to the teacher output x10" in out
    assert "S_pixel" in records(run_dir)[0]
    assert main(["distill", "train.max_steps=1", "perceptual.on_missing=error", *args, "--run-dir", str(tmp_path / "strict"), "--quiet"]) == 2
    assert "VGG16 weights not found" in capsys.readouterr().err
    # an L1 to the teacher configured beside the VGG losses: the fallback's weight takes its place, and says so
    assert main(["distill", "train.max_steps=1", *args, "distill.lambda_pixel=5", "--run-dir", str(tmp_path / "pixel"), "--quiet"]) == 0
    assert "(L1 to the teacher output x10 instead of VGG style/feature losses, replacing distill.lambda_pixel=5); set" in capsys.readouterr().out


def test_settings_that_do_nothing_get_one_warning_line_each(tmp_path, offline, capsys):
    from dcdgan.config import ignored_settings, load_config

    cfg = load_config("quickstart")
    assert ignored_settings(cfg.distill, cfg.perceptual) == []
    cfg = load_config("quickstart", ["distill.method=none", "distill.student_gan_weight=0"])
    assert ignored_settings(cfg.distill, cfg.perceptual) == []  # nothing distils
    capsys.readouterr()
    distill(tmp_path, "inert", "quickstart", "train.max_steps=1", "distill.student_gan_disc=own", "distill.student_gan_weight=0")
    warnings = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning")]
    assert warnings == [  # TINY: perceptual.weights=none beside the reference's VGG weights
        "warning: distill.student_gan_disc=own does nothing while distill.student_gan_weight=0: the student has no GAN term, "
        "so no discriminator of its own is built",
        "warning: perceptual.weights=none turns the VGG losses off, so distill.lambda_style=10000 and distill.lambda_feat=10 do nothing",
    ]
    assert "student_disc" not in load_checkpoint(tmp_path / "inert" / "checkpoints" / "last.ckpt")["networks"]


def test_bad_input_exits_2_with_one_line(tmp_path, offline, capsys):
    assert main(["distill", "train.batchsize=3", "--run-dir", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dcdgan distill: error: unknown config key 'train.batchsize'") and "\n" not in err
    assert main(["distill", "data.root=/nonexistent/data", "--run-dir", str(tmp_path / "y")]) == 2
    assert "/nonexistent/data: dataset folder not found" in capsys.readouterr().err
    assert main(["distill", "data.crop_size=30", "data.load_size=30", *TINY, "--run-dir", str(tmp_path / "z")]) == 2
    assert "use a multiple of 4" in capsys.readouterr().err
    assert main(["distill", "data.crop_size=16", "data.load_size=16", "distill.dcd_min_size=1", *TINY, "--run-dir", str(tmp_path / "w")]) == 2
    assert "raise distill.dcd_min_size" in capsys.readouterr().err


def test_existing_run_is_not_overwritten(tmp_path, offline, capsys):
    run = distill(tmp_path, "once", "quickstart", "train.max_steps=1")
    assert main(["distill", "quickstart", "train.max_steps=1", *TINY, "--run-dir", str(run), "--quiet"]) == 2
    assert "already holds a run; continue it with --resume" in capsys.readouterr().err


def test_print_config_resolves_overrides(capsys):
    assert main(["distill", "quickstart_unpaired", "train.batch_size=2", "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "task: cyclegan" in out and "batch_size: 2" in out


def test_omgd_uses_vgg_and_no_dcd(tmp_path, offline):
    with pytest.warns(UserWarning, match="RANDOM weights"):
        run = distill(tmp_path, "omgd", "quickstart", "distill.method=omgd", "perceptual.weights=random", "train.max_steps=1")
    record = records(run)[0]
    assert {"S_style", "S_feat"} <= set(record) and "S_dcd" not in record
    assert "projector" not in load_checkpoint(run / "checkpoints" / "last.ckpt")["networks"]


def test_report_shows_table_curves_and_samples(tmp_path, offline):
    run = distill(tmp_path, "report", "quickstart", "train.max_steps=2", "eval.every=1", "train.sample_every=1")
    html = (run / "report.html").read_text()
    assert 'src="curves_losses.png"' in html and 'src="curves_validation.png"' in html
    assert 'src="samples/step_0000001.png"' in html and 'src="samples/step_0000002.png"' in html
    assert (run / "curves_losses.png").stat().st_size > 1000
