"""Metrics against ground truth for paired data: per-image PSNR and SSIM, averaged over the set."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure


def to_uint8(images: Tensor) -> Tensor:
    """[-1, 1] floats -> uint8, rounded as torchvision's save_image does.

    pix2pix's tensor2im truncates instead; after the [-1, 1] round trip that moves 63 of the 256 levels of a
    real image down by one, so real images would no longer equal their own files. Rounding keeps them exact.
    """
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5 + 0.5).floor().to(torch.uint8)


def psnr_ssim(fake: Tensor, real: Tensor) -> tuple[Tensor, Tensor]:
    """Per-image PSNR (dB) and SSIM (11x11 Gaussian, sigma 1.5) of uint8 batches, on [0, 1] data range."""
    f, r = fake.float() / 255, real.float() / 255
    psnr = peak_signal_noise_ratio(f, r, data_range=1.0, reduction="none", dim=(1, 2, 3))
    ssim = structural_similarity_index_measure(f, r, data_range=1.0, reduction="none")
    return psnr, ssim
