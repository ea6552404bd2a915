"""LPIPS (Zhang et al. 2018) with the official ``lpips`` package's linear layers and a backbone the user supplies.

The package downloads its ImageNet backbone from torchvision at construction; here the backbone comes
from a local torchvision state dict (``alexnet``/``vgg16``/``squeezenet1_1``, keys ``features.N.*``), so
LPIPS runs offline and only when the user has those weights.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from dcdgan.errors import UserError
from dcdgan.weights import read_state_dict

NETS = ("alex", "vgg", "squeeze")


def load_lpips(backbone: str | Path, net: str = "alex") -> nn.Module:
    """An LPIPS model whose backbone weights come from ``backbone``; UserError when the file does not fit."""
    if net not in NETS:
        raise UserError(f"unknown LPIPS network {net!r}; choose one of {', '.join(NETS)}")
    try:
        import lpips
    except ImportError:
        raise UserError("LPIPS needs the lpips package: pip install 'dcdgan[lpips]'") from None
    state = read_state_dict(backbone)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torchvision's 'pretrained' deprecation, raised inside lpips
        model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
    mapped, missing = {}, []
    for key in model.net.state_dict():  # slice{k}.{torchvision index}.{weight|bias}
        _, index, param = key.split(".")
        source = next((s for s in (f"features.{index}.{param}", f"{index}.{param}") if s in state), None)
        if source is None:
            missing.append(f"features.{index}.{param}")
        else:
            mapped[key] = state[source]
    if missing:
        raise UserError(f"{backbone}: not a torchvision {net} backbone (missing {missing[0]} and {len(missing) - 1} more)")
    try:
        model.net.load_state_dict(mapped)
    except RuntimeError as err:
        raise UserError(f"{backbone}: does not fit the {net} backbone ({str(err).splitlines()[-1].strip()[:120]})") from None
    return model.eval().requires_grad_(False)


@torch.no_grad()
def lpips_distance(model: nn.Module, fake: Tensor, real: Tensor) -> Tensor:
    """Per-image LPIPS of uint8 batches (grayscale repeated to RGB)."""
    device = next(model.parameters()).device
    return model(_signed_rgb(fake, device), _signed_rgb(real, device)).flatten().cpu()


def _signed_rgb(images: Tensor, device: torch.device) -> Tensor:
    x = images.float().to(device) / 127.5 - 1  # LPIPS takes [-1, 1]
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
