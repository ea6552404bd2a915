"""The inference form of a generator (phase-split head): the same outputs, faster kernels, the original untouched."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dcdgan.nets import GeneratorSpec, build_generator
from dcdgan.nets.inference import (
    CroppedConvTranspose,
    PhaseSplitConv,
    RowMeanInstanceNorm,
    inference_form,
    litert_form,
    row_mean_norms,
    splittable_head,
)


@pytest.mark.parametrize("out_c, bias", [(3, True), (1, True), (3, False)])
@pytest.mark.parametrize("shape", [(2, 5, 32, 32), (1, 5, 8, 12), (1, 5, 64, 96)])
def test_phase_split_conv_equals_pad_then_conv(out_c, bias, shape):
    torch.manual_seed(0)
    pad, conv = nn.ReflectionPad2d(3), nn.Conv2d(5, out_c, 7, bias=bias)
    split = PhaseSplitConv(pad, conv)
    assert (split.conv.in_channels, split.conv.out_channels, split.conv.kernel_size, split.conv.stride) == (5, 16 * out_c, (10, 10), (4, 4))
    x = torch.randn(shape)
    with torch.no_grad():
        expected, got = conv(pad(x)), split(x)
    assert got.shape == expected.shape == (shape[0], out_c, shape[2], shape[3])
    assert (got - expected).abs().max().item() <= 1e-5 * expected.abs().max().item()  # same products, summation order aside


def test_phase_split_conv_at_two_phases():
    torch.manual_seed(0)
    pad, conv = nn.ReflectionPad2d(1), nn.Conv2d(4, 2, 3)
    x = torch.randn(1, 4, 6, 10)
    with torch.no_grad():
        assert torch.allclose(PhaseSplitConv(pad, conv, r=2)(x), conv(pad(x)), atol=1e-6)


@pytest.mark.parametrize("netG, ngf, channels", [("mobile_resnet_9blocks", 8, 3), ("resnet_9blocks", 8, 1)])
def test_resnet_generators_get_the_split_head_and_keep_their_outputs(netG, ngf, channels):
    torch.manual_seed(0)
    net = build_generator(GeneratorSpec(netG, ngf, channels, channels)).train()
    head = net.model[-2]
    fast = inference_form(net)
    assert isinstance(fast.model[-2], PhaseSplitConv) and isinstance(fast.model[-1], nn.Tanh) and len(fast.model) == len(net.model) - 1
    assert not fast.training
    assert net.training and net.model[-2] is head and type(head) is nn.Conv2d  # the original is left as it was
    for size in [(1, channels, 32, 32), (2, channels, 36, 44)]:
        x = torch.rand(size) * 2 - 1
        with torch.no_grad():
            assert (fast(x) - net.eval()(x)).abs().max().item() <= 1e-5


def test_other_nets_are_copied_unchanged():
    unet = build_generator(GeneratorSpec("unet_128", 8, 3, 3))
    fast = inference_form(unet)
    assert not any(isinstance(m, PhaseSplitConv) for m in fast.modules())
    assert fast is not unet and fast.state_dict().keys() == unet.state_dict().keys()
    wide = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(4, 16, 7), nn.Tanh())  # 16 outputs fill a register already
    holder = nn.Module()
    holder.model = wide
    assert not splittable_head(holder)
    holder.model = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(4, 3, 7), nn.Tanh())
    assert splittable_head(holder)
    holder.model = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(4, 3, 7, stride=2), nn.Tanh())
    assert not splittable_head(holder)
    holder.model = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(4, 3, 7), nn.ReLU())  # not a generator's output head
    assert not splittable_head(holder)
    heads = {  # a conv that changes the size, a non-square or 1x1 kernel: left alone
        (2, (7, 7)): False, ((3, 3, 2, 2), (7, 7)): False, (3, (7, 5)): False, (0, (1, 1)): False, (1, (3, 3)): True,
    }
    for (padding, kernel), split in heads.items():
        holder.model = nn.Sequential(nn.ReflectionPad2d(padding), nn.Conv2d(4, 3, kernel), nn.Tanh())
        assert splittable_head(holder) is split, (padding, kernel)
    assert not splittable_head(nn.Conv2d(4, 3, 7))  # no .model at all


@pytest.mark.parametrize("kernel, padding, output_padding", [(3, 1, 1), (4, 1, 0), (3, 2, 1), (5, 2, 0)])
@pytest.mark.parametrize("shape", [(2, 6, 8, 8), (1, 6, 5, 9)])
def test_cropped_conv_transpose_is_the_same_function(kernel, padding, output_padding, shape):
    torch.manual_seed(0)
    layer = nn.ConvTranspose2d(6, 4, kernel, stride=2, padding=padding, output_padding=output_padding)
    cropped = CroppedConvTranspose(layer)
    assert cropped.conv.padding == (0, 0) and cropped.conv.output_padding == (0, 0)
    assert torch.equal(cropped.conv.weight, layer.weight) and torch.equal(cropped.conv.bias, layer.bias)
    x = torch.randn(shape)
    with torch.no_grad():
        expected, got = layer(x), cropped(x)
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() <= 1e-6 * max(1.0, expected.abs().max().item())  # the same products and sums


def test_cropped_conv_transpose_refuses_what_a_crop_cannot_give():
    with pytest.raises(ValueError, match="output_padding <= padding"):
        CroppedConvTranspose(nn.ConvTranspose2d(4, 4, 3, stride=2, padding=0, output_padding=1))


@pytest.mark.parametrize("netG, channels", [("mobile_resnet_9blocks", 3), ("resnet_9blocks", 1), ("unet_128", 3)])
def test_litert_form_crops_every_padded_transposed_conv_and_keeps_the_outputs(netG, channels):
    torch.manual_seed(0)
    net = build_generator(GeneratorSpec(netG, 4, channels, channels)).eval()
    form = litert_form(net)
    padded = [m for m in net.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert len(padded) == (2 if "resnet" in netG else 7)
    assert sum(isinstance(m, CroppedConvTranspose) for m in form.modules()) == len(padded)
    assert not any(type(m) is nn.ConvTranspose2d and any(m.padding) for m in form.modules())
    assert all(type(m) is nn.ConvTranspose2d for m in net.modules() if isinstance(m, nn.ConvTranspose2d))  # the original is untouched
    x = torch.rand(2, channels, 128, 128) * 2 - 1
    with torch.no_grad():
        assert (form(x) - net(x)).abs().max().item() <= 1e-5


@pytest.mark.parametrize("affine", [False, True])
def test_row_mean_instance_norm_equals_instance_norm_and_keeps_its_keys(affine):
    torch.manual_seed(0)
    norm = nn.InstanceNorm2d(6, affine=affine)
    if affine:
        with torch.no_grad():
            norm.weight.normal_(1, 0.3), norm.bias.normal_(0, 0.3)
    row_mean = RowMeanInstanceNorm(norm)
    assert list(row_mean.state_dict()) == list(norm.state_dict())
    x = 0.5 + 0.05 * torch.randn(2, 6, 24, 40)  # a mean large against the spread, as in a photo's activations
    with torch.no_grad():
        weight, bias = (norm.weight.double(), norm.bias.double()) if affine else (None, None)
        expected = nn.functional.instance_norm(x.double(), weight=weight, bias=bias, eps=norm.eps)
        got = row_mean(x)
    # fp32 input rounding (2^-24 * 0.55) over a spread of 0.05: ~1e-6 relative, times |outputs| up to ~5
    assert (got.double() - expected).abs().max().item() <= 2e-5


def test_row_mean_norms_replaces_only_instance_norms_without_running_stats():
    net = nn.Sequential(nn.InstanceNorm2d(3), nn.Sequential(nn.InstanceNorm2d(3, track_running_stats=True), nn.BatchNorm2d(3)))
    row_mean_norms(net)
    assert [type(m) for m in (net[0], net[1][0], net[1][1])] == [RowMeanInstanceNorm, nn.InstanceNorm2d, nn.BatchNorm2d]


def test_litert_form_has_row_mean_norms_and_keeps_the_outputs():
    torch.manual_seed(0)
    net = build_generator(GeneratorSpec("mobile_resnet_9blocks", 8, 1, 1)).eval()
    form = litert_form(net)
    assert not any(type(m) is nn.InstanceNorm2d for m in form.modules())
    assert sum(type(m) is RowMeanInstanceNorm for m in form.modules()) == sum(type(m) is nn.InstanceNorm2d for m in net.modules())
    x = torch.rand(1, 1, 64, 64) * 2 - 1
    with torch.no_grad():
        assert (form(x) - net(x)).abs().max().item() <= 1e-5


def test_row_mean_norm_refuses_a_norm_with_running_statistics():
    with pytest.raises(ValueError, match=r"^RowMeanInstanceNorm replaces an InstanceNorm2d without running statistics$"):
        RowMeanInstanceNorm(nn.InstanceNorm2d(4, track_running_stats=True))
