"""The networks of a run, built from its config (the assembly; the architectures themselves live in ``nets/``).

Distillation (omgd, dcd): the task networks (teacher generator(s) and discriminator(s)) train with the
task objective while the student learns from them. ``method: none`` builds the task networks at the
student's size and trains them alone: that A->B generator is the baseline, the run's deliverable.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from dcdgan.checkpoint import load_checkpoint, load_network_state
from dcdgan.config import Config, DataConfig, DistillConfig, ModelConfig, burst_plan, config_from_dict, pretrained_teacher, student_owns_disc
from dcdgan.errors import UserError
from dcdgan.losses import dcd_loss
from dcdgan.modes import eval_mode
from dcdgan.nets import DCDProjector, DCDTaps, GeneratorSpec, build_discriminator, build_generator
from dcdgan.taps import capture, tap_channels
from dcdgan.tasks import TASKS
from dcdgan.weights import load_state_into, load_weights_into


@dataclass
class Networks:
    """Every network of a run; each field means one thing, absent ones are None."""

    disc_b: nn.Module  # judges B images (conditioned on A for pix2pix); the DCD discriminator
    teacher: nn.Module | None = None  # A->B teacher generator (omgd/dcd); frozen when pretrained
    baseline: nn.Module | None = None  # method=none: the student-sized A->B generator trained alone on the task losses
    student: nn.Module | None = None  # the distilled A->B student (omgd/dcd)
    gen_ba: nn.Module | None = None  # CycleGAN B->A generator, trained beside the A->B one (absent with a pretrained teacher)
    disc_a: nn.Module | None = None  # CycleGAN: judges A images
    projector: DCDProjector | None = None  # DCD connectors, teacher and student side
    snapshot: nn.Module | None = None  # burst schedule: the frozen teacher copy the student learns from
    student_disc: nn.Module | None = None  # distill.student_gan_disc=own: judges the student's B images, trained on them

    @property
    def task_generator(self) -> nn.Module:
        """The A->B generator the task objective trains: the teacher, or the baseline when method=none."""
        return self.teacher if self.teacher is not None else self.baseline

    @property
    def deliverable(self) -> nn.Module:
        """The compressed generator this run produces: the student, or the baseline when method=none."""
        return self.student if self.student is not None else self.baseline

    def named(self) -> dict[str, nn.Module]:
        """Present networks under their checkpoint keys ("gen_ab" is the task generator: teacher or baseline)."""
        names = {"teacher": "gen_ab", "baseline": "gen_ab"}
        return {names.get(f.name, f.name): getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def map(self, fn: Callable[[nn.Module], nn.Module]) -> "Networks":
        """A copy with ``fn`` applied to every present network (device placement, DDP wrapping)."""
        return replace(self, **{f.name: fn(getattr(self, f.name)) for f in fields(self) if getattr(self, f.name) is not None})


def teacher_spec(cfg: Config) -> GeneratorSpec:
    """Architecture of the A->B task generator (student-sized when method=none). Takes the whole Config: it reads
    model, data and distill."""
    m, d = cfg.model, cfg.data
    if cfg.distill.method == "none":
        return student_spec(cfg.model, cfg.data)
    return GeneratorSpec(m.teacher_netG, m.teacher_ngf, d.input_nc, d.output_nc, m.teacher_dropout, m.teacher_norm)


def student_spec(m: ModelConfig, d: DataConfig) -> GeneratorSpec:
    """Architecture of the student generator."""
    return GeneratorSpec(m.student_netG, m.student_ngf, d.input_nc, d.output_nc, m.student_dropout, m.student_norm)


def dcd_taps(d: DistillConfig) -> DCDTaps:
    """The configured tap pairing."""
    return DCDTaps(tuple(d.teacher_taps), tuple(d.student_taps or d.teacher_taps), d.disc_tap, d.dcd_min_size)


def uses_dcd(d: DistillConfig) -> bool:
    """Whether the DCD loss is part of the student objective."""
    return d.method == "dcd"


def build_networks(cfg: Config) -> Networks:
    """Initialised networks on CPU (seed first for reproducible weights). Takes the whole Config: it reads the task,
    model, data and distill."""
    m, d, task = cfg.model, cfg.data, TASKS[cfg.task]
    disc_nc = task.disc_channels(d.input_nc, d.output_nc)
    task_gen = build_generator(teacher_spec(cfg))
    nets = Networks(disc_b=build_discriminator(disc_nc, m.ndf, m.n_layers_D))
    if cfg.distill.method == "none":
        nets.baseline = task_gen
    else:
        nets.teacher = task_gen
    if pretrained_teacher(cfg.model, cfg.distill):
        load_weights_into(task_gen, m.teacher_weights)
        task_gen.eval().requires_grad_(False)
        if m.teacher_disc_weights:  # it keeps training, against the frozen teacher's outputs
            load_teacher_discriminator(nets.disc_b, Path(m.teacher_disc_weights))
    elif task.two_way:
        ba = dataclasses.replace(teacher_spec(cfg), input_nc=d.output_nc, output_nc=d.input_nc)
        nets.gen_ba = build_generator(ba)
        nets.disc_a = build_discriminator(d.input_nc, m.ndf, m.n_layers_D)
    if cfg.distill.method == "none":
        return nets
    nets.student = build_generator(student_spec(cfg.model, cfg.data))
    check_generator_geometry(cfg.data, nets)
    if uses_dcd(cfg.distill):
        taps = dcd_taps(cfg.distill)
        shape = (1, d.input_nc, d.crop_size, d.crop_size)
        t_ch = tap_channels(nets.teacher, list(taps.teacher), shape, "teacher generator")
        s_ch = tap_channels(nets.student, list(taps.student), shape, "student generator")
        # Reference CycleGAN keeps the teacher projections at their random init (train_teacher_connectors=false).
        nets.projector = DCDProjector(taps, t_ch, s_ch, disc_nc, cfg.distill.train_teacher_connectors)
        check_dcd_geometry(d, taps, nets)
    if student_owns_disc(cfg.distill):  # the same architecture as disc_b, its own weights
        nets.student_disc = build_discriminator(disc_nc, m.ndf, m.n_layers_D)
    if burst_plan(cfg.model, cfg.distill):
        nets.snapshot = build_generator(teacher_spec(cfg)).eval().requires_grad_(False)
        nets.snapshot.load_state_dict(task_gen.state_dict())
    return nets


def cyclegan_name_notices(m: ModelConfig, data: DataConfig) -> list[str]:
    """One line per pretrained file whose public CycleGAN name says it belongs to the other direction.

    In the public code ``netD_A`` judges ``G_A(A)`` against real B and ``netD_B`` judges A; the two discriminators
    (and the two generators) have the same keys, so the wrong one would load without an error.
    """
    ours, other = ("A", "B") if data.direction == "AtoB" else ("B", "A")
    arrow = "A->B" if data.direction == "AtoB" else "B->A (data.direction=BtoA)"
    lines = []
    if m.teacher_disc_weights and f"net_D_{other}" in Path(m.teacher_disc_weights).name:
        lines.append(
            f"notice: model.teacher_disc_weights={m.teacher_disc_weights}: CycleGAN's D_{other} judges domain {ours} images, not the "
            f"outputs of the {arrow} teacher; their discriminator is latest_net_D_{ours}.pth"
        )
    if m.teacher_weights and f"net_G_{other}" in Path(m.teacher_weights).name:
        lines.append(
            f"notice: model.teacher_weights={m.teacher_weights}: CycleGAN's G_{other} translates the other way; the {arrow} "
            f"teacher is latest_net_G_{ours}.pth"
        )
    return lines


def load_teacher_discriminator(disc: nn.Module, path: Path) -> None:
    """Start ``disc`` from a state dict file, or from the discriminator of B in a dcdgan checkpoint (.ckpt)."""
    if path.suffix != ".ckpt":
        load_weights_into(disc, path, "discriminator")
        return
    networks = load_checkpoint(path).get("networks", {})
    if "disc_b" not in networks:
        raise UserError(f"{path}: the checkpoint holds no discriminator of B")
    load_state_into(disc, networks["disc_b"], path, "discriminator")


def check_generator_geometry(data: DataConfig, nets: Networks) -> None:
    """Generators must return images of the input's size (pix2pix/U-Net need multiples of 4 / 2^depth)."""
    size = data.crop_size
    x = torch.zeros(1, data.input_nc, size, size)
    for name, net in (("teacher", nets.teacher), ("student", nets.student)):
        try:
            with torch.no_grad(), eval_mode(net):
                out = net(x)
        except RuntimeError as err:
            raise UserError(f"data.crop_size={size}: the {name} generator cannot run at this size ({str(err).splitlines()[0][:100]})") from None
        if out.shape[-2:] != x.shape[-2:]:
            raise UserError(f"data.crop_size={size}: the {name} generator returns {tuple(out.shape[-2:])}; use a multiple of 4 (of 256 for unet_256, 128 for unet_128)")


def check_dcd_geometry(data: DataConfig, taps: DCDTaps, nets: Networks) -> None:
    """Run the DCD loss once on zeros so an impossible tap/size setting fails now, with a clear message."""
    size = data.crop_size
    x = torch.zeros(1, data.input_nc, size, size)
    with torch.no_grad(), eval_mode(nets.teacher, nets.student, nets.disc_b, nets.projector):
        with capture(nets.teacher, list(taps.teacher), "teacher generator") as t_feats:
            nets.teacher(x)
        with capture(nets.student, list(taps.student), "student generator") as s_feats:
            nets.student(x)
        try:
            dcd_loss(nets.disc_b, taps.disc, nets.projector(t_feats, s_feats))
        except ValueError as err:
            raise UserError(f"{err} (data.crop_size={size})") from None


def generator_from_checkpoint(state: dict, role: str) -> nn.Module:
    """The teacher (gen_ab) or student generator stored in a checkpoint, in eval mode."""
    cfg = config_from_dict(state["config"])
    if role == "teacher":
        net, key = build_generator(teacher_spec(cfg)), "gen_ab"
    else:
        net, key = build_generator(student_spec(cfg.model, cfg.data)), "student" if "student" in state["networks"] else "gen_ab"
    load_network_state(net, state["networks"][key], "checkpoint", key)
    return net.eval()
