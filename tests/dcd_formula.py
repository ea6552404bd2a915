"""L_DCD written out from the spec (docs/dcd-method.md, section 2) with plain torch ops, for tests to compare against.

Nothing here calls dcdgan's loss, connectors or tap capture: features come from forward hooks set here, the
connectors (1x1 conv without bias, BatchNorm, ReLU) are applied from their parameters by hand, and the
discriminator is run up to its tap as a slice of its ``model`` Sequential.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def tap_outputs(net: nn.Module, names, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``net(x)`` and the output of each named submodule, cloned as produced (a later in-place op cannot change it)."""
    feats = {}
    hooks = [net.get_submodule(n).register_forward_hook(lambda m, i, o, n=n: feats.__setitem__(n, o.clone())) for n in names]
    try:
        out = net(x)
    finally:
        for h in hooks:
            h.remove()
    return out, feats


def connector_by_hand(conn: nn.Sequential, f: torch.Tensor, min_size: int) -> torch.Tensor:
    """relu(BN(W * f)) from the connector's parameters (batch statistics, biased variance, in training mode; the
    running ones in eval mode), bilinearly upsampled to ``min_size`` when smaller (square maps)."""
    conv, bn = conn[0], conn[1]
    y = F.conv2d(f, conv.weight)
    if bn.training:
        mean, var = y.mean((0, 2, 3), keepdim=True), y.var((0, 2, 3), unbiased=False, keepdim=True)
    else:
        mean, var = bn.running_mean.view(1, -1, 1, 1), bn.running_var.view(1, -1, 1, 1)
    y = torch.relu((y - mean) / torch.sqrt(var + bn.eps) * bn.weight.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1))
    if min(y.shape[-2:]) < min_size:
        y = F.interpolate(y, size=(min_size, min_size), mode="bilinear", align_corners=False)
    return y


def dcd_by_hand(disc: nn.Module, disc_tap: str, projector: nn.Module, teacher_feats: dict, student_feats: dict, pairs, min_size: int) -> torch.Tensor:
    """sum over (teacher tap, student tap) pairs of mean |phi(P_T) - phi(P_S)|, phi the discriminator up to and
    including ``disc_tap`` (``model.10`` -> ``disc.model[:11]``); the teacher side detached. A tensor, so tests
    can take its gradient."""
    phi = disc.model[: int(disc_tap.split(".")[1]) + 1]
    total = torch.zeros(())
    for t_tap, s_tap in pairs:
        key = t_tap.replace(".", "_")
        p_t = connector_by_hand(projector.teacher[key], teacher_feats[t_tap].detach(), min_size)
        p_s = connector_by_hand(projector.student[key], student_feats[s_tap], min_size)
        total = total + (phi(p_t) - phi(p_s)).abs().mean()
    return total
