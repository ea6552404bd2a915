"""Translate image files with a generator on any backend: any size, any channel count, in batches.

Each image is converted to the model's channels (grayscale and RGBA too), padded by reflection to the net's
stride multiple, translated, cropped back to its own size and written under the same name. Images of the
same padded size share a batch. Runners that capture a shape (cuda-graph, compile) get fixed batches: a short batch
is filled up to the batch size with copies of its last image, whose outputs are dropped, so each image size costs
one capture rather than one per leftover count. Unreadable files are skipped with one warning line each.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from dcdgan.backends import Runner
from dcdgan.cuda_runners import CAPTURED_RUNNERS
from dcdgan.data import IMAGE_EXTENSIONS, read_image, to_mode
from dcdgan.errors import UserError


@dataclass
class TranslateResult:
    """How many images were written, and the files that could not be read or written (with why)."""

    written: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def image_files(source: Path) -> list[Path]:
    """One image file, or every file with an image extension under a folder (recursive), sorted."""
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise UserError(f"{source}: no such file or folder")
    files = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise UserError(f"{source}: no images ({', '.join(IMAGE_EXTENSIONS)})")
    return files


def output_path(file: Path, source: Path, output: Path) -> Path:
    """Where ``file``'s translation goes: same relative path under OUTPUT (or OUTPUT itself for one file named like an image)."""
    if source.is_file():
        return output if output.suffix.lower() in IMAGE_EXTENSIONS else output / file.name
    return output / file.relative_to(source)


def to_array(img: Image.Image, channels: int) -> np.ndarray:
    """A PIL image as float32 C,H,W in [-1, 1] with ``channels`` channels."""
    pixels = np.asarray(to_mode(img, channels), dtype=np.float32) / 127.5 - 1.0
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def pad_to_multiple(image: np.ndarray, multiple: int) -> np.ndarray:
    """Reflection-pad C,H,W on the bottom and right so H and W are multiples of ``multiple``."""
    _, h, w = image.shape
    pad_h, pad_w = -h % multiple, -w % multiple
    if not pad_h and not pad_w:
        return image
    mode = "reflect" if min(h, w) > 1 else "edge"  # a 1-pixel side has nothing to reflect
    return np.pad(image, ((0, 0), (0, pad_h), (0, pad_w)), mode=mode)


def to_image(output: np.ndarray) -> Image.Image:
    """float C,H,W in [-1, 1] -> PIL image, rounded as the metrics' to_uint8 does."""
    pixels = np.floor((np.clip(output, -1, 1) + 1) * 127.5 + 0.5).astype(np.uint8)
    return Image.fromarray(pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0))


def fill_batch(images: list[np.ndarray], batch_size: int) -> np.ndarray:
    """N equal-size C,H,W images as a batch of exactly ``batch_size`` (N <= batch_size): the last image repeated."""
    if not 0 < len(images) <= batch_size:
        raise ValueError(f"{len(images)} images for a batch of {batch_size}")
    return np.stack(images + [images[-1]] * (batch_size - len(images)))


def translate_files(
    runner: Runner, source: str | Path, output: str | Path, batch_size: int = 8, quiet: bool = False, fixed_batches: bool | None = None
) -> TranslateResult:
    """Translate one image or a folder tree into OUTPUT, keeping names; returns what was written and skipped.
    ``fixed_batches`` (default: when the runner captures shapes) makes every call exactly ``batch_size`` images."""
    if batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    if fixed_batches is None:
        fixed_batches = runner.runner in CAPTURED_RUNNERS
    source, output = Path(source), Path(output)
    files = image_files(source)
    result = TranslateResult()
    pending: dict[tuple[int, int], list[tuple[Path, np.ndarray, tuple[int, int]]]] = {}

    def flush(shape: tuple[int, int]) -> None:
        group = pending.pop(shape, [])
        if not group:
            return
        images = [x for _, x, _ in group]
        outputs = runner(fill_batch(images, batch_size) if fixed_batches else np.stack(images))[: len(group)]
        for (file, _, (h, w)), out in zip(group, outputs):
            target = output_path(file, source, output)
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                to_image(out[:, :h, :w]).save(target)
            except (OSError, ValueError) as err:
                warn(result, file, f"cannot write {target} ({err})")
                continue
            result.written.append(target)

    for file in tqdm(files, desc="translate", unit="img", disable=True if quiet else None):
        try:
            image = to_array(read_image(file), runner.input_nc)
        except UserError as err:
            warn(result, file, str(err).split(": ", 1)[-1])
            continue
        padded = pad_to_multiple(image, runner.size_multiple)
        shape = padded.shape[1:]
        pending.setdefault(shape, []).append((file, padded, image.shape[1:]))
        if len(pending[shape]) >= batch_size:
            flush(shape)
    for shape in list(pending):
        flush(shape)
    return result


def warn(result: TranslateResult, file: Path, reason: str) -> None:
    """One warning line on stderr, and the file recorded as skipped."""
    print(f"warning: skipped {file}: {reason}", file=sys.stderr)
    result.skipped.append((file, reason))
