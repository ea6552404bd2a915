"""Image-to-image generators: resnet_9blocks, mobile_resnet_9blocks, unet_256, unet_128.

Module layouts (and therefore state-dict keys) follow the public pix2pix/CycleGAN and GAN Compression
code, because the distillation taps are named by module path (``model.9`` ...) and users bring
checkpoints (``latest_net_G.pth``) trained with that code.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import torch
from torch import Tensor, nn


def instance_norm(channels: int) -> nn.Module:
    """InstanceNorm as used by CycleGAN/pix2pix: no affine parameters, no running statistics."""
    return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)


NORM_LAYERS: dict[str, Callable[[int], nn.Module]] = {
    "instance": instance_norm,
    "batch": nn.BatchNorm2d,
}


class ResnetBlock(nn.Module):
    """Residual block of the original CycleGAN generator: x + [pad, conv, norm, relu, (dropout), pad, conv, norm](x)."""

    def __init__(self, dim: int, norm: Callable[[int], nn.Module], dropout: float, use_bias: bool):
        super().__init__()
        layers: list[nn.Module] = [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=use_bias), norm(dim), nn.ReLU(True)]
        # The public code only inserts Dropout when enabled; keeping that keeps checkpoint indices aligned.
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=use_bias), norm(dim)]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv_block(x)


class SeparableConv2d(nn.Module):
    """Depthwise conv -> InstanceNorm -> pointwise 1x1 conv (GAN Compression's SeparableConv2d)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, norm: Callable[[int], nn.Module], use_bias: bool):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, in_channels, kernel_size, groups=in_channels, bias=use_bias),
            norm(in_channels),
            nn.Conv2d(in_channels, out_channels, 1, bias=use_bias),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class MobileResnetBlock(nn.Module):
    """Residual block with separable convolutions; Dropout is always present (GAN Compression layout)."""

    def __init__(self, dim: int, norm: Callable[[int], nn.Module], dropout: float, use_bias: bool):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1),
            SeparableConv2d(dim, dim, 3, norm, use_bias),
            norm(dim),
            nn.ReLU(True),
            nn.Dropout(dropout),
            nn.ReflectionPad2d(1),
            SeparableConv2d(dim, dim, 3, norm, use_bias),
            norm(dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """Stem, two stride-2 downsamplings, ``n_blocks`` residual blocks, two upsamplings, 7x7 head with tanh."""

    def __init__(
        self,
        input_nc: int,
        output_nc: int,
        ngf: int,
        n_blocks: int = 9,
        dropout: float = 0.0,
        norm: str = "instance",
        mobile: bool = False,
    ):
        super().__init__()
        norm_layer = NORM_LAYERS[norm]
        use_bias = norm == "instance"  # BatchNorm has its own shift, so the public code drops conv biases then
        block = MobileResnetBlock if mobile else ResnetBlock
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(input_nc, ngf, 7, bias=use_bias),
            norm_layer(ngf),
            nn.ReLU(True),
        ]
        for mult in (1, 2):
            layers += [nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1, bias=use_bias), norm_layer(ngf * mult * 2), nn.ReLU(True)]
        layers += [block(ngf * 4, norm_layer, dropout, use_bias) for _ in range(n_blocks)]
        for mult in (4, 2):
            layers += [
                nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 3, stride=2, padding=1, output_padding=1, bias=use_bias),
                norm_layer(ngf * mult // 2),
                nn.ReLU(True),
            ]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class UnetSkipConnectionBlock(nn.Module):
    """One level of the pix2pix U-Net: down, (inner levels), up, concatenated with the level's input."""

    def __init__(
        self,
        outer_nc: int,
        inner_nc: int,
        input_nc: int | None = None,
        submodule: nn.Module | None = None,
        outermost: bool = False,
        innermost: bool = False,
        norm: Callable[[int], nn.Module] = nn.BatchNorm2d,
        use_bias: bool = False,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.outermost = outermost
        input_nc = outer_nc if input_nc is None else input_nc
        downconv = nn.Conv2d(input_nc, inner_nc, 4, stride=2, padding=1, bias=use_bias)
        # In-place LeakyReLU as in pix2pix: it also rewrites the skip tensor, which trained checkpoints rely on.
        downrelu = nn.LeakyReLU(0.2, True)
        uprelu = nn.ReLU(True)
        if outermost:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, 4, stride=2, padding=1)
            layers = [downconv, submodule, uprelu, upconv, nn.Tanh()]
        elif innermost:
            upconv = nn.ConvTranspose2d(inner_nc, outer_nc, 4, stride=2, padding=1, bias=use_bias)
            layers = [downrelu, downconv, uprelu, upconv, norm(outer_nc)]
        else:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, 4, stride=2, padding=1, bias=use_bias)
            layers = [downrelu, downconv, norm(inner_nc), submodule, uprelu, upconv, norm(outer_nc)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], 1)


class UnetGenerator(nn.Module):
    """pix2pix U-Net with ``num_downs`` stride-2 levels (8 for 256x256 inputs, 7 for 128x128)."""

    def __init__(self, input_nc: int, output_nc: int, num_downs: int, ngf: int = 64, norm: str = "batch", dropout: float = 0.5):
        super().__init__()
        if num_downs < 5:
            raise ValueError(f"a U-Net needs at least 5 levels, got num_downs={num_downs}")
        norm_layer = NORM_LAYERS[norm]
        use_bias = norm == "instance"
        block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, innermost=True, norm=norm_layer, use_bias=use_bias)
        for _ in range(num_downs - 5):
            block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, submodule=block, norm=norm_layer, use_bias=use_bias, dropout=dropout)
        block = UnetSkipConnectionBlock(ngf * 4, ngf * 8, submodule=block, norm=norm_layer, use_bias=use_bias)
        block = UnetSkipConnectionBlock(ngf * 2, ngf * 4, submodule=block, norm=norm_layer, use_bias=use_bias)
        block = UnetSkipConnectionBlock(ngf, ngf * 2, submodule=block, norm=norm_layer, use_bias=use_bias)
        self.model = UnetSkipConnectionBlock(output_nc, ngf, input_nc=input_nc, submodule=block, outermost=True, norm=norm_layer)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


@dataclass(frozen=True)
class GeneratorSpec:
    """Everything needed to rebuild a generator: saved as JSON next to exported weights."""

    netG: str
    ngf: int
    input_nc: int = 3
    output_nc: int = 3
    dropout: float | None = None  # None: the architecture's usual default
    norm: str | None = None

    def to_dict(self) -> dict:
        """Plain dict for JSON/YAML."""
        return asdict(self)


@dataclass(frozen=True)
class PublicDefaults:
    """Normalisation and dropout an architecture is trained with in its public code (used when a spec leaves them None)."""

    norm: str
    dropout: float


# ResNet (CycleGAN) and mobile ResNet (GAN Compression): InstanceNorm, no dropout. U-Net: pix2pix's train options,
# --norm batch and dropout on (``no_dropout`` False), i.e. BatchNorm and Dropout(0.5) in the inner levels.
PUBLIC_DEFAULTS: dict[str, PublicDefaults] = {
    "resnet_9blocks": PublicDefaults("instance", 0.0),
    "mobile_resnet_9blocks": PublicDefaults("instance", 0.0),
    "unet_256": PublicDefaults("batch", 0.5),
    "unet_128": PublicDefaults("batch", 0.5),
}


# Default DCD taps per architecture, ordered from the first feature map at 1/4 of the input size. The ResNets: the
# spec's taps (after the downsampling, then after blocks 3, 6, 9). The U-Net has one map at 1/4 size: the output of
# its third level (down, inner levels, up, concatenated with its input).
DEFAULT_TAPS: dict[str, list[str]] = {
    "resnet_9blocks": ["model.9", "model.12", "model.15", "model.18"],
    "mobile_resnet_9blocks": ["model.9", "model.12", "model.15", "model.18"],
    "unet_256": ["model.model.1.model.3"],
    "unet_128": ["model.model.1.model.3"],
}


def default_taps(teacher_netG: str, student_netG: str) -> tuple[list[str], list[str]]:
    """(teacher taps, student taps) paired by position: each architecture's defaults, cut to the shorter list."""
    teacher, student = DEFAULT_TAPS[teacher_netG], DEFAULT_TAPS[student_netG]
    n = min(len(teacher), len(student))
    return teacher[:n], student[:n]


def _norm_and_dropout(spec: GeneratorSpec) -> tuple[str, float]:
    default = PUBLIC_DEFAULTS[spec.netG]
    return spec.norm or default.norm, default.dropout if spec.dropout is None else spec.dropout


def _resnet(spec: GeneratorSpec) -> nn.Module:
    norm, dropout = _norm_and_dropout(spec)
    return ResnetGenerator(spec.input_nc, spec.output_nc, spec.ngf, dropout=dropout, norm=norm)


def _mobile_resnet(spec: GeneratorSpec) -> nn.Module:
    norm, dropout = _norm_and_dropout(spec)
    return ResnetGenerator(spec.input_nc, spec.output_nc, spec.ngf, dropout=dropout, norm=norm, mobile=True)


def _unet(num_downs: int) -> Callable[[GeneratorSpec], nn.Module]:
    def build(spec: GeneratorSpec) -> nn.Module:
        norm, dropout = _norm_and_dropout(spec)
        return UnetGenerator(spec.input_nc, spec.output_nc, num_downs, spec.ngf, norm=norm, dropout=dropout)

    return build


# Width of an architecture named without one (``dcdgan profile NAME``, ``dcdgan bench NAME``): the papers' sizes,
# mobile_resnet_9blocks at the student's 16 (its 64 is the teacher of the recipes; name it: NAME:64, --ngf 64).
DEFAULT_NGF: dict[str, int] = {"resnet_9blocks": 64, "mobile_resnet_9blocks": 16, "unet_256": 64, "unet_128": 64}

GENERATORS: dict[str, Callable[[GeneratorSpec], nn.Module]] = {
    "resnet_9blocks": _resnet,
    "mobile_resnet_9blocks": _mobile_resnet,
    "unet_256": _unet(8),
    "unet_128": _unet(7),
}


def build_generator(spec: GeneratorSpec) -> nn.Module:
    """Build (and initialise) the generator a spec describes."""
    if spec.netG not in GENERATORS:
        raise ValueError(f"unknown generator {spec.netG!r}; choose one of {', '.join(GENERATORS)}")
    if spec.ngf < 1:
        raise ValueError(f"ngf must be positive, got {spec.ngf}")
    net = GENERATORS[spec.netG](spec)
    init_weights(net)
    return net


def init_weights(net: nn.Module, gain: float = 0.02) -> None:
    """pix2pix 'normal' init: conv/linear weights N(0, gain), biases 0; BatchNorm weight N(1, gain), bias 0."""
    for module in net.modules():
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(module.weight, 0.0, gain)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.normal_(module.weight, 1.0, gain)
            nn.init.zeros_(module.bias)
