"""Single optimisation steps: what each one may and may not change."""

from __future__ import annotations

import copy

import torch
from accelerate import Accelerator

from dcdgan.assembly import build_networks, dcd_taps
from dcdgan.config import load_config
from dcdgan.steps import Optimizers, StudentObjective, Updater, generate, pix2pix_update, student_update

TINY = ["model.teacher_ngf=8", "model.student_ngf=4", "model.ndf=8"]


class Training:
    """The pieces a step takes, built the way distill() builds them (tiny quickstart, pixel stand-in for VGG)."""

    def __init__(self, *overrides: str):
        self.cfg = cfg = load_config("quickstart", [*TINY, *overrides])
        torch.manual_seed(0)
        self.nets = nets = build_networks(cfg)
        adam = lambda *mods: torch.optim.Adam([p for m in mods for p in m.parameters() if p.requires_grad], lr=1e-3)  # noqa: E731
        self.opts = Optimizers(disc=adam(nets.disc_b), gen=adam(nets.teacher), student=adam(nets.student, nets.projector))
        self.up = Updater(Accelerator(cpu=True))
        self.taps = dcd_taps(cfg)
        self.objective = StudentObjective(cfg.distill, cfg.loss.gan_mode, True, vgg=None, pixel_weight=10.0, taps=self.taps)


def training(*overrides: str) -> Training:
    return Training(*overrides)


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
    fake, feats = generate(t.up, t.nets.teacher, b["A"], t.taps.teacher, grad=False)
    disc, teacher, student, projector = (snapshot(n) for n in (t.nets.disc_b, t.nets.teacher, t.nets.student, t.nets.projector))
    losses = student_update(t.up, t.nets, t.opts.student, t.objective, b["A"], fake, feats)
    assert set(losses) == {"S_pixel", "S_dcd", "S_gan"}  # S_gan is hinge's -mean D(fake): any sign
    assert losses["S_pixel"] > 0 and losses["S_dcd"] > 0
    assert not changed(disc, t.nets.disc_b) and not changed(teacher, t.nets.teacher)
    assert all(p.grad is None for p in t.nets.disc_b.parameters())  # frozen during the step, not just zeroed
    assert all(p.requires_grad for p in t.nets.disc_b.parameters())  # and trainable again afterwards
    assert changed(student, t.nets.student)
    moved = changed(projector, t.nets.projector)
    assert moved and all(k.startswith("student.") for k in moved)  # teacher connectors stay at their init
    assert not any(k.startswith("teacher.") and "running" in k for k in moved)


def test_pix2pix_update_trains_disc_and_teacher_but_not_the_student():
    t = training()
    b = batch()
    fake, _ = generate(t.up, t.nets.teacher, b["A"], (), grad=True)
    disc, teacher, student = (snapshot(n) for n in (t.nets.disc_b, t.nets.teacher, t.nets.student))
    losses = pix2pix_update(t.up, t.nets.disc_b, t.opts, t.cfg.loss, b["A"], b["B"], fake)
    assert set(losses) == {"D", "G_gan", "G_L1"}
    assert changed(disc, t.nets.disc_b) and changed(teacher, t.nets.teacher) and not changed(student, t.nets.student)
