"""CycleGAN's image pool: fill first, then a coin per image decides between the new fake and a stored one."""

from __future__ import annotations

import torch

from dcdgan.pool import ImagePool


def images(start: int, n: int) -> torch.Tensor:
    """n 1x2x2 images whose every pixel holds its image number, so a returned image tells where it came from."""
    return torch.arange(start, start + n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 2, 2).clone()


def ids(batch: torch.Tensor) -> list[int]:
    return [int(img[0, 0, 0]) for img in batch]


def expected_queries(size: int, seed: int, batches: list[list[int]]) -> tuple[list[list[int]], list[int]]:
    """Shrivastava et al.'s buffer, written out: returns the ids each query yields and the pool contents after."""
    rng = torch.Generator().manual_seed(seed)
    stored: list[int] = []
    out = []
    for batch in batches:
        got = []
        for image in batch:
            if len(stored) < size:
                stored.append(image)
                got.append(image)
            elif torch.rand((), generator=rng).item() > 0.5:
                index = int(torch.randint(size, (), generator=rng))
                got.append(stored[index])
                stored[index] = image
            else:
                got.append(image)
        out.append(got)
    return out, stored


def test_pool_fills_then_replays_stored_fakes():
    pool = ImagePool(3, seed=7)
    first = pool.query(images(0, 2))
    assert ids(first) == [0, 1]  # filling: the new fakes pass through
    second = pool.query(images(2, 2))
    assert ids(second)[0] == 2 and len(pool.images) == 3  # the third one fills the pool
    outs = [second] + [pool.query(images(4 + 2 * k, 2)) for k in range(10)]
    batches = [[2, 3]] + [[4 + 2 * k, 5 + 2 * k] for k in range(10)]
    expected, stored = expected_queries(3, 7, [[0, 1]] + batches)
    assert [ids(o) for o in outs] == expected[1:]
    assert [ids(img) for img in pool.images] == [[i] for i in stored]
    replayed = [i for o, batch in zip(outs, batches) for i, new in zip(ids(o), batch) if i != new]
    assert len(replayed) >= 3 and all(i < 22 for i in replayed)  # old fakes really come back, never invented ones
    # a replayed image is an exact copy, detached and independent of the pool's storage
    assert all(not o.requires_grad for o in outs)


def test_pool_of_size_zero_passes_fakes_through_detached():
    pool = ImagePool(0, seed=0)
    fake = images(0, 4).requires_grad_(True)
    out = pool.query(fake)
    assert torch.equal(out, fake) and not out.requires_grad and pool.images == []


def test_pool_output_is_detached_from_the_generator_graph():
    pool = ImagePool(2, seed=0)
    fake = images(0, 2).requires_grad_(True) * 1.0
    assert not pool.query(fake).requires_grad


def test_pool_state_round_trip_continues_the_same_sequence():
    a = ImagePool(2, seed=3)
    for k in range(3):
        a.query(images(2 * k, 2))
    state = a.state_dict()
    assert state["images"].shape == (2, 1, 2, 2)
    b = ImagePool(2, seed=99)  # another seed: everything must come from the state
    b.load_state_dict(state, torch.device("cpu"))
    for k in range(3, 8):
        assert ids(a.query(images(2 * k, 2))) == ids(b.query(images(2 * k, 2)))
    assert [ids(i) for i in a.images] == [ids(i) for i in b.images]


def test_empty_pool_state_round_trip():
    pool = ImagePool(4, seed=1)
    state = pool.state_dict()
    assert state["images"].numel() == 0
    other = ImagePool(4, seed=5)
    other.query(images(0, 1))
    other.load_state_dict(state, torch.device("cpu"))
    assert other.images == []
    assert ids(other.query(images(10, 2))) == [10, 11]


def test_pool_state_keeps_multichannel_images_intact():
    pool = ImagePool(3, seed=0)
    rgb = torch.rand(3, 3, 4, 5)
    pool.query(rgb)
    other = ImagePool(3, seed=0)
    other.load_state_dict(pool.state_dict(), torch.device("cpu"))
    assert [tuple(i.shape) for i in other.images] == [(1, 3, 4, 5)] * 3
    assert all(torch.equal(a, b) for a, b in zip(pool.images, other.images))
    assert pool.state_dict()["images"].shape == (3, 3, 4, 5)
