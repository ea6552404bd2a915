"""Shared fixtures: tiny configs, offline weight locations."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_VGG = REPO.parent / "shared" / "weights" / "vgg16_imagenet_caffe_features.safetensors"


def vgg_file() -> Path | None:
    """The offline Caffe VGG16 file: $DCDGAN_VGG16, or ../shared next to the checkout."""
    path = Path(os.environ.get("DCDGAN_VGG16", SHARED_VGG))
    return path if path.is_file() else None


@pytest.fixture(autouse=True)
def _deterministic(monkeypatch):
    torch.manual_seed(0)
    monkeypatch.setenv("TQDM_DISABLE", "1")


@pytest.fixture(autouse=True)
def _own_scan_cache(tmp_path, monkeypatch):
    """Dataset-scan results go to the test's folder, never to the user's ~/.cache."""
    monkeypatch.setenv("DCDGAN_CACHE_DIR", str(tmp_path / "scan-cache"))


@pytest.fixture
def offline(monkeypatch):
    """No VGG/Inception env overrides and no downloads: what a fresh offline machine sees."""
    import dcdgan.perceptual as perceptual

    monkeypatch.delenv("DCDGAN_VGG16", raising=False)
    monkeypatch.delenv("DCDGAN_INCEPTION", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(Path(os.environ.get("TMPDIR", "/tmp")) / "dcdgan-empty-torch-home"))

    def no_download():
        raise OSError("offline (test)")

    monkeypatch.setattr(perceptual, "_torchvision_download", no_download)
