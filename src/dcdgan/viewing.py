"""Display-only enlargement of small images (nearest neighbour), so that a 32 px result shows its texture.

Only what a person looks at is enlarged (sample grids, the demo); metrics always see the images at the run's
resolution.
"""

from __future__ import annotations

import math

import torch
from PIL import Image
from torch import Tensor

MIN_VIEW_SIDE = 128  # a tile smaller than this is enlarged by an integer factor until its shorter side reaches it


def view_scale(height: int, width: int, min_side: int = MIN_VIEW_SIDE) -> int:
    """The integer factor that brings the shorter side of a height x width tile to at least ``min_side`` (1 if it is already)."""
    return max(1, math.ceil(min_side / max(1, min(height, width))))


def enlarge_tensor(images: Tensor, min_side: int = MIN_VIEW_SIDE) -> Tensor:
    """N,C,H,W images enlarged by ``view_scale`` with nearest neighbour (pixels become k x k blocks)."""
    k = view_scale(images.shape[-2], images.shape[-1], min_side)
    return images if k == 1 else torch.nn.functional.interpolate(images, scale_factor=k, mode="nearest")


def enlarge_image(image: Image.Image, min_side: int = MIN_VIEW_SIDE) -> Image.Image:
    """A PIL image enlarged by ``view_scale`` with nearest neighbour."""
    k = view_scale(image.height, image.width, min_side)
    return image if k == 1 else image.resize((image.width * k, image.height * k), Image.NEAREST)
