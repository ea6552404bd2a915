"""The inference form of a generator: the same function, arranged to run faster on deployment backends.

A ResNet generator ends in a 7x7 convolution to 3 (or 1) output channels at full resolution. With so few output
channels the vectorised kernels of oneDNN (OpenVINO, PyTorch CPU) and ONNX Runtime fill a fraction of each
register: in the OpenVINO profile of the ngf-16 student at 256 px this one conv took 36% of the time for 11% of
the multiply-adds. The phase-split form computes it as one stride-4 convolution whose 16 output phases are
channels (48 for RGB), then ``pixel_shuffle``. Its kernel is 10x10 with the 7x7 one at each phase's offset and
zeros elsewhere, so every output is the same sum of the same products (bit-identical in PyTorch eager) for about
twice the multiply-adds, and the conv now fills whole registers. Measured in ``benchmarks/RESULTS.md``
("Where the student's time goes").

Training keeps the plain module; weights files keep its layout. Deployment (``runner_from_module``, ``export``)
runs the inference form.
"""

from __future__ import annotations

import copy

import torch.nn.functional as F
from torch import Tensor, nn

PHASES = 4  # the head's input is always a multiple of 4: the decoder is two x2 transposed convolutions
WIDE = 16  # output channels from which a conv already fills an AVX-512 register of fp32


class PhaseSplitConv(nn.Module):
    """``conv(pad(x))`` for a stride-1 KxK conv, as one stride-r conv giving the r*r output phases as channels,
    then ``pixel_shuffle(r)``. ``x``'s height and width must be multiples of r."""

    def __init__(self, pad: nn.Module, conv: nn.Conv2d, r: int = PHASES):
        super().__init__()
        k, out_c, in_c = conv.kernel_size[0], conv.out_channels, conv.in_channels
        size = k + r - 1
        weight = conv.weight.new_zeros(out_c * r * r, in_c, size, size)
        for dy in range(r):
            for dx in range(r):  # channel c * r * r + dy * r + dx is output (c, r*y + dy, r*x + dx): pixel_shuffle's order
                weight[dy * r + dx :: r * r, :, dy : dy + k, dx : dx + k] = conv.weight.detach()
        self.pad, self.r = pad, r
        self.conv = nn.Conv2d(in_c, out_c * r * r, size, stride=r, bias=conv.bias is not None)
        self.conv.weight.data.copy_(weight)
        if conv.bias is not None:
            self.conv.bias.data.copy_(conv.bias.detach().repeat_interleave(r * r))

    def forward(self, x: Tensor) -> Tensor:
        return F.pixel_shuffle(self.conv(self.pad(x)), self.r)


def splittable_head(net: nn.Module) -> bool:
    """Whether ``net`` ends in reflection pad + a narrow stride-1 square odd conv that keeps the size + tanh (the
    ResNet generators' head)."""
    model = getattr(net, "model", None)
    if not isinstance(model, nn.Sequential) or len(model) < 3:  # a U-Net's model is its outermost skip block
        return False
    pad, conv, last = list(model)[-3:]
    return (
        isinstance(pad, nn.ReflectionPad2d)
        and type(conv) is nn.Conv2d
        and conv.stride == (1, 1)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding == (0, 0)
        and conv.kernel_size[0] == conv.kernel_size[1] > 1
        and pad.padding == (conv.kernel_size[0] // 2,) * 4
        and conv.kernel_size[0] % 2 == 1  # odd, padded by half: the output keeps the input's size, as the split's does
        and conv.out_channels < WIDE
        and isinstance(last, nn.Tanh)
    )


def inference_form(net: nn.Module) -> nn.Module:
    """A copy of ``net`` in eval mode with a ResNet generator's head in phase-split form (other nets: a plain copy)."""
    fast = copy.deepcopy(net).eval()
    if splittable_head(fast):
        layers = list(fast.model)
        layers[-3:-1] = [PhaseSplitConv(layers[-3], layers[-2])]
        fast.model = nn.Sequential(*layers)
    return fast


class CroppedConvTranspose(nn.Module):
    """``ConvTranspose2d(padding=p, output_padding=q)`` as the same layer with no padding, then a crop of ``p`` rows
    and columns at the top-left and ``p - q`` at the bottom-right: the same function with the same weights.

    Why: litert-torch 0.10.0 fails to convert a padded transposed convolution ("failed to legalize operation
    'mhlo.convolution'", litert-torch issue #316); the unpadded one and a slice convert."""

    def __init__(self, layer: nn.ConvTranspose2d):
        super().__init__()
        if layer.padding_mode != "zeros" or any(q > p for p, q in zip(layer.padding, layer.output_padding)):
            raise ValueError("CroppedConvTranspose needs zero padding mode and output_padding <= padding")
        self.top, self.left = layer.padding
        self.bottom, self.right = (p - q for p, q in zip(layer.padding, layer.output_padding))
        self.conv = nn.ConvTranspose2d(
            layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, 0, 0, layer.groups, layer.bias is not None, layer.dilation
        )
        self.conv.load_state_dict(layer.state_dict())

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x)
        return y[:, :, self.top : y.shape[2] - self.bottom, self.left : y.shape[3] - self.right]


def crop_transposed_convs(net: nn.Module) -> nn.Module:
    """``net`` (changed in place and returned) with every padded ConvTranspose2d replaced by ``CroppedConvTranspose``."""
    for name, child in net.named_children():
        if type(child) is nn.ConvTranspose2d and any(child.padding):
            setattr(net, name, CroppedConvTranspose(child))
        else:
            crop_transposed_convs(child)
    return net


class RowMeanInstanceNorm(nn.Module):
    """``InstanceNorm2d`` without running statistics, its means taken over each row and then over the rows, and
    its variance as the mean of squared deviations from that mean (two passes).

    Why: a phone runtime sums a whole H x W plane into one fp32 accumulator. ExecuTorch's portable
    ``_native_batch_norm_legit_no_stats`` kernel (what ``InstanceNorm2d`` lowers to, outside XNNPACK) also takes the
    variance as E[x^2] - E[x]^2, which cancels: on a 256 px student's activations it was off by 4.6e-4 per norm (NaN
    once the mean is 3 and the spread 0.02), and the nets' 20-odd norms in a row made that 1.5e-2 at the output.
    Summed per row (W terms) and then over the H row means, the rounding error grows with H + W instead of H * W:
    1.3e-6 on the same plane. benchmarks/RESULTS.md ("Phone parity at 256 px") has the measurements."""

    def __init__(self, norm: nn.InstanceNorm2d):
        super().__init__()
        if norm.track_running_stats:
            raise ValueError("RowMeanInstanceNorm replaces an InstanceNorm2d without running statistics")
        self.eps = norm.eps
        self.weight, self.bias = norm.weight, norm.bias  # None without affine; the same parameters (and keys) with it

    @staticmethod
    def _mean(x: Tensor) -> Tensor:
        return x.mean(dim=3, keepdim=True).mean(dim=2, keepdim=True)

    def forward(self, x: Tensor) -> Tensor:
        centred = x - self._mean(x)
        y = centred * (self._mean(centred * centred) + self.eps).rsqrt()
        if self.weight is not None:
            y = y * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        return y


def row_mean_norms(net: nn.Module) -> nn.Module:
    """``net`` (changed in place and returned) with every ``InstanceNorm2d`` without running statistics replaced by
    ``RowMeanInstanceNorm``: the form the phone exports convert."""
    for name, child in net.named_children():
        if type(child) is nn.InstanceNorm2d and not child.track_running_stats:
            setattr(net, name, RowMeanInstanceNorm(child))
        else:
            row_mean_norms(child)
    return net


def litert_form(net: nn.Module) -> nn.Module:
    """The inference form with padded transposed convolutions cropped instead (what litert-torch converts) and the
    instance norms as ``RowMeanInstanceNorm``."""
    return row_mean_norms(crop_transposed_convs(inference_form(net)))
