"""FID reference statistics cached across runs: reused for the same images and weights, never when either changes."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from dcdgan.evaluate import batches, image_features
from dcdgan.fid_cache import cache_dir, cached_reference_stats
from dcdgan.metrics.fid import ReferenceStats
from dcdgan.metrics.inception import load_inception_file


def reference(dataset: Dataset, inception, batch_size: int, max_images: int = 0) -> ReferenceStats:
    """What evaluate.reference_stats does: the cached statistics of a dataset's images."""
    loader = batches(dataset, batch_size, max_images)
    return cached_reference_stats(loader, inception, lambda: ReferenceStats.from_features(image_features(inception, loader, quiet_bar=True)))


class Images(Dataset):
    """Seeded grayscale images in [-1, 1] under key A, as the evaluation datasets yield them."""

    def __init__(self, n: int, seed: int = 0, changed: int | None = None):
        g = torch.Generator().manual_seed(seed)
        self.images = torch.rand(n, 1, 16, 16, generator=g) * 2 - 1
        if changed is not None:
            self.images[changed] = -self.images[changed]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"A": self.images[i]}


@pytest.fixture
def counted(tiny_inception):
    """The TorchScript stand-in Inception, counting the images it is run on."""
    inception = load_inception_file(tiny_inception)
    seen = []
    inception.register_forward_hook(lambda _m, inputs, _out: seen.append(len(inputs[0])))
    return inception, seen


def test_second_request_reads_the_cache(counted):
    inception, seen = counted
    first = reference(Images(12), inception, 5)
    assert sum(seen) == 12 and len(list(cache_dir().glob("*.npz"))) == 1
    again = reference(Images(12), inception, 4)  # batch size is not part of the key
    assert sum(seen) == 12  # no Inception pass the second time
    assert np.array_equal(first.mu, again.mu) and np.array_equal(first.sigma, again.sigma) and np.array_equal(first.features, again.features)
    direct = ReferenceStats.from_features(np.concatenate([inception(((x + 1) * 127.5).round().to(torch.uint8)).numpy() for x in Images(12).images.split(5)]))
    assert np.allclose(first.mu, direct.mu, atol=1e-7) and np.allclose(first.sigma, direct.sigma, atol=1e-9)


def test_any_change_of_images_or_weights_is_a_new_entry(counted, tiny_inception):
    inception, seen = counted
    reference(Images(12), inception, 6)
    reference(Images(12, changed=7), inception, 6)  # one image differs
    reference(Images(12), inception, 6, max_images=10)  # fewer images
    assert sum(seen) == 12 + 12 + 10 and len(list(cache_dir().glob("*.npz"))) == 3
    stat = tiny_inception.stat()
    os.utime(tiny_inception, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # the weights file was replaced
    try:
        reference(Images(12), inception, 6)
    finally:
        os.utime(tiny_inception, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert sum(seen) == 12 + 12 + 10 + 12 and len(list(cache_dir().glob("*.npz"))) == 4


def test_a_corrupt_entry_is_computed_again(counted):
    inception, seen = counted
    stats = reference(Images(8), inception, 8)
    (entry,) = cache_dir().glob("*.npz")
    entry.write_bytes(b"not an npz")
    again = reference(Images(8), inception, 8)
    assert sum(seen) == 16 and np.array_equal(stats.mu, again.mu)
    assert reference(Images(8), inception, 8).features.shape == (8, 4) and sum(seen) == 16
