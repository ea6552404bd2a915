"""dcdgan: Discriminator-Cooperated Distillation for image-to-image GAN compression."""

__version__ = "0.1.0"
