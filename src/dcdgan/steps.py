"""One optimisation step of each kind. The loop in ``distill.py`` decides which runs when."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch import Tensor, nn
from torch.optim import Optimizer

from dcdgan.config import Config
from dcdgan.losses import dcd_loss, feature_loss, gan_loss_d, gan_loss_g, style_loss
from dcdgan.nets import DCDTaps
from dcdgan.networks import Networks
from dcdgan.perceptual import VGGPerceptual
from dcdgan.pool import ImagePool
from dcdgan.taps import capture


@dataclass
class Training:
    """What a step needs: config, accelerator, (prepared) networks, optimizers and loss helpers."""

    cfg: Config
    accelerator: Accelerator
    nets: Networks
    opt_disc: Optimizer
    opt_gen: Optimizer | None  # None: the teacher is pretrained and frozen
    opt_student: Optimizer | None  # None: method=none
    taps: DCDTaps | None  # None unless method=dcd
    vgg: VGGPerceptual | None
    pixel_weight: float  # L1 to the teacher output: distill.lambda_pixel, or the weight-free stand-in for the VGG losses
    pool_a: ImagePool | None = None
    pool_b: ImagePool | None = None

    def unwrap(self, net: nn.Module) -> nn.Module:
        """The bare module (hooks and state dicts go on it, never on a DDP/compile wrapper)."""
        return self.accelerator.unwrap_model(net)


@contextmanager
def frozen(*nets: nn.Module | None) -> Iterator[None]:
    """No gradients reach these networks inside the block; each parameter's previous flag is restored after."""
    params = [p for n in nets if n is not None for p in n.parameters()]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


def step(optimizer: Optimizer, loss: Tensor, accelerator: Accelerator) -> None:
    """zero_grad, backward (with Accelerate's scaling), step."""
    optimizer.zero_grad(set_to_none=True)
    accelerator.backward(loss)
    optimizer.step()


def conditional(cfg: Config, real_a: Tensor, image: Tensor) -> Tensor:
    """Discriminator input: cat(A, image) for the conditional pix2pix D, the image alone for CycleGAN."""
    return torch.cat([real_a, image], 1) if cfg.task == "pix2pix" else image


def generate(t: Training, gen: nn.Module, real_a: Tensor, taps: tuple[str, ...], grad: bool) -> tuple[Tensor, dict[str, Tensor]]:
    """gen(real_a) and the activations at ``taps`` of that forward."""
    with torch.set_grad_enabled(grad), capture(t.unwrap(gen), list(taps), "teacher generator") as feats:
        out = gen(real_a)
    return out, dict(feats)


# ---------------------------------------------------------------- the step kinds the plan schedules


def joint_step(t: Training, batch: dict, update_task: bool) -> dict[str, float]:
    """Teacher forward on the batch; maybe a task update; then a student update from the pre-update teacher output."""
    real_a, real_b = batch["A"], batch["B"]
    taps = t.taps.teacher if t.taps else ()
    fake_b, feats = generate(t, t.nets.gen_ab, real_a, taps, grad=update_task and t.opt_gen is not None)
    losses = task_update(t, real_a, real_b, fake_b) if update_task else {}
    return losses | student_update(t, real_a, fake_b.detach(), {k: v.detach() for k, v in feats.items()})


def task_step(t: Training, batch: dict) -> dict[str, float]:
    """Task networks only: the burst schedule's teacher epochs, or the whole of method=none."""
    fake_b, _ = generate(t, t.nets.gen_ab, batch["A"], (), grad=t.opt_gen is not None)
    return task_update(t, batch["A"], batch["B"], fake_b)


def burst_student_step(t: Training, batch: dict) -> dict[str, float]:
    """Student update against the frozen teacher snapshot and the latest discriminator (burst schedule)."""
    real_a = batch["A"]
    taps = t.taps.teacher if t.taps else ()
    fake_b, feats = generate(t, t.nets.snapshot, real_a, taps, grad=False)
    return student_update(t, real_a, fake_b, feats)


# ---------------------------------------------------------------- updates


def task_update(t: Training, real_a: Tensor, real_b: Tensor, fake_b: Tensor) -> dict[str, float]:
    """One update of the task networks with the task's own objective."""
    if t.cfg.task == "pix2pix":
        return pix2pix_update(t, real_a, real_b, fake_b)
    return cyclegan_update(t, real_a, real_b, fake_b)


def pix2pix_update(t: Training, real_a: Tensor, real_b: Tensor, fake_b: Tensor) -> dict[str, float]:
    """Discriminator on real vs fake pairs, then the generator: GAN + lambda_recon * L1 (a frozen teacher is skipped)."""
    nets, cfg = t.nets, t.cfg
    mode = cfg.loss.gan_mode
    loss_d = gan_loss_d(nets.disc_b(torch.cat([real_a, real_b], 1)), nets.disc_b(torch.cat([real_a, fake_b.detach()], 1)), mode)
    step(t.opt_disc, loss_d, t.accelerator)
    losses = {"D": loss_d.item()}
    if t.opt_gen is None:
        return losses
    with frozen(nets.disc_b):
        loss_gan = gan_loss_g(nets.disc_b(torch.cat([real_a, fake_b], 1)), mode)
        loss_l1 = F.l1_loss(fake_b, real_b)
        step(t.opt_gen, loss_gan + cfg.loss.lambda_recon * loss_l1, t.accelerator)
    return losses | {"G_gan": loss_gan.item(), "G_L1": loss_l1.item()}


def cyclegan_update(t: Training, real_a: Tensor, real_b: Tensor, fake_b: Tensor) -> dict[str, float]:
    """Both generators (GAN + cycle + identity) with the discriminators frozen, then both discriminators on pooled fakes."""
    nets, c = t.nets, t.cfg.loss
    mode = c.gan_mode
    if nets.gen_ba is None:  # pretrained, frozen teacher: only the discriminator of B learns
        loss_d_b = gan_loss_d(nets.disc_b(real_b), nets.disc_b(t.pool_b.query(fake_b)), mode)
        step(t.opt_disc, loss_d_b, t.accelerator)
        return {"D_B": loss_d_b.item()}
    with frozen(nets.disc_a, nets.disc_b):
        fake_a = nets.gen_ba(real_b)
        gan_ab = gan_loss_g(nets.disc_b(fake_b), mode)
        gan_ba = gan_loss_g(nets.disc_a(fake_a), mode)
        cycle = F.l1_loss(nets.gen_ba(fake_b), real_a) + F.l1_loss(nets.gen_ab(fake_a), real_b)
        loss_g = gan_ab + gan_ba + c.lambda_cycle * cycle
        losses = {"G_gan_AB": gan_ab.item(), "G_gan_BA": gan_ba.item(), "G_cycle": cycle.item()}
        if c.lambda_identity > 0:
            identity = F.l1_loss(nets.gen_ab(real_b), real_b) + F.l1_loss(nets.gen_ba(real_a), real_a)
            loss_g = loss_g + c.lambda_cycle * c.lambda_identity * identity
            losses["G_idt"] = identity.item()
        step(t.opt_gen, loss_g, t.accelerator)
    loss_d_b = gan_loss_d(nets.disc_b(real_b), nets.disc_b(t.pool_b.query(fake_b)), mode)
    loss_d_a = gan_loss_d(nets.disc_a(real_a), nets.disc_a(t.pool_a.query(fake_a)), mode)
    step(t.opt_disc, loss_d_a + loss_d_b, t.accelerator)
    return losses | {"D_A": loss_d_a.item(), "D_B": loss_d_b.item()}


def student_update(t: Training, real_a: Tensor, teacher_out: Tensor, teacher_feats: dict[str, Tensor]) -> dict[str, float]:
    """Student (and its connectors): VGG style + feature to the teacher output, DCD through the frozen discriminator."""
    nets, d = t.nets, t.cfg.distill
    if t.opt_student is None:
        return {}
    with frozen(nets.disc_b), t.accelerator.autocast():
        student_taps = list(t.taps.student) if t.taps else []
        with capture(t.unwrap(nets.student), student_taps, "student generator") as student_feats:
            student_out = nets.student(real_a)
        terms: dict[str, Tensor] = {}
        if t.vgg is not None:
            with torch.no_grad():
                vgg_teacher = t.vgg(teacher_out)
            vgg_student = t.vgg(student_out)
            terms["style"] = d.lambda_style * style_loss(vgg_student, vgg_teacher)
            terms["feat"] = d.lambda_feat * feature_loss(vgg_student[1], vgg_teacher[1])
        if t.pixel_weight > 0:
            terms["pixel"] = t.pixel_weight * F.l1_loss(student_out, teacher_out)
        if t.taps is not None:
            projections = nets.projector(teacher_feats, student_feats)
            terms["dcd"] = d.lambda_dcd * dcd_loss(t.unwrap(nets.disc_b), t.taps.disc, projections)
        if d.student_gan_weight > 0:
            pred = nets.disc_b(conditional(t.cfg, real_a, student_out))
            terms["gan"] = d.student_gan_weight * gan_loss_g(pred, t.cfg.loss.gan_mode)
        step(t.opt_student, sum(terms.values()), t.accelerator)
    return {f"S_{name}": value.item() for name, value in terms.items()}
