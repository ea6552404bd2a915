"""Build a paired edges -> photo task from other Fashion-MNIST classes, as PNG folders: a held-out task of the
embedded kind (issue 20, part 4: task (e), which confirms the quickstart's objective on data no recipe has used).

The edge operator and the split sizes are the embedded task's (scripts/build_builtin_dataset.py: 800 train, 100 val,
100 test per class for 3 classes), so ``--classes 8`` (bag) gives 2,400 / 300 / 300 pairs of one class. train and
val come from Fashion-MNIST's training file, test from its t10k file, each class in file order: deterministic.
Each split holds ``A/`` (edges) and ``B/`` (the photo), 28x28 grayscale PNG matched by name: dcdgan's paired folder
layout, which the quickstart recipe reads with ``data.root=OUT``.

    python scripts/build_fashion_paired.py /tmp/dcdgan-data/fashion-bag --classes 8 [--src /usr/share/datasets/fashion-mnist]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_builtin_dataset import PAIRED_CLASSES, edges, read_idx, take  # noqa: E402  (scripts/ is not a package)

SIZES = {"train": 2400, "val": 300, "test": 300}  # per split, all classes together (the embedded task's totals)


def build(src: Path, out: Path, classes: list[int], sizes: dict[str, int]) -> dict[str, int]:
    """Write the splits under ``out``; returns the number of pairs per split."""
    train_x, train_y = read_idx(src / "train-images-idx3-ubyte.gz"), read_idx(src / "train-labels-idx1-ubyte.gz")
    test_x, test_y = read_idx(src / "t10k-images-idx3-ubyte.gz"), read_idx(src / "t10k-labels-idx1-ubyte.gz")
    used = {c: 0 for c in classes}  # next unused position per class in the training file (train, then val)
    counts = {}
    for split, total in sizes.items():
        if total % len(classes):
            raise SystemExit(f"--{split} {total} does not split evenly over {len(classes)} classes")
        per_class = total // len(classes)
        photos = []
        for c in classes:
            x, y = (test_x, test_y) if split == "test" else (train_x, train_y)
            start = 0 if split == "test" else used[c]
            photos.append(x[take(y, c, start, per_class)])
            if split != "test":
                used[c] += per_class
        photos = np.concatenate(photos)
        for side, images in (("A", edges(photos)), ("B", photos)):
            folder = out / split / side
            folder.mkdir(parents=True, exist_ok=True)
            for i, image in enumerate(images):
                Image.fromarray(image, "L").save(folder / f"{i:05d}.png")
        counts[split] = len(photos)
    return counts


def main() -> None:
    """Command line: the output folder, the classes, optionally the source and the split sizes."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--classes", required=True, help="comma-separated Fashion-MNIST labels, e.g. 8 (bag)")
    parser.add_argument("--src", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    for split, n in SIZES.items():
        parser.add_argument(f"--{split}", type=int, default=n, help=f"pairs in {split}/ (default {n})")
    args = parser.parse_args()
    classes = [int(c) for c in args.classes.split(",")]
    if set(classes) & set(PAIRED_CLASSES):
        print(f"note: classes {sorted(set(classes) & set(PAIRED_CLASSES))} are the embedded task's: not a held-out task")
    if not (args.src / "train-images-idx3-ubyte.gz").is_file():
        raise SystemExit(f"{args.src}: no Fashion-MNIST files (apt-get install dataset-fashion-mnist, or --src DIR)")
    counts = build(args.src, args.out, classes, {"train": args.train, "val": args.val, "test": args.test})
    print(f"wrote {args.out}: " + ", ".join(f"{s} {n} pairs" for s, n in counts.items()))


if __name__ == "__main__":
    main()
