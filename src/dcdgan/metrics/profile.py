"""Parameter and MAC counts, in the convention the GAN-compression literature reports.

Papers (GAN Compression, OMGD, DCD) count MACs with torchprofile. torchprofile works by TorchScript
tracing, which PyTorch has deprecated, so we count with PyTorch's own ``FlopCounterMode`` and give it
torchprofile's formulas (tests check both agree):
- a convolution costs output elements x (input channels / groups) x kernel area, transposed ones
  included. For a stride-2 transposed conv this is 4x its true multiply count; it is the published convention.
- an affine normalisation (BatchNorm, affine InstanceNorm) costs one MAC per output element.
- matrix products cost their multiply count; activations, pads, pooling and non-affine norms cost nothing.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

aten = torch.ops.aten


def _conv_flops(x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed, _output_padding=None, groups=1, *args, out_shape=None, **kwargs) -> int:
    # FlopCounterMode reports FLOPs (2 per MAC); return 2x the torchprofile MAC count.
    in_per_group = x_shape[1] // groups
    return 2 * math.prod(out_shape) * in_per_group * math.prod(w_shape[2:])


def _affine_norm_flops(x_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:
    return 0 if weight_shape is None else 2 * math.prod(x_shape)


_TORCHPROFILE_FORMULAS = {
    aten.convolution: _conv_flops,
    aten._convolution: _conv_flops,
    aten.cudnn_batch_norm: _affine_norm_flops,
    aten.native_batch_norm: _affine_norm_flops,
    aten._native_batch_norm_legit: _affine_norm_flops,
    aten._native_batch_norm_legit_no_training: _affine_norm_flops,
}


def count_params(net: nn.Module) -> int:
    """Number of parameters (buffers excluded)."""
    return sum(p.numel() for p in net.parameters())


@torch.no_grad()
def count_macs(net: nn.Module, input_shape: tuple[int, ...]) -> int:
    """MACs of one forward pass on a zero tensor of ``input_shape`` (batch included), torchprofile convention."""
    param = next(net.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = net.training
    net.eval()  # BatchNorm in eval mode, as torchprofile-based scripts profile
    try:
        with FlopCounterMode(display=False, custom_mapping=_TORCHPROFILE_FORMULAS) as counter:
            net(torch.zeros(input_shape, device=device))
    finally:
        net.train(was_training)
    return counter.get_total_flops() // 2
