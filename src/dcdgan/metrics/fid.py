"""Frechet Inception Distance and Kernel Inception Distance from features; reference statistics files.

Statistics files use the pytorch-fid / GAN Compression format: an ``.npz`` with ``mu`` (2048,) and
``sigma`` (2048, 2048). ``dcdgan stats`` also stores ``features`` (N, 2048) so KID can be computed
against the file; readers that only know mu/sigma ignore it.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import linalg

from dcdgan.checkpoint import atomic_write
from dcdgan.errors import UserError


@dataclass
class ReferenceStats:
    mu: np.ndarray
    sigma: np.ndarray
    features: np.ndarray | None = None

    @classmethod
    def from_features(cls, features: np.ndarray, keep_features: bool = True) -> "ReferenceStats":
        """Mean and covariance (float64, unbiased, as pytorch-fid) of (N, D) features."""
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or len(features) < 2:
            raise UserError(f"FID statistics need at least 2 images, got {len(features)}")
        return cls(features.mean(axis=0), np.cov(features, rowvar=False), features.astype(np.float32) if keep_features else None)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 sqrt(S1 S2)), computed as pytorch-fid does (scipy sqrtm, eps on failure)."""
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise UserError(f"FID statistics of different dimensions: {mu1.shape} vs {mu2.shape}")
    diff = mu1 - mu2
    with warnings.catch_warnings():
        # fewer images than dimensions make sigma singular; scipy warns, the eps retry below handles it as pytorch-fid does
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean, _ = linalg.sqrtm(sigma1.dot(sigma2), disp=False)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"FID: imaginary component {np.max(np.abs(covmean.imag))} in sqrtm")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def kernel_inception_distance(
    real: np.ndarray, fake: np.ndarray, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """KID (Binkowski et al. 2018): unbiased MMD^2 with the cubic polynomial kernel, mean and std over random subsets."""
    real, fake = np.asarray(real, dtype=np.float64), np.asarray(fake, dtype=np.float64)
    m = min(subset_size, len(real), len(fake))
    if m < 2:
        raise UserError(f"KID needs at least 2 images on each side, got {len(real)} and {len(fake)}")
    d = real.shape[1]
    rng = np.random.default_rng(seed)
    scores = np.empty(subsets)
    for i in range(subsets):
        x = real[rng.choice(len(real), m, replace=False)]
        y = fake[rng.choice(len(fake), m, replace=False)]
        k_xx = (x @ x.T / d + 1) ** 3
        k_yy = (y @ y.T / d + 1) ** 3
        k_xy = (x @ y.T / d + 1) ** 3
        scores[i] = (
            (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
            + (k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
            - 2 * k_xy.mean()
        )
    return float(scores.mean()), float(scores.std())


def save_stats(path: str | Path, stats: ReferenceStats) -> None:
    """Write an .npz with mu, sigma (and features when present), atomically."""
    arrays = {"mu": stats.mu, "sigma": stats.sigma}
    if stats.features is not None:
        arrays["features"] = stats.features

    def write(tmp: Path) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        tmp.write_bytes(buffer.getvalue())

    atomic_write(Path(path), write)


def load_stats(path: str | Path) -> ReferenceStats:
    """Read a pytorch-fid/GAN Compression .npz; UserError naming the file when it is unusable."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: FID statistics file not found")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in ("mu", "sigma") if k not in npz.files]
            if missing:
                raise UserError(f"{path}: missing {', '.join(missing)} (keys: {', '.join(npz.files)})")
            stats = ReferenceStats(npz["mu"], npz["sigma"], npz["features"] if "features" in npz.files else None)
    except UserError:
        raise
    except Exception as err:
        raise UserError(f"{path}: not a readable .npz ({type(err).__name__})") from None
    if stats.mu.ndim != 1 or stats.sigma.shape != (len(stats.mu), len(stats.mu)):
        raise UserError(f"{path}: mu {stats.mu.shape} and sigma {stats.sigma.shape} do not describe one distribution")
    return stats
