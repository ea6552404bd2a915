"""DCD connectors: project generator feature maps to image-like tensors the discriminator can read."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from dcdgan.errors import UserError
from dcdgan.nets.generators import init_weights


@dataclass(frozen=True)
class DCDTaps:
    """Which generator layers are distilled (paired by position) and which discriminator layer reads them."""

    teacher: tuple[str, ...]
    student: tuple[str, ...]
    disc: str
    min_size: int  # projections smaller than this are upsampled so the discriminator sees a non-empty map

    def pairs(self) -> list[tuple[str, str]]:
        """(teacher tap, student tap) pairs, in configured order."""
        return list(zip(self.teacher, self.student, strict=True))


def connector(in_channels: int, out_channels: int) -> nn.Sequential:
    """Conv 1x1 (no bias) -> BatchNorm2d -> ReLU, as in the DCD reference (spec section 2)."""
    net = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU(True))
    init_weights(net)
    return net


def tap_key(tap: str) -> str:
    """ModuleDict-safe key for a module path (``model.9`` -> ``model_9``)."""
    return tap.replace(".", "_")


def upsample_to(x: Tensor, min_size: int) -> Tensor:
    """Bilinearly enlarge ``x`` so its shorter side is at least ``min_size``; leave it alone otherwise."""
    h, w = x.shape[-2:]
    if min(h, w) >= min_size:
        return x
    scale = min_size / min(h, w)
    return F.interpolate(x, size=(round(h * scale), round(w * scale)), mode="bilinear", align_corners=False)


class DCDProjector(nn.Module):
    """One teacher and one student connector per tap pair, keyed by the teacher tap.

    A single module, so a DDP wrapper sees (and synchronises) the student connectors' gradients.
    Teacher connectors are frozen at their random init, in eval mode, unless ``train_teacher``.
    """

    def __init__(self, taps: DCDTaps, teacher_channels: dict[str, int], student_channels: dict[str, int], out_channels: int, train_teacher: bool = False):
        super().__init__()
        self.taps = taps
        self.train_teacher = train_teacher
        self.teacher = nn.ModuleDict({tap_key(t): connector(teacher_channels[t], out_channels) for t, _ in taps.pairs()})
        self.student = nn.ModuleDict({tap_key(t): connector(student_channels[s], out_channels) for t, s in taps.pairs()})
        if not train_teacher:
            self.teacher.requires_grad_(False)
        self.train()

    def train(self, mode: bool = True) -> "DCDProjector":
        super().train(mode)
        if not self.train_teacher:
            self.teacher.eval()
        return self

    def forward(self, teacher_features: dict[str, Tensor], student_features: dict[str, Tensor]) -> list[tuple[str, Tensor, Tensor]]:
        """[(teacher tap, P_T, P_S)]: teacher features detached, both upsampled to ``taps.min_size`` if smaller."""
        out = []
        for t_tap, s_tap in self.taps.pairs():
            p_t = upsample_to(self.teacher[tap_key(t_tap)](teacher_features[t_tap].detach()), self.taps.min_size)
            p_s = upsample_to(self.student[tap_key(t_tap)](student_features[s_tap]), self.taps.min_size)
            if p_t.shape != p_s.shape:
                raise UserError(
                    f"DCD: teacher tap {t_tap} gives a {tuple(p_t.shape[-2:])} map but student tap {s_tap} a "
                    f"{tuple(p_s.shape[-2:])} one; paired taps need the same spatial size"
                )
            out.append((t_tap, p_t, p_s))
        return out
