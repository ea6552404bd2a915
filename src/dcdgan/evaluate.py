"""Translate a split with a generator and score it: FID/KID, PSNR/SSIM (paired), segmentation mIoU, params and MACs."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from dcdgan.errors import UserError
from dcdgan.metrics.fid import ReferenceStats, frechet_distance, kernel_inception_distance
from dcdgan.metrics.inception import FIDInception
from dcdgan.metrics.lpips import lpips_distance
from dcdgan.metrics.paired import psnr_ssim, to_uint8
from dcdgan.metrics.profile import count_macs, count_params
from dcdgan.metrics.segmentation import SegmentationScore, read_label_map


def spread_indices(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``range(n)`` (all of them when k >= n)."""
    if k >= n:
        return list(range(n))
    return [int(i) for i in np.linspace(0, n - 1, k).round().astype(int)]


def _limit(dataset: Dataset, max_images: int) -> Dataset:
    # Spread, not the first N: splits are often ordered (the embedded shoes by class), so a capped
    # evaluation must still cover the whole split.
    return Subset(dataset, spread_indices(len(dataset), max_images)) if max_images > 0 else dataset


def batches(dataset: Dataset, batch_size: int, max_images: int = 0) -> DataLoader:
    """Sequential, unaugmented batches of (at most ``max_images`` of) a dataset."""
    return DataLoader(_limit(dataset, max_images), batch_size=batch_size, shuffle=False)


def quiet(flag: bool):
    """tqdm ``disable`` value: silence bars in tests and non-interactive calls."""
    return True if flag else None


@contextmanager
def eval_mode(*nets: nn.Module | None) -> Iterator[None]:
    """Put networks in eval mode (BatchNorm statistics, no dropout) for the block, then restore their modes."""
    present = [n for n in nets if n is not None]
    modes = [n.training for n in present]
    for n in present:
        n.eval()
    try:
        yield
    finally:
        for n, mode in zip(present, modes):
            n.train(mode)


@torch.no_grad()
def translate(gen: nn.Module, loader: DataLoader, device: torch.device, desc: str = "", quiet_bar: bool = False) -> Iterator[tuple[Tensor, dict]]:
    """Yield (uint8 outputs, batch) for every batch, the generator in eval mode."""
    with eval_mode(gen):
        for batch in tqdm(loader, desc=desc, leave=False, disable=quiet(quiet_bar)):
            yield to_uint8(gen(batch["A"].to(device))).cpu(), batch


@torch.no_grad()
def image_features(inception: FIDInception, loader: DataLoader, key: str = "A", desc: str = "", quiet_bar: bool = False) -> np.ndarray:
    """Inception pool3 features of the (real) images under ``key`` of every batch."""
    feats = [inception(to_uint8(b[key])).cpu().numpy() for b in tqdm(loader, desc=desc, leave=False, disable=quiet(quiet_bar))]
    return np.concatenate(feats).astype(np.float64)


@dataclass
class Segmentation:
    """A segmenter plus the folder of integer label maps matched to test inputs by file stem."""

    scorer: SegmentationScore
    labels_dir: Path

    def labels_for(self, names: list[str]) -> Tensor:
        """Label maps of a batch, stacked."""
        maps = []
        for name in names:
            stem = Path(name).stem
            found = sorted(self.labels_dir.glob(f"{stem}.*"))
            if not found:
                raise UserError(f"{self.labels_dir}: no label map named {stem}.* for test image {name}")
            label = read_label_map(found[0])
            if label.ndim != 2:
                raise UserError(f"{found[0]}: label maps must be single-channel class ids, got shape {tuple(label.shape)}")
            maps.append(label)
        if len({m.shape for m in maps}) > 1:
            raise UserError(f"{self.labels_dir}: label maps of one batch differ in size; use --batch-size 1")
        return torch.stack(maps)


def score_generator(
    gen: nn.Module,
    dataset: Dataset,
    device: torch.device,
    batch_size: int,
    max_images: int = 0,
    inception: FIDInception | None = None,
    reference: ReferenceStats | None = None,
    segmentation: Segmentation | None = None,
    lpips_model: nn.Module | None = None,
    desc: str = "",
    quiet_bar: bool = False,
) -> dict:
    """Metrics of ``gen`` on ``dataset``: fid/kid against ``reference``; psnr/ssim (and lpips) when items carry an aligned B."""
    feats, psnr, ssim, lpips, n = [], [], [], [], 0
    for fake, batch in translate(gen, batches(dataset, batch_size, max_images), device, desc, quiet_bar):
        n += len(fake)
        if inception is not None:
            feats.append(inception(fake).cpu().numpy())
        if "B" in batch and batch["B"].shape == fake.shape:
            real = to_uint8(batch["B"])
            p, s = psnr_ssim(fake, real)
            psnr.append(p)
            ssim.append(s)
            if lpips_model is not None:
                lpips.append(lpips_distance(lpips_model, fake, real))
        if segmentation is not None:
            segmentation.scorer.update(fake, segmentation.labels_for(batch["name"]))
    result: dict = {"n_images": n}
    if inception is not None and reference is not None:
        fake_feats = np.concatenate(feats).astype(np.float64)
        stats = ReferenceStats.from_features(fake_feats, keep_features=False)
        result["fid"] = frechet_distance(stats.mu, stats.sigma, reference.mu, reference.sigma)
        if reference.features is not None:
            result["kid_mean"], result["kid_std"] = kernel_inception_distance(reference.features, fake_feats)
    if psnr:
        result["psnr"] = float(torch.cat(psnr).mean())
        result["ssim"] = float(torch.cat(ssim).mean())
    if lpips:
        result["lpips"] = float(torch.cat(lpips).mean())
    if segmentation is not None:
        result.update(segmentation.scorer.compute())
    return result


@torch.no_grad()
def l1_distance(gen: nn.Module, dataset: Dataset, device: torch.device, batch_size: int, reference: nn.Module | None = None, max_images: int = 0) -> float:
    """Mean |gen(A) - target| in [-1, 1] units: target = B of aligned items, or ``reference(A)`` (the teacher)."""
    total, count = 0.0, 0
    with eval_mode(gen, reference):
        for batch in batches(dataset, batch_size, max_images):
            a = batch["A"].to(device)
            target = reference(a) if reference is not None else batch["B"].to(device)
            total += (gen(a) - target).abs().mean(dim=(1, 2, 3)).sum().item()
            count += len(a)
    return total / max(count, 1)


def size_of(gen: nn.Module, channels: int, size: int) -> dict:
    """{'params', 'macs'} of a generator on a 1 x channels x size x size input."""
    return {"params": count_params(gen), "macs": count_macs(gen, (1, channels, size, size))}
