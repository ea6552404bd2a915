"""The training loop through `dcdgan distill`: update frequency, learning rates in the optimizers, resume inside a
student burst, pretrained teachers (CycleGAN, and a BatchNorm U-Net that must stay in eval mode)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import TINY_RUN

from dcdgan.checkpoint import load_checkpoint
from dcdgan.cli import main
from dcdgan.nets import GeneratorSpec, build_generator


def distill(run_dir: Path, recipe: str, *overrides: str) -> Path:
    assert main(["distill", recipe, *TINY_RUN, *overrides, "--run-dir", str(run_dir), "--quiet"]) == 0
    return run_dir


def train_records(run_dir: Path) -> list[dict]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in lines if "phase" in r]


def test_task_every_updates_the_task_networks_every_n_steps(tmp_path, offline):
    run = distill(tmp_path / "run", "quickstart", "distill.task_every=2", "train.max_steps=4")
    keys = [set(r) - {"step", "phase", "epoch", "lr"} for r in train_records(run)]
    task = {"D", "G_gan", "G_L1"}
    assert [task <= k for k in keys] == [True, False, True, False]  # steps 1 and 3 (counters 0 and 2)
    assert keys[1] == keys[3] == {"S_dcd"}  # the student learns every step (perceptual.weights=none: DCD alone)
    assert all("S_dcd" in k for k in keys)


def test_learning_rate_schedule_reaches_every_optimizer(tmp_path, offline):
    # 8 pairs, batch 4: 2 steps per epoch; 1 constant epoch then 1 decay epoch at 1 - 1/2 = 0.5 of the lr
    run = distill(tmp_path / "run", "quickstart", "train.nepochs=1", "train.nepochs_decay=1", "data.max_train_images=8",
                  "train.batch_size=4", "train.lr=0.001", "train.max_steps=3")
    optimizers = load_checkpoint(run / "checkpoints" / "last.ckpt")["optimizers"]
    assert set(optimizers) == {"disc", "gen", "student"}
    for name, state in optimizers.items():
        assert [g["lr"] for g in state["param_groups"]] == [pytest.approx(0.0005)] * len(state["param_groups"]), name
    assert [r["lr"] for r in train_records(run)] == pytest.approx([0.001, 0.001, 0.0005])


def test_learning_rate_of_the_first_epoch_is_the_configured_one(tmp_path, offline):
    run = distill(tmp_path / "run", "quickstart", "train.nepochs=1", "train.nepochs_decay=1", "data.max_train_images=8",
                  "train.batch_size=4", "train.lr=0.001", "train.max_steps=2")
    for name, state in load_checkpoint(run / "checkpoints" / "last.ckpt")["optimizers"].items():
        assert state["param_groups"][0]["lr"] == pytest.approx(0.001), name


def test_resume_inside_a_student_burst_is_exact(tmp_path, offline):
    # teacher 3 steps, then the snapshot is taken and the student trains 3 steps against it; stop after step 4
    burst = ["distill.schedule=burst", "distill.burst_every=1", "data.max_train_images=6", "train.batch_size=2"]
    straight = distill(tmp_path / "straight", "quickstart_unpaired", *burst, "train.max_steps=6")
    first = distill(tmp_path / "resumed", "quickstart_unpaired", *burst, "train.max_steps=4")
    assert [r["phase"] for r in train_records(first)] == ["task"] * 3 + ["student"]
    assert main(["distill", "--resume", str(first), "train.max_steps=6", "--quiet"]) == 0
    assert train_records(first) == train_records(straight)
    a, b = (load_checkpoint(r / "checkpoints" / "last.ckpt") for r in (straight, first))
    for net, state in a["networks"].items():
        assert all(torch.equal(v, b["networks"][net][k]) for k, v in state.items()), net


def test_burst_student_epochs_train_the_students_own_discriminator_on_b_images_and_resume_exactly(tmp_path, offline):
    # CycleGAN's burst schedule with a discriminator of the student's own: its student epochs read a B image beside
    # each A image, the own discriminator trains there only (not in the teacher's epochs), and a run stopped inside
    # the burst continues exactly (the B draws are seeded per item, as every other draw)
    own = ["distill.schedule=burst", "distill.burst_every=1", "data.max_train_images=6", "train.batch_size=2",
           "distill.student_gan_weight=1", "distill.student_gan_disc=own"]
    straight = distill(tmp_path / "straight", "quickstart_unpaired", *own, "train.max_steps=6")
    rows = train_records(straight)
    assert [r["phase"] for r in rows] == ["task"] * 3 + ["student"] * 3  # 6 A images / batch 2: 3 steps per epoch
    assert all("D_S" not in r and "S_gan" not in r for r in rows[:3])
    assert all({"D_S", "S_gan"} <= set(r) for r in rows[3:])
    state = load_checkpoint(straight / "checkpoints" / "last.ckpt")
    assert "student_disc" in state["networks"] and "student_disc" in state["optimizers"]
    first = distill(tmp_path / "resumed", "quickstart_unpaired", *own, "train.max_steps=4")
    assert main(["distill", "--resume", str(first), "train.max_steps=6", "--quiet"]) == 0
    assert train_records(first) == rows
    resumed = load_checkpoint(first / "checkpoints" / "last.ckpt")
    for net, weights in state["networks"].items():
        assert all(torch.equal(v, resumed["networks"][net][k]) for k, v in weights.items()), net


def test_pretrained_cyclegan_teacher(tmp_path, offline):
    source = distill(tmp_path / "source", "quickstart_unpaired", "train.max_steps=1")
    run = distill(tmp_path / "run", "quickstart_unpaired", "train.max_steps=2", f"model.teacher_weights={source / 'teacher.safetensors'}")
    state = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert set(state["networks"]) == {"gen_ab", "disc_b", "student", "projector"}
    assert set(state["optimizers"]) == {"disc", "student"}
    teacher = load_checkpoint(source / "checkpoints" / "last.ckpt")["networks"]["gen_ab"]
    assert all(torch.equal(v, state["networks"]["gen_ab"][k]) for k, v in teacher.items())
    assert [set(r) - {"step", "phase", "epoch", "lr"} for r in train_records(run)] == [{"D_B", "S_dcd"}] * 2


def test_pretrained_batchnorm_unet_teacher_stays_in_eval_mode(tmp_path, offline):
    torch.manual_seed(5)
    unet = build_generator(GeneratorSpec("unet_128", 8, 1, 1, dropout=0.0, norm="batch"))  # teacher_ngf=8 in TINY_RUN
    with torch.no_grad():  # running statistics a train-mode forward would visibly move
        for module in unet.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    weights = tmp_path / "unet_G.pth"  # a pix2pix-style .pth state dict
    torch.save(unet.state_dict(), weights)
    # the 128x128 U-Net's 32x32 block output pairs with the student's 32x32 resnet taps
    run = distill(tmp_path / "run", "quickstart", "model.teacher_netG=unet_128", f"model.teacher_weights={weights}",
                  "data.load_size=128", "data.crop_size=128", "data.max_train_images=4", "train.batch_size=2", "train.max_steps=2",
                  "distill.teacher_taps=[model.model.1.model.3]", "distill.student_taps=[model.9]", "eval.max_images=2")
    saved = load_checkpoint(run / "checkpoints" / "last.ckpt")["networks"]["gen_ab"]
    expected = unet.state_dict()
    assert set(saved) == set(expected)
    changed = [k for k, v in expected.items() if not torch.equal(v, saved[k])]
    assert changed == []  # weights, running statistics and num_batches_tracked untouched
    assert {"S_dcd", "D"} <= set(train_records(run)[0]) and "G_L1" not in train_records(run)[0]


def public_cyclegan_files(folder: Path) -> dict[str, Path]:
    """latest_net_{G_A,G_B,D_A,D_B}.pth as the public CycleGAN code saves them (state dicts), at TINY_RUN's widths."""
    from dcdgan.nets import build_discriminator

    folder.mkdir()
    torch.manual_seed(3)
    nets = {"G_A": build_generator(GeneratorSpec("mobile_resnet_9blocks", 8, 1, 1)), "G_B": build_generator(GeneratorSpec("mobile_resnet_9blocks", 8, 1, 1)),
            "D_A": build_discriminator(1, 8), "D_B": build_discriminator(1, 8)}
    files = {}
    for name, net in nets.items():
        files[name] = folder / f"latest_net_{name}.pth"
        torch.save(net.state_dict(), files[name])
    return files


def test_public_cyclegan_pair_d_a_is_the_discriminator_beside_g_a_and_d_b_gets_a_notice(tmp_path, offline, capsys):
    """Public CycleGAN: netD_A judges G_A(A) against real B, netD_B judges A. D_A starts the discriminator of an A->B
    run silently; D_B (same keys, the other domain) loads too, but one line says it is the other domain's."""
    from dcdgan.assembly import build_networks, cyclegan_name_notices
    from dcdgan.config import load_config

    files = public_cyclegan_files(tmp_path / "public")
    cfg = load_config("quickstart_unpaired", [*TINY_RUN, f"model.teacher_weights={files['G_A']}", f"model.teacher_disc_weights={files['D_A']}"])
    nets = build_networks(cfg)
    d_a = torch.load(files["D_A"], weights_only=True)
    assert all(torch.equal(v, nets.disc_b.state_dict()[k]) for k, v in d_a.items())
    assert cyclegan_name_notices(cfg.model, cfg.data) == []
    capsys.readouterr()
    distill(tmp_path / "wrong", "quickstart_unpaired", "train.max_steps=1", f"model.teacher_weights={files['G_B']}", f"model.teacher_disc_weights={files['D_B']}")
    out = capsys.readouterr().out.splitlines()
    assert [line for line in out if line.startswith("notice")] == [
        f"notice: model.teacher_disc_weights={files['D_B']}: CycleGAN's D_B judges domain A images, not the outputs of the A->B teacher; "
        "their discriminator is latest_net_D_A.pth",
        f"notice: model.teacher_weights={files['G_B']}: CycleGAN's G_B translates the other way; the A->B teacher is latest_net_G_A.pth",
    ]
    # the mirror direction: B->A uses G_B and D_B, and D_A is the other domain's
    mirror = load_config("quickstart_unpaired", [*TINY_RUN, "data.direction=BtoA", f"model.teacher_weights={files['G_B']}", f"model.teacher_disc_weights={files['D_A']}"])
    assert cyclegan_name_notices(mirror.model, mirror.data) == [
        f"notice: model.teacher_disc_weights={files['D_A']}: CycleGAN's D_A judges domain B images, not the outputs of the "
        "B->A (data.direction=BtoA) teacher; their discriminator is latest_net_D_B.pth",
    ]


def test_pretrained_teacher_with_the_burst_schedule_trains_the_student_from_the_first_step(tmp_path, offline, capsys):
    """Tried as a new user would: a CycleGAN burst recipe with model.teacher_weights. The plan would open with teacher
    epochs that have no teacher to train (only D_B would learn); instead every step trains the student beside D_B,
    the frozen teacher is never scored or re-selected, and teacher.json says what it is."""
    source = distill(tmp_path / "source", "quickstart_unpaired", "train.max_steps=1")
    weights = source / "teacher.safetensors"
    capsys.readouterr()
    run = distill(tmp_path / "run", "quickstart_unpaired", "distill.schedule=burst", "distill.burst_every=1", "data.max_train_images=4",
                  "train.batch_size=2", "train.nepochs=2", "train.nepochs_decay=0", "train.max_steps=3", "eval.every=1",
                  f"model.teacher_weights={weights}")
    assert ("distill.schedule=burst with a pretrained, frozen teacher: there are no teacher epochs to run, so the student trains from the "
            "first step, beside the discriminator (as distill.schedule=interleaved)") in capsys.readouterr().out.splitlines()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["phase"], set(r) - {"step", "phase", "epoch", "lr"}) for r in records if "phase" in r] == [("joint", {"D_B", "S_dcd"})] * 3
    assert not any("val/teacher_l1" in r for r in records) and [r["step"] for r in records if "val/l1" in r] == [1, 2, 3]
    state = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert set(state["networks"]) == {"gen_ab", "disc_b", "student", "projector"}  # no burst snapshot
    assert state["selection"]["teacher_best_step"] is None
    delivered = json.loads((run / "teacher.json").read_text())
    assert (delivered["chosen"], delivered["selection"], delivered["source"]) == ("pretrained, frozen", None, str(weights))
