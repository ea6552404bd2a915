"""Several forward passes of one network as one pass over the concatenated batch, when that gives the same numbers.

At one CPU thread a batch-3 convolution costs less than three batch-1 ones (fewer kernel launches, weight gradients
accumulated once), so CycleGAN's generator passes run together (benchmarks/RESULTS.md, "Photos": training speed).
The numbers are those of separate passes, up to float reordering, only when the network treats every image on
its own: no batch statistics, no random draws whose values differ per image.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def per_image(net: nn.Module) -> bool:
    """Whether ``net`` (in its current mode) computes each image of a batch independently of the others and of how
    they are grouped: no BatchNorm that uses or updates batch statistics, no norm with running statistics being
    updated, no active dropout (``Dropout(0)`` keeps every value and qualifies)."""
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and (m.training or not m.track_running_stats):
            return False
        if isinstance(m, nn.modules.instancenorm._InstanceNorm) and m.training and m.track_running_stats:
            return False  # running statistics would be updated once per group, not once per pass
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.training and m.p > 0:
            return False  # one mask for the group draws other random numbers than one mask per pass
    return True


def forward_each(net: nn.Module, bare: nn.Module, *inputs: Tensor) -> list[Tensor]:
    """``[net(x) for x in inputs]``, computed in one pass over ``torch.cat(inputs)`` when ``bare`` (the unwrapped
    ``net``, where its modules are read) is ``per_image``; otherwise one pass each, in order."""
    if len(inputs) < 2 or not per_image(bare):
        return [net(x) for x in inputs]
    out = net(torch.cat(inputs))
    return list(out.split([len(x) for x in inputs]))
