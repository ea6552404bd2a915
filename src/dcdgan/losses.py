"""Loss functions: GAN objectives, Gram/feature (VGG) losses and the DCD loss. No file, config or CLI knowledge here."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dcdgan.taps import forward_until

GAN_MODES = ("lsgan", "vanilla", "hinge")


def gan_loss_d(real_pred: Tensor, fake_pred: Tensor, mode: str) -> Tensor:
    """Discriminator loss, 0.5 * (real + fake) as in pix2pix/CycleGAN."""
    if mode == "lsgan":
        real = F.mse_loss(real_pred, torch.ones_like(real_pred))
        fake = F.mse_loss(fake_pred, torch.zeros_like(fake_pred))
    elif mode == "vanilla":
        real = F.binary_cross_entropy_with_logits(real_pred, torch.ones_like(real_pred))
        fake = F.binary_cross_entropy_with_logits(fake_pred, torch.zeros_like(fake_pred))
    elif mode == "hinge":
        real = F.relu(1.0 - real_pred).mean()
        fake = F.relu(1.0 + fake_pred).mean()
    else:
        raise ValueError(f"unknown GAN mode {mode!r}; choose one of {', '.join(GAN_MODES)}")
    return 0.5 * (real + fake)


def gan_loss_g(fake_pred: Tensor, mode: str) -> Tensor:
    """Generator loss: make the discriminator call fakes real."""
    if mode == "lsgan":
        return F.mse_loss(fake_pred, torch.ones_like(fake_pred))
    if mode == "vanilla":
        return F.binary_cross_entropy_with_logits(fake_pred, torch.ones_like(fake_pred))
    if mode == "hinge":
        return -fake_pred.mean()
    raise ValueError(f"unknown GAN mode {mode!r}; choose one of {', '.join(GAN_MODES)}")


def gram(features: Tensor) -> Tensor:
    """Per-sample Gram matrix F F^T / (C H W), computed in fp32 whatever the input dtype or autocast state.

    Raw F F^T entries of VGG16 activations at 256 px reach 1e5 (relu1_2) to 1.6e5 (relu2_2), above fp16's
    65504: under fp16 autocast the product would be inf and the style loss NaN. Dividing before the product
    would only move the problem (precision instead of range), so the whole matrix is fp32.
    """
    b, c, h, w = features.shape
    with torch.autocast(features.device.type, enabled=False):
        flat = features.float().reshape(b, c, h * w)
        return torch.bmm(flat, flat.transpose(1, 2)) / (c * h * w)


def style_loss(student: list[Tensor], teacher: list[Tensor]) -> Tensor:
    """Sum over VGG taps of mean |Gram(student) - Gram(teacher)|, in fp32 (see ``gram``)."""
    with torch.autocast(student[0].device.type, enabled=False):
        return sum((gram(s) - gram(t)).abs().mean() for s, t in zip(student, teacher, strict=True))


def feature_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """Mean |student - teacher| on one VGG tap (relu2_2 in OMGD/DCD), accumulated in fp32."""
    return (student.float() - teacher.float()).abs().mean()


def disc_view(disc: nn.Module, tap: str, projection: Tensor, source: str) -> Tensor:
    """The discriminator's activation at ``tap`` for a projected feature map; refuses an empty map."""
    try:
        phi = forward_until(disc, tap, projection, "discriminator")
    except (RuntimeError, ValueError) as err:  # conv kernels or norms that no longer fit the shrinking map
        if "size" not in str(err).lower() and "spatial" not in str(err).lower():
            raise
        raise ValueError(
            f"DCD: the discriminator cannot read the {tuple(projection.shape[-2:])} projection of {source} before "
            f"reaching {tap}; raise distill.dcd_min_size or train on larger crops"
        ) from None
    if phi.numel() == 0:
        raise ValueError(
            f"DCD: the discriminator's {tap} map is empty for the {tuple(projection.shape[-2:])} projection of {source}; "
            "raise distill.dcd_min_size or train on larger crops"
        )
    return phi


def dcd_loss(disc: nn.Module, disc_tap: str, projections: list[tuple[str, Tensor, Tensor]]) -> Tensor:
    """L_DCD = sum over tap pairs of mean |phi(P_T) - phi(P_S)|, phi = the discriminator's activation at ``disc_tap``.

    ``projections`` come from ``DCDProjector``. The caller keeps the discriminator frozen while this loss is
    backpropagated, so it trains the student and its connectors only (the teacher side is detached).

    The taps go through the discriminator in one pass per side: projections of the same shape are
    concatenated along the batch (taps of different spatial sizes form one group, and one pass, per size),
    and the teacher side runs without autograd unless its connectors train. That equals one pass per
    projection because the PatchGAN normalises every sample on its own (InstanceNorm); a discriminator
    that normalises with batch statistics mixes samples, so it gets one pass per projection instead.
    """
    if mixes_samples(disc):
        return dcd_loss_per_tap(disc, disc_tap, projections)
    groups: dict[tuple, list[tuple[str, Tensor, Tensor]]] = {}
    for item in projections:
        groups.setdefault(tuple(item[1].shape), []).append(item)
    total = projections[0][1].new_zeros((), dtype=torch.float32)
    for group in groups.values():
        names = ", ".join(tap for tap, _, _ in group)
        p_t = torch.cat([p for _, p, _ in group])
        p_s = torch.cat([p for _, _, p in group])
        with torch.set_grad_enabled(torch.is_grad_enabled() and p_t.requires_grad):
            phi_t = disc_view(disc, disc_tap, p_t, f"teacher taps {names}")
        phi_s = disc_view(disc, disc_tap, p_s, f"student taps {names}")
        # rows of the batch are tap-major (cat order), so each tap's mean is the mean of its own chunk
        total = total + (phi_t - phi_s).abs().float().reshape(len(group), -1).mean(dim=1).sum()
    return total


def dcd_loss_per_tap(disc: nn.Module, disc_tap: str, projections: list[tuple[str, Tensor, Tensor]]) -> Tensor:
    """The DCD loss by its definition, two discriminator passes per tap pair (reference for ``dcd_loss``)."""
    total = projections[0][1].new_zeros((), dtype=torch.float32)
    for tap, p_t, p_s in projections:
        phi_t = disc_view(disc, disc_tap, p_t, f"teacher tap {tap}")
        phi_s = disc_view(disc, disc_tap, p_s, f"student tap {tap}")
        total = total + (phi_t - phi_s).abs().float().mean()
    return total


def mixes_samples(net: nn.Module) -> bool:
    """Whether ``net`` normalises with statistics of the whole batch (BatchNorm in training mode or without running stats)."""
    return any(
        isinstance(m, (nn.BatchNorm2d, nn.SyncBatchNorm)) and (m.training or not m.track_running_stats) for m in net.modules()
    )
