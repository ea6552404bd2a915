"""Build the embedded Fashion-MNIST shoe dataset shipped in dcdgan (src/dcdgan/assets/fashion_shoes.npz).

Source: Debian's ``dataset-fashion-mnist`` package (``apt-get install dataset-fashion-mnist``), i.e. the
original Zalando Research release (MIT license; Xiao, Rasul, Vollgraf 2017, arXiv:1708.07747).

Two tasks, every split disjoint from every other:
- paired ``shoes_paired``: A = edges of the photo (thresholded Sobel, black lines on white), B = the
  photo; classes 5 sandal, 7 sneaker, 9 ankle boot (an edges2shoes analogue);
- unpaired ``shoes_unpaired``: A = sneakers (class 7), B = ankle boots (class 9).
train and val come from Fashion-MNIST's training file, test from its t10k file, each class taken in
file order, so the build is deterministic. Run:

    python scripts/build_builtin_dataset.py [--src /usr/share/datasets/fashion-mnist] [--out src/dcdgan/assets/fashion_shoes.npz]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
from pathlib import Path

import numpy as np

SANDAL, SNEAKER, ANKLE_BOOT = 5, 7, 9
PAIRED_CLASSES = (SANDAL, SNEAKER, ANKLE_BOOT)
# images per class
PAIRED_SIZES = {"train": 800, "val": 100, "test": 100}
UNPAIRED_SIZES = {"train": 1000, "val": 100, "test": 200}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (the MNIST container format)."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def edges(photos: np.ndarray, threshold: float = 0.18) -> np.ndarray:
    """Black-on-white edge maps: Sobel gradient magnitude above ``threshold`` x its per-image maximum."""
    x = photos.astype(np.float32)
    p = np.pad(x, ((0, 0), (1, 1), (1, 1)), mode="edge")
    gx = (p[:, :-2, 2:] + 2 * p[:, 1:-1, 2:] + p[:, 2:, 2:]) - (p[:, :-2, :-2] + 2 * p[:, 1:-1, :-2] + p[:, 2:, :-2])
    gy = (p[:, 2:, :-2] + 2 * p[:, 2:, 1:-1] + p[:, 2:, 2:]) - (p[:, :-2, :-2] + 2 * p[:, :-2, 1:-1] + p[:, :-2, 2:])
    mag = np.hypot(gx, gy)
    peak = mag.reshape(len(mag), -1).max(axis=1).reshape(-1, 1, 1) + 1e-6
    return np.where(mag > threshold * peak, 0, 255).astype(np.uint8)


def take(labels: np.ndarray, cls: int, start: int, count: int) -> np.ndarray:
    """Indices of images ``start .. start+count`` of class ``cls``, in file order."""
    idx = np.flatnonzero(labels == cls)[start : start + count]
    if len(idx) < count:
        raise SystemExit(f"class {cls}: asked for {count} images from position {start}, only {len(idx)} left")
    return idx


def build(src: Path) -> dict[str, np.ndarray]:
    """All arrays of the embedded dataset, keyed ``{task}_{split}_{A|B}``."""
    train_x = read_idx(src / "train-images-idx3-ubyte.gz")
    train_y = read_idx(src / "train-labels-idx1-ubyte.gz")
    test_x = read_idx(src / "t10k-images-idx3-ubyte.gz")
    test_y = read_idx(src / "t10k-labels-idx1-ubyte.gz")
    arrays: dict[str, np.ndarray] = {}
    used = {c: 0 for c in range(10)}  # next unused position per class, training file
    used_test = {c: 0 for c in range(10)}

    def grab(cls: int, split: str, count: int) -> np.ndarray:
        x, y, pos = (test_x, test_y, used_test) if split == "test" else (train_x, train_y, used)
        idx = take(y, cls, pos[cls], count)
        pos[cls] += count
        return x[idx]

    for split, n in PAIRED_SIZES.items():
        photos = np.concatenate([grab(c, split, n) for c in PAIRED_CLASSES])
        arrays[f"shoes_paired_{split}_A"] = edges(photos)
        arrays[f"shoes_paired_{split}_B"] = photos
    for split, n in UNPAIRED_SIZES.items():
        arrays[f"shoes_unpaired_{split}_A"] = grab(SNEAKER, split, n)
        arrays[f"shoes_unpaired_{split}_B"] = grab(ANKLE_BOOT, split, n)
    return arrays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "src/dcdgan/assets/fashion_shoes.npz")
    args = parser.parse_args()
    arrays = build(args.src)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    digest = hashlib.sha256(args.out.read_bytes()).hexdigest()
    for key, value in arrays.items():
        print(f"{key:28s} {value.shape}")
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB, sha256 {digest})")


if __name__ == "__main__":
    main()
