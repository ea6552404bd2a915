"""VGG16 feature extractor for the style/feature losses, with weight resolution and matching preprocessing.

Weights and their preprocessing travel together: Caffe/Oxford VGG16 weights expect BGR in 0..255 minus
the ImageNet mean, torchvision's expect RGB in [0, 1] normalised by mean/std. Feeding one the other's
input silently degrades the loss, so the preprocessing is part of what we resolve.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

from dcdgan.config import DistillConfig, PerceptualConfig
from dcdgan.errors import UserError
from dcdgan.weights import read_state_dict

# torchvision vgg16().features indices of relu1_2, relu2_2, relu3_3, relu4_3
VGG_TAPS = {"relu1_2": 3, "relu2_2": 8, "relu3_3": 15, "relu4_3": 22}
FEATURE_TAP = "relu2_2"
PREPROCESSING = ("caffe", "torchvision")
ENV_VAR = "DCDGAN_VGG16"
TORCHVISION_FILE = "vgg16-397923af.pth"

# Activation scale that brings each convention to the magnitude the reference's loss weights were tuned on:
# the reference fed torchvision's VGG16 images in [0, 1] without normalisation, i.e. about 1/255 of what
# Caffe weights expect and about 0.226 (ImageNet std) of what torchvision weights expect. Gram losses
# scale with its square. See docs/decisions.md.
AUTO_FEATURE_SCALE = {"caffe": 1 / 255, "torchvision": 0.226}

_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def vgg16_features() -> nn.Sequential:
    """torchvision's VGG16 ``features`` stack up to relu4_3 (layers after it are never used).

    Built with torchvision's own layer factory, skipping the 120M-parameter classifier that vgg16() would initialise.
    """
    from torchvision.models.vgg import cfgs, make_layers

    return make_layers(cfgs["D"], batch_norm=False)[: VGG_TAPS["relu4_3"] + 1]


class VGGPerceptual(nn.Module):
    """Frozen VGG16 returning the four style taps for images in [-1, 1] (1 or 3 channels)."""

    def __init__(self, features: nn.Sequential, preprocess: str, feature_scale: float = 0.0):
        super().__init__()
        if preprocess not in PREPROCESSING:
            raise ValueError(f"unknown VGG preprocessing {preprocess!r}; choose one of {', '.join(PREPROCESSING)}")
        self.features = features.eval().requires_grad_(False)
        self.preprocess = preprocess
        self.feature_scale = feature_scale or AUTO_FEATURE_SCALE[preprocess]
        if preprocess == "caffe":
            self.register_buffer("shift", torch.tensor(_CAFFE_MEAN_BGR).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("scale", torch.ones(1, 3, 1, 1), persistent=False)
        else:
            self.register_buffer("shift", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("scale", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> "VGGPerceptual":
        super().train(mode)
        self.features.eval()  # always a fixed feature extractor
        return self

    def normalise(self, images: Tensor) -> Tensor:
        """Map generator outputs in [-1, 1] to the input the weights were trained on."""
        x = (images + 1) / 2
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if self.preprocess == "caffe":
            x = x.flip(1) * 255.0  # RGB -> BGR, 0..255
        return (x - self.shift) / self.scale

    def forward(self, images: Tensor) -> list[Tensor]:
        x = self.normalise(images)
        outputs = []
        last = max(VGG_TAPS.values())
        wanted = set(VGG_TAPS.values())
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in wanted:
                outputs.append(x * self.feature_scale)
            if i == last:
                break
        return outputs


@dataclass(frozen=True)
class ResolvedVGG:
    """Where the VGG weights came from, or why there are none."""

    model: VGGPerceptual | None
    source: str


def _strip_prefix(state: dict[str, Tensor]) -> dict[str, Tensor]:
    out = {}
    for key, value in state.items():
        if key.startswith("features."):
            key = key[len("features.") :]
        elif key.startswith("classifier."):
            continue
        if int(key.split(".")[0]) <= VGG_TAPS["relu4_3"]:
            out[key] = value
    return out


def load_vgg_file(path: str | os.PathLike, preprocess: str = "auto") -> VGGPerceptual:
    """Load VGG16 conv weights from a .safetensors or .pth file; preprocessing from the file's metadata or the argument."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: VGG16 weights file not found")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
                state = {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError) as err:
            raise UserError(f"{path}: not a readable safetensors file ({err})") from None
        if preprocess == "auto":
            declared = metadata.get("input", "")
            if declared.startswith("BGR, 0..255"):
                preprocess = "caffe"
            elif declared.startswith("RGB, 0..1"):
                preprocess = "torchvision"
            else:
                raise UserError(f"{path}: the file does not declare its preprocessing; set perceptual.preprocess to caffe or torchvision")
    else:
        state = read_state_dict(path)
        if preprocess == "auto":
            preprocess = "torchvision"  # .pth VGG16 files are torchvision's layout and training
    features = vgg16_features()
    try:
        features.load_state_dict(_strip_prefix(state))
    except (RuntimeError, ValueError) as err:
        first = str(err).strip().splitlines()[0]
        raise UserError(f"{path}: not VGG16 conv weights in torchvision's layout ({first})") from None
    return VGGPerceptual(features, preprocess)


def _torchvision_download() -> VGGPerceptual:
    from torchvision.models import VGG16_Weights

    chatter = io.StringIO()
    # torch.hub announces a download (on stdout) before trying it; keep failed tries quiet, show successful ones
    with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
        state = VGG16_Weights.IMAGENET1K_V1.get_state_dict(progress=False)
    sys.stderr.write(chatter.getvalue())
    features = vgg16_features()
    features.load_state_dict(_strip_prefix(state))
    return VGGPerceptual(features, "torchvision")


def resolve_vgg(weights: str, preprocess: str = "auto") -> ResolvedVGG:
    """Find VGG16 weights.

    ``weights`` is a file path, ``auto`` ($DCDGAN_VGG16, then torchvision's cache, then torchvision's
    download), ``torchvision`` (download), ``random`` (untrained, with a warning) or ``none``.
    Returns model None with the reason when ``auto`` finds nothing; raises UserError for a bad explicit path.
    """
    if weights == "none":
        return ResolvedVGG(None, "disabled (perceptual.weights=none)")
    if weights == "random":
        warnings.warn("VGG16 with RANDOM weights (perceptual.weights=random): style/feature losses are not perceptual", stacklevel=2)
        return ResolvedVGG(VGGPerceptual(vgg16_features(), "torchvision"), "random init")
    if weights not in ("auto", "torchvision"):
        return ResolvedVGG(load_vgg_file(weights, preprocess), weights)
    if weights == "auto":
        env = os.environ.get(ENV_VAR)
        if env:
            return ResolvedVGG(load_vgg_file(env, preprocess), f"${ENV_VAR}={env}")
        cached = Path(torch.hub.get_dir()) / "checkpoints" / TORCHVISION_FILE
        if cached.is_file():
            return ResolvedVGG(load_vgg_file(cached, "torchvision"), str(cached))
    try:
        return ResolvedVGG(_torchvision_download(), "torchvision download (IMAGENET1K_V1)")
    except Exception as err:  # offline, proxy, HTTP error...: say so instead of crashing
        if weights == "torchvision":
            raise UserError(f"VGG16 download from torchvision failed ({type(err).__name__}); pass a local file as perceptual.weights") from None
        return ResolvedVGG(None, f"not found (no ${ENV_VAR}, no torchvision cache, download failed: {type(err).__name__})")


def setup_perceptual(distill: DistillConfig, perceptual: PerceptualConfig, device: torch.device, say: Callable[[str], None]) -> tuple[VGGPerceptual | None, float]:
    """The student's perceptual terms: (VGG on ``device`` or None, weight of the L1 to the teacher output). ``say`` gets
    one line naming the weights, or saying that the weight-free setting applies."""
    d, p = distill, perceptual
    if d.method == "none":
        return None, 0.0
    if (d.lambda_style == 0 and d.lambda_feat == 0) or p.weights == "none":
        return None, d.lambda_pixel
    resolved = resolve_vgg(p.weights, p.preprocess)
    if resolved.model is None:
        if p.on_missing == "error":
            raise UserError(
                f"VGG16 weights {resolved.source}; set perceptual.weights=FILE or ${ENV_VAR}, "
                "or perceptual.on_missing=pixel for the weight-free setting"
            )
        replaced = f", replacing distill.lambda_pixel={d.lambda_pixel:g}" if d.lambda_pixel > 0 else ""
        say(
            f"VGG16 weights {resolved.source}: using the weight-free setting (L1 to the teacher output x{p.fallback_lambda:g} "
            f"instead of VGG style/feature losses{replaced}); set ${ENV_VAR} or perceptual.weights=FILE to use them"
        )
        return None, p.fallback_lambda
    vgg = resolved.model
    if p.feature_scale:
        vgg.feature_scale = p.feature_scale
    say(f"VGG16 weights: {resolved.source} (preprocessing: {vgg.preprocess}, feature scale {vgg.feature_scale:.4g})")
    return vgg.to(device), d.lambda_pixel
