"""Single optimisation steps: what each one may and may not change."""

from __future__ import annotations

import copy

import torch
from accelerate import Accelerator

from dcdgan.config import load_config
from dcdgan.networks import build_networks, dcd_taps
from dcdgan.pool import ImagePool
from dcdgan.steps import Training, generate, pix2pix_update, student_update

TINY = ["model.teacher_ngf=8", "model.student_ngf=4", "model.ndf=8"]


def training(*overrides: str) -> Training:
    cfg = load_config("quickstart", [*TINY, *overrides])
    torch.manual_seed(0)
    nets = build_networks(cfg)
    adam = lambda *mods: torch.optim.Adam([p for m in mods for p in m.parameters() if p.requires_grad], lr=1e-3)  # noqa: E731
    return Training(cfg, Accelerator(cpu=True), nets, opt_disc=adam(nets.disc_b), opt_gen=adam(nets.gen_ab),
                    opt_student=adam(nets.student, nets.projector), taps=dcd_taps(cfg), vgg=None, pixel_weight=10.0,
                    pool_a=ImagePool(0, 1), pool_b=ImagePool(0, 2))


def batch() -> dict:
    torch.manual_seed(1)
    return {"A": torch.rand(2, 1, 32, 32) * 2 - 1, "B": torch.rand(2, 1, 32, 32) * 2 - 1}


def snapshot(net: torch.nn.Module) -> dict:
    return copy.deepcopy(net.state_dict())


def changed(before: dict, net: torch.nn.Module) -> set[str]:
    return {k for k, v in net.state_dict().items() if not torch.equal(v, before[k])}


def test_student_step_leaves_discriminator_and_teacher_unchanged():
    t = training("distill.student_gan_weight=1.0")
    b = batch()
    fake, feats = generate(t, t.nets.gen_ab, b["A"], t.taps.teacher, grad=False)
    disc, teacher, student, projector = (snapshot(n) for n in (t.nets.disc_b, t.nets.gen_ab, t.nets.student, t.nets.projector))
    losses = student_update(t, b["A"], fake, feats)
    assert set(losses) == {"S_pixel", "S_dcd", "S_gan"}  # S_gan is hinge's -mean D(fake): any sign
    assert losses["S_pixel"] > 0 and losses["S_dcd"] > 0
    assert not changed(disc, t.nets.disc_b) and not changed(teacher, t.nets.gen_ab)
    assert all(p.grad is None for p in t.nets.disc_b.parameters())  # frozen during the step, not just zeroed
    assert all(p.requires_grad for p in t.nets.disc_b.parameters())  # and trainable again afterwards
    assert changed(student, t.nets.student)
    moved = changed(projector, t.nets.projector)
    assert moved and all(k.startswith("student.") for k in moved)  # teacher connectors stay at their init
    assert not any(k.startswith("teacher.") and "running" in k for k in moved)


def test_pix2pix_update_trains_disc_and_teacher_but_not_the_student():
    t = training()
    b = batch()
    fake, _ = generate(t, t.nets.gen_ab, b["A"], (), grad=True)
    disc, teacher, student = (snapshot(n) for n in (t.nets.disc_b, t.nets.gen_ab, t.nets.student))
    losses = pix2pix_update(t, b["A"], b["B"], fake)
    assert set(losses) == {"D", "G_gan", "G_L1"}
    assert changed(disc, t.nets.disc_b) and changed(teacher, t.nets.gen_ab) and not changed(student, t.nets.student)
