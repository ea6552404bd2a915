"""Segmentation score of generated photos (the Cityscapes labels->photo protocol) with a user's TorchScript segmenter.

The segmenter receives float images in [0, 1], shape (B, 3, H, W), and returns class logits (B, C, h, w);
logits are resized bilinearly to the label map. Labels are integer class maps; ``ignore_index`` pixels
do not count. mIoU is the mean over classes that occur (in labels or predictions) of TP / (TP + FP + FN),
accumulated over the whole set as DRN-based evaluations do.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dcdgan.errors import UserError


def load_segmenter(path: str | Path) -> nn.Module:
    """A TorchScript segmentation network; UserError when the file is missing or not TorchScript."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: segmenter not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as err:
        raise UserError(f"{path}: not a TorchScript segmentation model ({type(err).__name__})") from None


class SegmentationScore:
    """Accumulates a confusion matrix over batches; ``compute`` gives mIoU and pixel accuracy."""

    def __init__(self, segmenter: nn.Module, num_classes: int, ignore_index: int = 255):
        self.segmenter, self.num_classes, self.ignore_index = segmenter, num_classes, ignore_index
        self.confusion = np.zeros((num_classes, num_classes), dtype=np.int64)

    @torch.no_grad()
    def update(self, images_uint8: Tensor, labels: Tensor) -> None:
        """Segment a uint8 batch (B, 1|3, H, W) and compare with integer labels (B, H, W)."""
        x = images_uint8.float() / 255
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        logits = self.segmenter(x)
        if logits.shape[-2:] != labels.shape[-2:]:
            logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
        if logits.shape[1] != self.num_classes:
            raise UserError(f"segmenter returns {logits.shape[1]} classes, expected --num-classes {self.num_classes}")
        pred = logits.argmax(1).cpu().numpy().ravel()
        true = labels.cpu().numpy().ravel().astype(np.int64)
        keep = true != self.ignore_index
        if (true[keep] >= self.num_classes).any() or (true[keep] < 0).any():
            raise UserError(f"label maps hold class ids outside 0..{self.num_classes - 1} (ignore index {self.ignore_index})")
        self.confusion += np.bincount(true[keep] * self.num_classes + pred[keep], minlength=self.num_classes**2).reshape(
            self.num_classes, self.num_classes
        )

    def compute(self) -> dict:
        """{'miou', 'pixel_accuracy', 'iou_per_class'} (NaN classes never seen are left out of the mean)."""
        tp = np.diag(self.confusion).astype(np.float64)
        union = self.confusion.sum(0) + self.confusion.sum(1) - tp
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(union > 0, tp / union, np.nan)
        total = self.confusion.sum()
        return {
            "miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
            "pixel_accuracy": float(tp.sum() / total) if total else float("nan"),
            "iou_per_class": [None if np.isnan(v) else float(v) for v in iou],
        }


def read_label_map(path: Path) -> Tensor:
    """An integer label image (e.g. Cityscapes *_labelTrainIds.png) as a (H, W) int64 tensor."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return torch.from_numpy(np.asarray(img, dtype=np.int64))
    except OSError as err:
        raise UserError(f"{path}: cannot read label map ({err})") from None
