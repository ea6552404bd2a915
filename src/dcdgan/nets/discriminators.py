"""PatchGAN discriminator (pix2pix ``NLayerDiscriminator``), state-dict compatible with the public code."""

from __future__ import annotations

from torch import Tensor, nn

from dcdgan.nets.generators import NORM_LAYERS, init_weights


class NLayerDiscriminator(nn.Module):
    """PatchGAN: ``n_layers`` stride-2 convs, one stride-1 conv (its LeakyReLU is ``model.10`` for n_layers=3), 1-channel output."""

    def __init__(self, input_nc: int, ndf: int = 64, n_layers: int = 3, norm: str = "instance"):
        super().__init__()
        norm_layer = NORM_LAYERS[norm]
        use_bias = norm == "instance"
        layers: list[nn.Module] = [nn.Conv2d(input_nc, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2**n, 8)
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=2, padding=1, bias=use_bias), norm_layer(ndf * mult), nn.LeakyReLU(0.2, True)]
        prev, mult = mult, min(2**n_layers, 8)
        layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=1, padding=1, bias=use_bias), norm_layer(ndf * mult), nn.LeakyReLU(0.2, True)]
        layers += [nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


def build_discriminator(input_nc: int, ndf: int, n_layers: int = 3, norm: str = "instance") -> NLayerDiscriminator:
    """An initialised PatchGAN discriminator."""
    net = NLayerDiscriminator(input_nc, ndf, n_layers, norm)
    init_weights(net)
    return net
