"""Datasets: paired (A|B side by side, or A/ B/ folders matched by name), unpaired (trainA/trainB), single folder,
and the embedded Fashion-MNIST shoes.

Augmentation randomness is a pure function of a per-sample seed that the sampler hands out, never of
global RNG state: the same (seed, epoch) gives the same crops and flips whatever the number of
workers, and a resumed run replays exactly the batches it would have seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Iterator, Protocol

import numpy as np
import torchvision.transforms.functional as TF
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset, Sampler
from torchvision.transforms import InterpolationMode

from dcdgan.config import DataConfig
from dcdgan.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
BUILTIN_FILE = "fashion_shoes.npz"
HOLDOUT_SEED = 20230614  # fixed, so every training seed validates on the same held-out images


# ---------------------------------------------------------------- images


def is_image_file(path: Path) -> bool:
    """Whether ``path`` is a file with an image extension (any case: ``.JPG`` is an image)."""
    return path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()


def list_images(folder: Path, exclude: frozenset[Path] = frozenset()) -> list[Path]:
    """Image files in ``folder`` (not recursive), sorted by name, minus ``exclude``; UserError when there are none."""
    if not folder.is_dir():
        raise UserError(f"{folder}: folder not found")
    paths = sorted(p for p in folder.iterdir() if is_image_file(p) and p.absolute() not in exclude)
    if not paths:
        raise UserError(f"{folder}: no images ({', '.join(IMAGE_EXTENSIONS)})")
    return paths


def to_mode(img: Image.Image, channels: int) -> Image.Image:
    """Convert any PIL image (grayscale, RGBA, palette, 16-bit) to 1-channel L or 3-channel RGB."""
    if channels not in (1, 3):
        raise UserError(f"images can be loaded with 1 or 3 channels, not {channels}")
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        img = Image.fromarray((np.asarray(img, dtype=np.float64) / 257.0).clip(0, 255).astype(np.uint8))
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))  # transparent pixels become white
        img = Image.alpha_composite(background, img)
    return img.convert("L" if channels == 1 else "RGB")


def read_image(path: Path) -> Image.Image:
    """Open an image fully, turned as a viewer shows it (EXIF orientation), or raise a UserError naming the file."""
    try:
        with Image.open(path) as img:
            img.load()
            return ImageOps.exif_transpose(img)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise UserError(f"{path}: cannot read image ({err})") from None


# ---------------------------------------------------------------- sources: index -> PIL image(s)


class ImageSource(Protocol):
    def __len__(self) -> int: ...
    def image(self, i: int) -> Image.Image: ...
    def name(self, i: int) -> str: ...


class PairSource(Protocol):
    def __len__(self) -> int: ...
    def pair(self, i: int) -> tuple[Image.Image, Image.Image]: ...
    def name(self, i: int) -> str: ...


@dataclass
class FolderImages:
    paths: list[Path]

    def __len__(self) -> int:
        return len(self.paths)

    def image(self, i: int) -> Image.Image:
        return read_image(self.paths[i])

    def name(self, i: int) -> str:
        return self.paths[i].name


@dataclass
class ArrayImages:
    """uint8 arrays N x H x W (grayscale) or N x H x W x 3."""

    arrays: np.ndarray
    prefix: str

    def __len__(self) -> int:
        return len(self.arrays)

    def image(self, i: int) -> Image.Image:
        return Image.fromarray(self.arrays[i])

    def name(self, i: int) -> str:
        return f"{self.prefix}_{i:05d}.png"


@dataclass
class SideBySidePairs:
    """pix2pix 'aligned' files: A on the left half, B on the right half."""

    paths: list[Path]

    def __len__(self) -> int:
        return len(self.paths)

    def pair(self, i: int) -> tuple[Image.Image, Image.Image]:
        img = read_image(self.paths[i])
        w, h = img.size
        if w < 2:
            raise UserError(f"{self.paths[i]}: {w}x{h} is too narrow to hold A and B side by side")
        half = w // 2
        return img.crop((0, 0, half, h)), img.crop((half, 0, 2 * half, h))

    def name(self, i: int) -> str:
        return self.paths[i].name


@dataclass
class ZippedPairs:
    """Two image sources of equal length, item i of one paired with item i of the other."""

    a: ImageSource
    b: ImageSource

    def __len__(self) -> int:
        return len(self.a)

    def pair(self, i: int) -> tuple[Image.Image, Image.Image]:
        return self.a.image(i), self.b.image(i)

    def name(self, i: int) -> str:
        return self.a.name(i)


@dataclass
class SwappedPairs:
    """B becomes the source and A the target (``direction: BtoA``)."""

    pairs: PairSource

    def __len__(self) -> int:
        return len(self.pairs)

    def pair(self, i: int) -> tuple[Image.Image, Image.Image]:
        a, b = self.pairs.pair(i)
        return b, a

    def name(self, i: int) -> str:
        return self.pairs.name(i)


@dataclass
class Subset:
    """Items ``indices`` of a source (pair or image source)."""

    source: ImageSource | PairSource
    indices: list[int]

    def __len__(self) -> int:
        return len(self.indices)

    def image(self, i: int) -> Image.Image:
        return self.source.image(self.indices[i])

    def pair(self, i: int) -> tuple[Image.Image, Image.Image]:
        return self.source.pair(self.indices[i])

    def name(self, i: int) -> str:
        return self.source.name(self.indices[i])


def unmatched_names(a: list[Path], b: list[Path]) -> str:
    """'' when the stems of ``a`` and ``b`` match one to one, else a summary naming a few without a partner."""
    stems_a, stems_b = {p.stem for p in a}, {p.stem for p in b}
    lonely = sorted(p.name for p in a if p.stem not in stems_b) + sorted(p.name for p in b if p.stem not in stems_a)
    if not lonely:
        return ""
    more = f" and {len(lonely) - 3} more" if len(lonely) > 3 else ""
    return f"{len(lonely)} files have no partner of the same name (e.g. {', '.join(lonely[:3])}{more})"


def matched_folders(folder_a: Path, folder_b: Path, exclude: frozenset[Path] = frozenset()) -> ZippedPairs:
    """Pairs from two folders, matched by file stem; UserError listing what has no partner."""
    a = {p.stem: p for p in list_images(folder_a, exclude)}
    b = {p.stem: p for p in list_images(folder_b, exclude)}
    problem = unmatched_names(list(a.values()), list(b.values()))
    if problem:
        raise UserError(f"{folder_a} and {folder_b}: {problem}")
    stems = sorted(a)
    return ZippedPairs(FolderImages([a[s] for s in stems]), FolderImages([b[s] for s in stems]))


# ---------------------------------------------------------------- transforms


@dataclass(frozen=True)
class Transform:
    """pix2pix-style preprocessing; the random choices come from the rng handed to ``__call__``."""

    preprocess: str
    load_size: int
    crop_size: int
    flip: bool
    train: bool

    def params(self, size: tuple[int, int], rng: np.random.Generator | None) -> dict:
        """Resize target, crop corner and flip for an image of ``size`` (w, h); deterministic when rng is None."""
        w, h = size
        if not self.train or rng is None:
            if self.preprocess.startswith("scale_width"):
                return {"resize": (max(1, round(self.crop_size * h / w)), self.crop_size), "crop": None, "flip": False}
            if self.preprocess == "none":
                return {"resize": (_mult4(h), _mult4(w)), "crop": None, "flip": False}
            return {"resize": (self.crop_size, self.crop_size), "crop": None, "flip": False}
        if self.preprocess == "resize_and_crop":
            rh, rw = self.load_size, self.load_size
        elif self.preprocess.startswith("scale_width"):
            rw = self.load_size
            rh = max(round(self.load_size * h / w), self.crop_size)
        else:
            rh, rw = _mult4(h), _mult4(w)
        crop = None
        if self.preprocess.endswith("crop"):
            crop = (int(rng.integers(0, rh - self.crop_size + 1)), int(rng.integers(0, rw - self.crop_size + 1)))
        return {"resize": (rh, rw), "crop": crop, "flip": bool(self.flip and rng.random() > 0.5)}

    def apply(self, img: Image.Image, params: dict) -> Tensor:
        """Resize (bicubic), crop, flip, and map to a float tensor in [-1, 1]."""
        if (img.size[1], img.size[0]) != params["resize"]:
            img = TF.resize(img, list(params["resize"]), InterpolationMode.BICUBIC)
        if params["crop"] is not None:
            img = TF.crop(img, params["crop"][0], params["crop"][1], self.crop_size, self.crop_size)
        if params["flip"]:
            img = TF.hflip(img)
        return TF.to_tensor(img) * 2.0 - 1.0


def _mult4(n: int) -> int:
    return max(4, round(n / 4) * 4)


# ---------------------------------------------------------------- datasets

# Dataset items are addressed by (index, sample_seed): the seed drives augmentation (and the random B
# of unpaired data); a bare index means no augmentation.


def _unpack(item: int | tuple[int, int | None]) -> tuple[int, np.random.Generator | None]:
    index, seed = item if isinstance(item, tuple) else (item, None)
    return int(index), (None if seed is None else np.random.default_rng(int(seed)))


class PairedDataset(Dataset):
    """{"A", "B", "name"} with one identical random transform for A and B."""

    def __init__(self, pairs: PairSource, transform: Transform, input_nc: int, output_nc: int):
        self.pairs, self.transform = pairs, transform
        self.input_nc, self.output_nc = input_nc, output_nc

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, item) -> dict:
        index, rng = _unpack(item)
        a, b = self.pairs.pair(index)
        params = self.transform.params(a.size, rng)
        if b.size != a.size:  # paired images of unequal size: bring B to A's size before the shared transform
            b = b.resize(a.size, Image.BICUBIC)
        return {
            "A": self.transform.apply(to_mode(a, self.input_nc), params),
            "B": self.transform.apply(to_mode(b, self.output_nc), params),
            "name": self.pairs.name(index),
        }


class UnpairedDataset(Dataset):
    """CycleGAN 'unaligned': item i gives A[i mod |A|] and a random B (sequential B when not training).

    One pass is max(|A|, |B|) items, as CycleGAN's; ``size`` sets another (|A|: one pass over the A images).
    """

    def __init__(self, a: ImageSource, b: ImageSource, transform: Transform, input_nc: int, output_nc: int, size: int | None = None):
        self.a, self.b, self.transform = a, b, transform
        self.input_nc, self.output_nc = input_nc, output_nc
        self.size = size

    def __len__(self) -> int:
        return self.size if self.size is not None else max(len(self.a), len(self.b))

    def __getitem__(self, item) -> dict:
        index, rng = _unpack(item)
        a_index = index % len(self.a)
        b_index = int(rng.integers(len(self.b))) if rng is not None else index % len(self.b)
        a, b = self.a.image(a_index), self.b.image(b_index)
        return {
            "A": self.transform.apply(to_mode(a, self.input_nc), self.transform.params(a.size, rng)),
            "B": self.transform.apply(to_mode(b, self.output_nc), self.transform.params(b.size, rng)),
            "name": self.a.name(a_index),
        }


class SingleDataset(Dataset):
    """{"A", "name"} from one image source (translation inputs, FID reference folders)."""

    def __init__(self, images: ImageSource, transform: Transform, channels: int):
        self.images, self.transform, self.channels = images, transform, channels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, item) -> dict:
        index, rng = _unpack(item)
        img = self.images.image(index)
        return {"A": self.transform.apply(to_mode(img, self.channels), self.transform.params(img.size, rng)), "name": self.images.name(index)}


class EpochSampler(Sampler):
    """Yields (index, sample_seed) for one pass, shuffled by (seed, epoch); ``begin`` selects the pass and where to resume."""

    def __init__(self, size: int, seed: int, shuffle: bool = True):
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.epoch, self.skip = 0, 0

    def begin(self, epoch: int, skip: int = 0) -> None:
        """Next iteration covers pass ``epoch``, leaving out its first ``skip`` items."""
        self.epoch, self.skip = epoch, skip

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(self.size) if self.shuffle else np.arange(self.size)
        seeds = rng.integers(0, 2**62, size=self.size)
        for i in range(self.skip, self.size):
            yield int(order[i]), int(seeds[i])

    def __len__(self) -> int:
        return self.size - self.skip


# ---------------------------------------------------------------- splits of a configured dataset


@dataclass
class SplitData:
    """What a split offers: pairs (paired data) or the A and B image collections (unpaired)."""

    pairs: PairSource | None = None
    a: ImageSource | None = None
    b: ImageSource | None = None

    @property
    def inputs(self) -> ImageSource:
        """The source-domain images (for translation and evaluation)."""
        return self.a if self.pairs is None else _PairSide(self.pairs, 0)

    @property
    def targets(self) -> ImageSource:
        """The target-domain images (ground truth when paired, the reference distribution when unpaired)."""
        return self.b if self.pairs is None else _PairSide(self.pairs, 1)

    def __len__(self) -> int:
        return len(self.pairs) if self.pairs is not None else len(self.a)

    def select(self, choose) -> "SplitData":
        """Keep, of the pairs (or of A and of B separately), the indices ``choose(count, description)`` returns."""
        if self.pairs is not None:
            return SplitData(pairs=Subset(self.pairs, choose(len(self.pairs), "the training pairs")))
        return SplitData(a=Subset(self.a, choose(len(self.a), "the A training images")), b=Subset(self.b, choose(len(self.b), "the B training images")))


@dataclass
class _PairSide:
    pairs: PairSource
    side: int

    def __len__(self) -> int:
        return len(self.pairs)

    def image(self, i: int) -> Image.Image:
        return self.pairs.pair(i)[self.side]

    def name(self, i: int) -> str:
        return self.pairs.name(i)


def split_layout(root: Path, mode: str, split: str) -> tuple[str, Path, Path | None]:
    """How a split is stored: ("unpaired", splitA, splitB), ("matched", A folder, B folder) or ("side_by_side", folder, None)."""
    if mode == "unpaired":
        return "unpaired", root / f"{split}A", root / f"{split}B"
    folder = root / split
    if (folder / "A").is_dir() and (folder / "B").is_dir():
        return "matched", folder / "A", folder / "B"
    if (root / "A" / split).is_dir() and (root / "B" / split).is_dir():
        return "matched", root / "A" / split, root / "B" / split
    return "side_by_side", folder, None


class DataRoot:
    """A configured dataset: resolves split names (and the holdout carved from train) to sources.

    ``exclude``: absolute paths of files to leave out (the bad images a scan found with ``data.on_bad_image=skip``).
    """

    def __init__(self, cfg: DataConfig, exclude: frozenset[Path] = frozenset()):
        self.cfg = cfg
        self.exclude = frozenset(exclude)
        self.builtin = cfg.root.startswith("builtin:")
        self.root = None if self.builtin else Path(cfg.root).expanduser()
        if self.root is not None and not self.root.is_dir():
            raise UserError(f"{self.root}: dataset folder not found (data.root)")

    @cached_property
    def _arrays(self) -> dict[str, np.ndarray]:
        with resources.files("dcdgan.assets").joinpath(BUILTIN_FILE).open("rb") as f:
            with np.load(f) as npz:
                return {k: npz[k] for k in npz.files}

    def _raw_split(self, split: str) -> SplitData:
        data = self._split_as_stored(split)
        if self.cfg.direction == "AtoB":
            return data
        return SplitData(pairs=SwappedPairs(data.pairs)) if data.pairs is not None else SplitData(a=data.b, b=data.a)

    def _split_as_stored(self, split: str) -> SplitData:
        cfg = self.cfg
        if self.builtin:
            key = cfg.root.split(":", 1)[1]
            if f"{key}_{split}_A" not in self._arrays:
                raise UserError(f"{cfg.root}: no split {split!r} (splits: train, val, test)")
            a = ArrayImages(self._arrays[f"{key}_{split}_A"], f"{split}A")
            b = ArrayImages(self._arrays[f"{key}_{split}_B"], f"{split}B")
            return SplitData(pairs=ZippedPairs(a, b)) if cfg.mode == "paired" else SplitData(a=a, b=b)
        kind, first, second = split_layout(self.root, cfg.mode, split)
        if kind == "unpaired":
            return SplitData(a=FolderImages(list_images(first, self.exclude)), b=FolderImages(list_images(second, self.exclude)))
        if kind == "matched":
            return SplitData(pairs=matched_folders(first, second, self.exclude))
        return SplitData(pairs=SideBySidePairs(list_images(first, self.exclude)))

    def _holdout_indices(self, n: int, count: int, what: str) -> tuple[list[int], list[int]]:
        if count < 1 or count >= n:
            raise UserError(f"data.holdout={count} must be between 1 and {n - 1} ({what}: {n})")
        chosen = np.random.default_rng(HOLDOUT_SEED).permutation(n)[:count]
        keep = sorted(set(range(n)) - set(chosen.tolist()))
        return sorted(chosen.tolist()), keep

    def split(self, name: str) -> SplitData:
        """Sources of a split; ``holdout`` and the train split account for the carved-out validation images."""
        cfg = self.cfg
        if name == "holdout" and cfg.val_split != "holdout":
            raise UserError("split 'holdout' exists only when data.val_split=holdout")
        data = self._raw_split(cfg.train_split if name == "holdout" else name)
        if cfg.val_split == "holdout" and name in ("holdout", cfg.train_split):
            side = 0 if name == "holdout" else 1  # (held out, kept for training)
            data = data.select(lambda n, what: self._holdout_indices(n, cfg.holdout, what)[side])
        if name == cfg.train_split and cfg.max_train_images > 0:
            data = data.select(lambda n, what: list(range(min(cfg.max_train_images, n))))
        return data

    def transform(self, train: bool) -> Transform:
        """The configured preprocessing (random only when ``train``)."""
        c = self.cfg
        return Transform(c.preprocess, c.load_size, c.crop_size, c.flip, train)

    def train_dataset(self) -> Dataset:
        """Training pairs (paired) or A/B draws (unpaired), with training augmentation."""
        data = self.split(self.cfg.train_split)
        return self._dataset(data, train=True)

    def _dataset(self, data: SplitData, train: bool) -> Dataset:
        c = self.cfg
        if data.pairs is not None:
            return PairedDataset(data.pairs, self.transform(train), c.input_nc, c.output_nc)
        return UnpairedDataset(data.a, data.b, self.transform(train), c.input_nc, c.output_nc)

    def train_inputs(self, with_targets: bool = False) -> Dataset:
        """Training A images (the CycleGAN student's burst epochs run over these), one pass over them; with
        ``with_targets`` each comes with a B image (a random one when unpaired) for the student's own discriminator."""
        data = self.split(self.cfg.train_split)
        if not with_targets:
            return SingleDataset(data.inputs, self.transform(True), self.cfg.input_nc)
        if data.pairs is not None:
            return self._dataset(data, train=True)
        return UnpairedDataset(data.a, data.b, self.transform(True), self.cfg.input_nc, self.cfg.output_nc, size=len(data.a))

    def eval_dataset(self, name: str) -> Dataset:
        """A split without augmentation: pairs when paired, sequential A/B when unpaired."""
        return self._dataset(self.split(name), train=False)

    def eval_inputs(self, name: str) -> SingleDataset:
        """Source images of a split, without augmentation."""
        return SingleDataset(self.split(name).inputs, self.transform(False), self.cfg.input_nc)

    def eval_targets(self, name: str) -> SingleDataset:
        """Target-domain images of a split, without augmentation."""
        return SingleDataset(self.split(name).targets, self.transform(False), self.cfg.output_nc)


def folder_dataset(folder: str | Path, channels: int, size: int | None = None) -> SingleDataset:
    """Every image of one folder, resized to ``size`` x ``size`` (or kept, rounded to a multiple of 4)."""
    transform = Transform("resize_and_crop" if size else "none", size or 0, size or 0, False, False)
    return SingleDataset(FolderImages(list_images(Path(folder))), transform, channels)
