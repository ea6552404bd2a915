"""Checkpoint contents at the unit level: the format tag, RNG capture and restore, what loading accepts."""

from __future__ import annotations

import random

import pytest
import torch

from dcdgan.checkpoint import FORMAT, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from dcdgan.errors import UserError


def draws() -> tuple:
    return random.random(), random.gauss(0, 1), torch.rand(3).tolist()


def test_rng_state_round_trip_through_a_checkpoint_file(tmp_path):
    random.seed(11)
    torch.manual_seed(11)
    random.gauss(0, 1)  # leaves a cached second gaussian in Python's state: it must be restored too
    save_checkpoint(tmp_path / "c.ckpt", {"rng": rng_state()})
    expected = draws()
    random.seed(0)
    torch.manual_seed(0)
    set_rng_state(load_checkpoint(tmp_path / "c.ckpt")["rng"])
    assert draws() == expected
    assert set(rng_state()) == {"python", "torch", "cuda"}


def test_saved_file_carries_the_format_tag_and_the_state(tmp_path):
    save_checkpoint(tmp_path / "c.ckpt", {"step": 7, "w": torch.arange(3)})
    raw = torch.load(tmp_path / "c.ckpt", weights_only=True)
    assert raw["format"] == FORMAT == 1 and raw["step"] == 7 and torch.equal(raw["w"], torch.arange(3))
    assert load_checkpoint(tmp_path / "c.ckpt")["step"] == 7
    assert [p.name for p in tmp_path.iterdir()] == ["c.ckpt"]


def test_other_format_versions_and_non_dicts_are_refused(tmp_path):
    torch.save({"format": FORMAT + 1, "step": 1}, tmp_path / "newer.ckpt")
    with pytest.raises(UserError, match=r"newer.ckpt: not a dcdgan checkpoint \(format 1\)"):
        load_checkpoint(tmp_path / "newer.ckpt")
    torch.save([1, 2], tmp_path / "list.ckpt")
    with pytest.raises(UserError, match="list.ckpt: not a dcdgan checkpoint"):
        load_checkpoint(tmp_path / "list.ckpt")
    (tmp_path / "dir.ckpt").mkdir()
    with pytest.raises(UserError, match="dir.ckpt: checkpoint not found"):
        load_checkpoint(tmp_path / "dir.ckpt")
