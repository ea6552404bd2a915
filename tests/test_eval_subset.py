"""A capped evaluation covers the whole split (the embedded splits are ordered by class)."""

import torch
from torch.utils.data import TensorDataset

from dcdgan.evaluate import batches, spread_indices


def test_spread_indices_cover_the_split_evenly():
    assert spread_indices(300, 3) == [0, 150, 299]
    assert spread_indices(300, 100)[:4] == [0, 3, 6, 9]
    assert spread_indices(300, 100)[-1] == 299
    assert len(set(spread_indices(300, 100))) == 100
    assert spread_indices(5, 10) == [0, 1, 2, 3, 4]


def test_capped_batches_take_every_class_of_a_class_ordered_split():
    labels = torch.arange(3).repeat_interleave(100)  # 100 sandals, 100 sneakers, 100 boots, in that order
    seen = torch.cat([b[0] for b in batches(TensorDataset(labels), 16, max_images=30)])
    assert len(seen) == 30
    assert torch.bincount(seen).tolist() == [10, 10, 10]
