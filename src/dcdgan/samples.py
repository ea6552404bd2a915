"""Image grids of a fixed validation batch: input | teacher | student | target, one row per image.

Tiles smaller than 128 px are enlarged (nearest) for viewing; the networks ran at the run's resolution."""

from __future__ import annotations

from pathlib import Path

import torch
from accelerate import Accelerator
from torch import Tensor, nn
from torchvision.utils import make_grid, save_image

from dcdgan.modes import eval_mode
from dcdgan.viewing import enlarge_tensor


def _rgb01(x: Tensor) -> Tensor:
    x = (x.detach().float().cpu().clamp(-1, 1) + 1) / 2
    return x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x


@torch.no_grad()
def sample_grid(batch: dict, gen: nn.Module, student: nn.Module | None, device: torch.device) -> Tensor:
    """A (3, H, W) grid in [0, 1]: columns input, task generator, student (if any), target (if paired); small tiles enlarged."""
    real_a = batch["A"].to(device)
    columns = [real_a]
    with eval_mode(gen, student):
        columns.append(gen(real_a))
        if student is not None:
            columns.append(student(real_a))
    if "B" in batch and batch["B"].shape[-2:] == real_a.shape[-2:]:
        columns.append(batch["B"])
    rows = torch.stack([_rgb01(c) for c in columns], 1).flatten(0, 1)  # image-major: one row per input
    rows = enlarge_tensor(rows)  # display only: a 32 px tile becomes 128 px of 4x4 blocks
    return make_grid(rows, nrow=len(columns), padding=2, pad_value=1.0)


def save_sample_grid(run_dir: Path, step: int, batch: dict, gen: nn.Module, student: nn.Module | None, accelerator: Accelerator) -> Path:
    """Write samples/step_XXXXXXX.png and log the grid to TensorBoard."""
    grid = sample_grid(batch, gen, student, accelerator.device)
    path = run_dir / "samples" / f"step_{step:07d}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(grid, path)
    try:
        accelerator.get_tracker("tensorboard", unwrap=True).add_image("samples", grid, step)
    except (ValueError, AttributeError):  # no TensorBoard tracker in this run
        pass
    return path
