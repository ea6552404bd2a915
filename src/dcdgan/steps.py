"""One optimisation step of each kind. The loop in ``distill.py`` decides which runs when.

Steps take what they need: the networks, the optimizers, the objective they optimise and an ``Updater``
(backward and optimizer step the way the run trains). They return the loss terms as detached 0-d tensors:
reading them (a device sync) is the loop's decision, made on logging steps only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch import Tensor, nn
from torch.optim import Optimizer

from dcdgan.assembly import Networks
from dcdgan.batching import forward_each
from dcdgan.config import DistillConfig, LossConfig
from dcdgan.losses import dcd_loss, feature_loss, gan_loss_d, gan_loss_g, style_loss
from dcdgan.modes import frozen
from dcdgan.nets import DCDTaps
from dcdgan.perceptual import VGGPerceptual
from dcdgan.pool import ImagePool
from dcdgan.taps import capture
from dcdgan.tasks import Task

Losses = dict[str, Tensor]


@dataclass
class Optimizers:
    """One Adam per group of networks that learns."""

    disc: Optimizer  # disc_b (and disc_a for CycleGAN)
    gen: Optimizer | None  # task generator(s); None when the teacher is pretrained and frozen
    student: Optimizer | None  # student and its DCD connectors; None for method=none
    student_disc: Optimizer | None = None  # the student's own discriminator (distill.student_gan_disc=own)

    def named(self) -> dict[str, Optimizer]:
        """Present optimizers under their checkpoint keys."""
        present = {"disc": self.disc, "gen": self.gen, "student": self.student, "student_disc": self.student_disc}
        return {name: opt for name, opt in present.items() if opt is not None}


@dataclass
class TaskObjective:
    """The task's own loss (pix2pix: conditional GAN + L1; CycleGAN: GAN + cycle + identity on pooled fakes)."""

    task: Task  # which objective, and its facts
    loss: LossConfig
    pool_a: ImagePool
    pool_b: ImagePool


@dataclass
class StudentObjective:
    """What the student learns from: VGG style/feature losses (or their pixel stand-in), DCD, an optional GAN term."""

    weights: DistillConfig
    gan_mode: str
    conditional: bool  # pix2pix: the discriminator reads cat(A, image)
    vgg: VGGPerceptual | None
    pixel_weight: float  # L1 to the teacher output: distill.lambda_pixel, or the weight-free stand-in for the VGG losses
    taps: DCDTaps | None  # None unless method=dcd
    own_pool: ImagePool | None = None  # distill.student_gan_disc=own: past student fakes its discriminator sees (CycleGAN)


class NonFiniteUpdate(RuntimeError):
    """An update's loss was NaN/Inf (skip mode): the update was not applied."""

    def __init__(self, terms: list[str]):
        super().__init__(", ".join(terms))
        self.terms = terms


class Updater:
    """Applies updates the way the run trains: Accelerate's backward (loss scaling, DDP gradient averaging), and in
    ``skip`` mode a finiteness check before anything changes, agreed by all processes."""

    def __init__(self, accelerator: Accelerator, skip_nonfinite: bool = False):
        self.accelerator = accelerator
        self.skip_nonfinite = skip_nonfinite
        self._applied: Losses = {}

    def applied(self) -> Losses:
        """The weighted loss terms of every update since the last call (detached, on the device; no sync)."""
        terms, self._applied = self._applied, {}
        return terms

    def autocast(self):
        """The mixed-precision context for a forward pass (prepared networks carry it already; bare ones need it)."""
        return self.accelerator.autocast()

    def unwrap(self, net: nn.Module) -> nn.Module:
        """The bare module (hooks, frozen reads and state dicts go on it, never on a DDP/compile wrapper)."""
        return self.accelerator.unwrap_model(net, keep_torch_compile=False)

    def __call__(self, optimizer: Optimizer, terms: Losses) -> None:
        """zero_grad, backward of the summed terms (with Accelerate's scaling), step."""
        if self.skip_nonfinite:
            self.check_finite(terms)
        self._applied.update({name: value.detach().float() for name, value in terms.items()})
        optimizer.zero_grad(set_to_none=True)
        self.accelerator.backward(sum(terms.values()))
        optimizer.step()

    def check_finite(self, terms: Losses) -> None:
        """Raise NonFiniteUpdate when any term is NaN/Inf on any process (one sync, one tiny all-reduce)."""
        values = torch.stack([v.detach().float() for v in terms.values()])
        bad = (~torch.isfinite(values)).float()
        if self.accelerator.num_processes > 1:
            bad = self.accelerator.reduce(bad, "sum")
        if bad.any():
            raise NonFiniteUpdate([name for name, flag in zip(terms, bad.tolist()) if flag])


def generate(up: Updater, gen: nn.Module, real_a: Tensor, taps: tuple[str, ...], grad: bool) -> tuple[Tensor, dict[str, Tensor]]:
    """gen(real_a) and the activations at ``taps`` of that forward."""
    with torch.set_grad_enabled(grad), up.autocast(), capture(up.unwrap(gen), list(taps), "teacher generator") as feats:
        out = gen(real_a)
    return out.float(), dict(feats)


def detached(losses: Losses) -> Losses:
    """Loss terms for logging: detached 0-d fp32 tensors (still on the device)."""
    return {name: value.detach().float() for name, value in losses.items()}


# ---------------------------------------------------------------- the step kinds the plan schedules


def joint_step(up: Updater, nets: Networks, opts: Optimizers, task: TaskObjective, student: StudentObjective, batch: dict, update_task: bool) -> Losses:
    """Teacher forward on the batch; maybe a task update; then a student update from the pre-update teacher output."""
    real_a, real_b = batch["A"], batch["B"]
    taps = student.taps.teacher if student.taps else ()
    fake_b, feats = generate(up, nets.teacher, real_a, taps, grad=update_task and opts.gen is not None)
    losses = task_update(up, nets, opts, task, real_a, real_b, fake_b) if update_task else {}
    teacher_feats = {k: v.detach() for k, v in feats.items()}
    return losses | student_update(up, nets, opts.student, student, real_a, real_b, fake_b.detach(), teacher_feats, opts.student_disc)


def task_step(up: Updater, nets: Networks, opts: Optimizers, task: TaskObjective, batch: dict) -> Losses:
    """Task networks only: the burst schedule's teacher epochs, or the whole of method=none."""
    fake_b, _ = generate(up, nets.task_generator, batch["A"], (), grad=opts.gen is not None)
    return task_update(up, nets, opts, task, batch["A"], batch["B"], fake_b)


def burst_student_step(up: Updater, nets: Networks, opts: Optimizers, student: StudentObjective, batch: dict) -> Losses:
    """Student update against the frozen teacher snapshot and the latest discriminator (burst schedule); with a
    discriminator of the student's own, the batch carries B images for it (``DataRoot.train_inputs``)."""
    real_a = batch["A"]
    taps = student.taps.teacher if student.taps else ()
    fake_b, feats = generate(up, nets.snapshot, real_a, taps, grad=False)
    return student_update(up, nets, opts.student, student, real_a, batch.get("B"), fake_b, feats, opts.student_disc)


# ---------------------------------------------------------------- updates


def judge_pair(up: Updater, disc: nn.Module, real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
    """The discriminator's predictions on real and on fake images. One pass over both when its normalisation is per
    image (InstanceNorm, or none): the same numbers as two passes, with half the kernel launches and batch-2 convs,
    which CPUs run faster at batch 1 (benchmarks/RESULTS.md, "Photos: training speed"). A BatchNorm discriminator
    would mix real and fake statistics, so it keeps two passes."""
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in up.unwrap(disc).modules()):
        return disc(real), disc(fake)
    pred = disc(torch.cat([real, fake]))
    return pred[: len(real)], pred[len(real):]


def task_update(up: Updater, nets: Networks, opts: Optimizers, task: TaskObjective, real_a: Tensor, real_b: Tensor, fake_b: Tensor) -> Losses:
    """One update of the task networks with the task's own objective: CycleGAN's when it trains both directions."""
    if task.task.two_way:
        return cyclegan_update(up, nets, opts, task, real_a, real_b, fake_b)
    return pix2pix_update(up, nets.disc_b, opts, task.loss, real_a, real_b, fake_b)


def pix2pix_update(up: Updater, disc: nn.Module, opts: Optimizers, loss: LossConfig, real_a: Tensor, real_b: Tensor, fake_b: Tensor) -> Losses:
    """Discriminator on real vs fake pairs, then the generator: GAN + lambda_recon * L1 (a frozen teacher is skipped)."""
    mode = loss.gan_mode
    loss_d = gan_loss_d(*judge_pair(up, disc, torch.cat([real_a, real_b], 1), torch.cat([real_a, fake_b.detach()], 1)), mode)
    up(opts.disc, {"D": loss_d})
    if opts.gen is None:
        return detached({"D": loss_d})
    bare = up.unwrap(disc)  # frozen reads go around DDP: it would wait for gradients that never come
    with frozen(bare):
        loss_gan = gan_loss_g(bare(torch.cat([real_a, fake_b], 1)).float(), mode)
        loss_l1 = F.l1_loss(fake_b, real_b)
        up(opts.gen, {"G_gan": loss_gan, "G_L1": loss.lambda_recon * loss_l1})
    return detached({"D": loss_d, "G_gan": loss_gan, "G_L1": loss_l1})


def cyclegan_update(up: Updater, nets: Networks, opts: Optimizers, task: TaskObjective, real_a: Tensor, real_b: Tensor, fake_b: Tensor) -> Losses:
    """Both generators (GAN + cycle + identity) with the discriminators frozen, then both discriminators on pooled fakes."""
    c, mode = task.loss, task.loss.gan_mode
    if nets.gen_ba is None:  # pretrained, frozen teacher: only the discriminator of B learns
        loss_d_b = gan_loss_d(*judge_pair(up, nets.disc_b, real_b, task.pool_b.query(fake_b)), mode)
        up(opts.disc, {"D_B": loss_d_b})
        return detached({"D_B": loss_d_b})
    gen_ab, gen_ba = nets.task_generator, nets.gen_ba
    disc_a, disc_b = up.unwrap(nets.disc_a), up.unwrap(nets.disc_b)
    identity_inputs = (real_a, real_b) if c.lambda_identity > 0 else ()
    with frozen(disc_a, disc_b):
        # each generator's passes in one batch (batching.forward_each): gen_ba reads B, the fake B and (identity) A
        fake_a, rec_a, *idt_a = forward_each(gen_ba, up.unwrap(gen_ba), real_b, fake_b, *identity_inputs[:1])
        rec_b, *idt_b = forward_each(gen_ab, up.unwrap(gen_ab), fake_a, *identity_inputs[1:])
        gan_ab = gan_loss_g(disc_b(fake_b).float(), mode)
        gan_ba = gan_loss_g(disc_a(fake_a).float(), mode)
        cycle = F.l1_loss(rec_a, real_a) + F.l1_loss(rec_b, real_b)
        terms = {"G_gan_AB": gan_ab, "G_gan_BA": gan_ba, "G_cycle": c.lambda_cycle * cycle}
        losses = {"G_gan_AB": gan_ab, "G_gan_BA": gan_ba, "G_cycle": cycle}
        if identity_inputs:
            identity = F.l1_loss(idt_b[0], real_b) + F.l1_loss(idt_a[0], real_a)
            terms["G_idt"] = c.lambda_cycle * c.lambda_identity * identity
            losses["G_idt"] = identity
        up(opts.gen, terms)
    loss_d_b = gan_loss_d(*judge_pair(up, nets.disc_b, real_b, task.pool_b.query(fake_b)), mode)
    loss_d_a = gan_loss_d(*judge_pair(up, nets.disc_a, real_a, task.pool_a.query(fake_a)), mode)
    up(opts.disc, {"D_A": loss_d_a, "D_B": loss_d_b})
    return detached(losses | {"D_A": loss_d_a, "D_B": loss_d_b})


def student_update(
    up: Updater,
    nets: Networks,
    opt: Optimizer | None,
    objective: StudentObjective,
    real_a: Tensor,
    real_b: Tensor | None,
    teacher_out: Tensor,
    teacher_feats: dict[str, Tensor],
    own_disc_opt: Optimizer | None = None,
) -> Losses:
    """Student (and its connectors): VGG style + feature to the teacher output, DCD through the frozen discriminator;
    then, with a discriminator of the student's own (``distill.student_gan_disc=own``), that discriminator's update.

    ``real_b`` is read only by the optional L1 to the real target (``distill.lambda_target``, paired data only) and
    by the student's own discriminator (its real images).
    """
    if opt is None:
        return {}
    d = objective.weights
    disc = up.unwrap(nets.disc_b)
    own = up.unwrap(nets.student_disc) if nets.student_disc is not None else None
    judge = own if own is not None else disc  # what the student's GAN term reads
    with frozen(disc, own):
        student_taps = list(objective.taps.student) if objective.taps else []
        with up.autocast(), capture(up.unwrap(nets.student), student_taps, "student generator") as student_feats:
            student_out = nets.student(real_a).float()
        terms: Losses = {}
        if objective.vgg is not None:
            with torch.no_grad(), up.autocast():
                vgg_teacher = objective.vgg(teacher_out)
            with up.autocast():
                vgg_student = objective.vgg(student_out)
            terms["S_style"] = d.lambda_style * style_loss(vgg_student, vgg_teacher)
            terms["S_feat"] = d.lambda_feat * feature_loss(vgg_student[1].float(), vgg_teacher[1].float())
        if objective.pixel_weight > 0:
            terms["S_pixel"] = objective.pixel_weight * F.l1_loss(student_out, teacher_out)
        if d.lambda_target > 0:
            terms["S_target"] = d.lambda_target * F.l1_loss(student_out, real_b)
        if objective.taps is not None:
            with up.autocast():  # the connectors and the discriminator reads are forward passes
                projections = nets.projector(teacher_feats, student_feats)
                terms["S_dcd"] = d.lambda_dcd * dcd_loss(disc, objective.taps.disc, projections).float()
        image = torch.cat([real_a, student_out], 1) if objective.conditional else student_out
        if d.student_gan_weight > 0:
            with up.autocast():
                pred = judge(image)
            terms["S_gan"] = d.student_gan_weight * gan_loss_g(pred.float(), objective.gan_mode)
        if set(terms) == {"S_dcd"} and up.accelerator.num_processes > 1:
            # DCD alone trains the student up to its last tap; DDP needs every output in the graph of the loss
            # (a zero-weighted term gives the layers after it zero gradients, as one process leaves them unchanged)
            terms["S_dcd"] = terms["S_dcd"] + 0.0 * student_out.mean()
        up(opt, terms)
    if own is None:
        return detached(terms)
    # The teacher's discriminator is trained against the teacher's outputs and misses the student's own artifacts;
    # this one learns them, as method=none's discriminator does (benchmarks/RESULTS.md, issue 10's investigation).
    if own_disc_opt is None or real_b is None or objective.own_pool is None:
        raise ValueError("distill.student_gan_disc=own: the student's discriminator needs its optimizer, real B images and an image pool")
    real = torch.cat([real_a, real_b], 1) if objective.conditional else real_b
    loss_d = gan_loss_d(*judge_pair(up, nets.student_disc, real, objective.own_pool.query(image.detach())), objective.gan_mode)
    up(own_disc_opt, {"D_S": loss_d})
    return detached(terms | {"D_S": loss_d})
