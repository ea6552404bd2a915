"""Networks: generators, the PatchGAN discriminator and the DCD connectors."""

from dcdgan.nets.connectors import DCDProjector, DCDTaps, connector
from dcdgan.nets.discriminators import NLayerDiscriminator, build_discriminator
from dcdgan.nets.generators import GENERATORS, GeneratorSpec, build_generator, init_weights

__all__ = [
    "GENERATORS",
    "GeneratorSpec",
    "NLayerDiscriminator",
    "DCDProjector",
    "DCDTaps",
    "build_discriminator",
    "build_generator",
    "connector",
    "init_weights",
]
