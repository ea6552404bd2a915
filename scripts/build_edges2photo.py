"""Build task (d) of the photo benchmark: edges -> photo, a paired task made from the horse2zebra photos.

A = black-on-white edges of the photo (thresholded Sobel of a lightly blurred luminance, the operator of the
embedded edges -> shoe task, scripts/build_builtin_dataset.py, with a blur because natural photos carry texture
that Fashion-MNIST does not), B = the photo itself, both resized to ``--size`` (Lanczos). Horses and zebras are
pooled into one task. Splits, all disjoint:

- ``train/``: the release's trainA + trainB, minus the validation images;
- ``val/``: ``--val`` images carved from train with a fixed seed (model selection only);
- ``test/``: the release's testA + testB (the final report only).

Each split holds ``A/`` and ``B/`` with files matched by name (dcdgan's paired folder layout), PNG so the edges
stay exact. The photos are ImageNet's (research and education only): the output goes to a folder of yours, never
into the package or the repository.

    python scripts/build_edges2photo.py ../shared/data/horse2zebra-128 /tmp/dcdgan-data/edges2photo-64 --size 64
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, ImageOps

SOURCE_SPLITS = {"train": ("trainA", "trainB"), "test": ("testA", "testB")}
EXTENSIONS = {".jpg", ".jpeg", ".png"}


def edges(photo: Image.Image, threshold: float = 0.2, blur: float = 1.0) -> Image.Image:
    """Black-on-white edge map of ``photo``: Sobel magnitude of the blurred luminance above ``threshold`` x its maximum."""
    gray = photo.convert("L")
    if blur > 0:
        gray = gray.filter(ImageFilter.GaussianBlur(blur))
    x = np.asarray(gray, dtype=np.float32)
    p = np.pad(x, 1, mode="edge")
    gx = (p[:-2, 2:] + 2 * p[1:-1, 2:] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[1:-1, :-2] + p[2:, :-2])
    gy = (p[2:, :-2] + 2 * p[2:, 1:-1] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[:-2, 1:-1] + p[:-2, 2:])
    mag = np.hypot(gx, gy)
    line = mag > threshold * (mag.max() + 1e-6)
    return Image.fromarray(np.where(line, 0, 255).astype(np.uint8)).convert("RGB")


def source_images(root: Path, split: str) -> list[Path]:
    """The release's images of both domains for ``split`` (train or test), sorted, so the build is deterministic."""
    paths = []
    for folder in SOURCE_SPLITS[split]:
        d = root / folder
        if not d.is_dir():
            raise SystemExit(f"{d}: missing (expected the CycleGAN horse2zebra layout trainA/ trainB/ testA/ testB/)")
        paths += sorted(p for p in d.iterdir() if p.suffix.lower() in EXTENSIONS)
    return paths


def write_pair(src: Path, out_split: Path, size: int, threshold: float, blur: float) -> None:
    """Write A (edges) and B (photo) of one source image under ``out_split/{A,B}/<stem>.png``."""
    photo = ImageOps.exif_transpose(Image.open(src)).convert("RGB").resize((size, size), Image.Resampling.LANCZOS)
    edges(photo, threshold, blur).save(out_split / "A" / f"{src.stem}.png")
    photo.save(out_split / "B" / f"{src.stem}.png")


def build(root: Path, out: Path, size: int, val: int, seed: int, threshold: float = 0.2, blur: float = 1.0) -> dict[str, int]:
    """Build train/val/test under ``out``; returns the number of pairs per split."""
    train = source_images(root, "train")
    if not 0 < val < len(train):
        raise SystemExit(f"--val {val}: must be between 1 and {len(train) - 1} (train has {len(train)} images)")
    chosen = set(np.random.default_rng(seed).choice(len(train), size=val, replace=False).tolist())
    splits = {
        "train": [p for i, p in enumerate(train) if i not in chosen],
        "val": [p for i, p in enumerate(train) if i in chosen],
        "test": source_images(root, "test"),
    }
    for name, paths in splits.items():
        for side in ("A", "B"):
            (out / name / side).mkdir(parents=True, exist_ok=True)
        for src in paths:
            write_pair(src, out / name, size, threshold, blur)
    return {name: len(paths) for name, paths in splits.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="horse2zebra folder (trainA/ trainB/ testA/ testB/)")
    parser.add_argument("out", type=Path, help="output folder (created; outside the repository)")
    parser.add_argument("--size", type=int, default=64, help="side of the square images (default 64)")
    parser.add_argument("--val", type=int, default=100, help="validation pairs carved from train (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the validation carve (default 0)")
    parser.add_argument("--threshold", type=float, default=0.2, help="edge threshold, a fraction of the image's peak gradient")
    parser.add_argument("--blur", type=float, default=1.0, help="Gaussian blur radius before Sobel, in pixels at --size")
    args = parser.parse_args()
    counts = build(args.root, args.out, args.size, args.val, args.seed, args.threshold, args.blur)
    print(f"{args.out}: " + ", ".join(f"{name} {n} pairs" for name, n in counts.items()) + f" at {args.size}x{args.size}")


if __name__ == "__main__":
    main()
