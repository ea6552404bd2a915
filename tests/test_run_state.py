"""The run-state half of checkpoint.py at the unit level: what a run's checkpoint holds, how it is restored, and the
folder of rotating checkpoints (which files each save leaves, and which one a resume falls back to)."""

from __future__ import annotations

import os
import random

import pytest
import torch

from dcdgan import checkpoint
from dcdgan.checkpoint import (
    FORMAT,
    keep_copy,
    load_checkpoint,
    load_newest,
    older_file,
    older_files,
    rank_state,
    restore_run,
    run_state,
    save_checkpoint,
    save_rotating,
    set_rng_state,
    sync_folder,
)
from dcdgan.errors import UserError
from dcdgan.pool import ImagePool

# ---------------------------------------------------------------- the folder of rotating checkpoints


def steps_in(folder) -> dict[str, int]:
    """File name -> the step it holds, for every checkpoint file in ``folder`` (temporary files included)."""
    return {p.name: (load_checkpoint(p)["step"] if p.name.endswith(".ckpt") else -1) for p in sorted(folder.iterdir())}


@pytest.mark.parametrize(
    "keep, expected",
    [
        (1, {"last.ckpt": 4}),
        (2, {"last.ckpt": 4, "last.1.ckpt": 3}),
        (3, {"last.ckpt": 4, "last.1.ckpt": 3, "last.2.ckpt": 2}),
        (5, {"last.ckpt": 4, "last.1.ckpt": 3, "last.2.ckpt": 2, "last.3.ckpt": 1}),
    ],
)
def test_save_rotating_keeps_the_newest_keep_files(tmp_path, keep, expected):
    for step in (1, 2, 3, 4):
        save_rotating(tmp_path, {"step": step}, keep)
    assert steps_in(tmp_path) == expected
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["format"] == FORMAT


def test_save_rotating_without_rotation_replaces_only_last(tmp_path):
    save_rotating(tmp_path, {"step": 1}, keep=3)
    save_rotating(tmp_path, {"step": 2}, keep=3)
    save_rotating(tmp_path, {"step": 2, "again": True}, keep=3, rotate=False)  # a second save at the same step
    assert steps_in(tmp_path) == {"last.ckpt": 2, "last.1.ckpt": 1}
    assert load_checkpoint(tmp_path / "last.ckpt")["again"] is True


def test_save_rotating_drops_files_beyond_a_smaller_keep_and_stale_temporaries(tmp_path):
    for step in (1, 2, 3):
        save_rotating(tmp_path, {"step": step}, keep=3)
    (tmp_path / ".last.ckpt.abc.tmp").write_bytes(b"left by a killed process")
    (tmp_path / "notes.txt").write_text("not ours")  # other files stay
    save_rotating(tmp_path, {"step": 4}, keep=2)
    assert steps_in(tmp_path) == {"last.1.ckpt": 3, "last.ckpt": 4, "notes.txt": -1}
    save_rotating(tmp_path, {"step": 5}, keep=0)  # keep 0 behaves like 1: last.ckpt only
    assert steps_in(tmp_path) == {"last.ckpt": 5, "notes.txt": -1}


def test_save_rotating_creates_the_folder_and_keeps_the_old_last_on_failure(tmp_path, monkeypatch):
    folder = tmp_path / "a" / "checkpoints"
    save_rotating(folder, {"step": 1}, keep=2)
    assert steps_in(folder) == {"last.ckpt": 1}

    def full_disk(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    with pytest.raises(OSError, match="disk full"):
        save_rotating(folder, {"step": 2}, keep=2)
    assert steps_in(folder) == {"last.ckpt": 1}  # no temporary file left, nothing rotated


def test_rotation_hard_links_the_previous_last(tmp_path):
    save_rotating(tmp_path, {"step": 1}, keep=2)
    inode = os.stat(tmp_path / "last.ckpt").st_ino
    save_rotating(tmp_path, {"step": 2}, keep=2)
    assert os.stat(tmp_path / "last.1.ckpt").st_ino == inode  # no second copy on disk


def test_older_files_newest_first_by_number(tmp_path):
    for name in ("last.10.ckpt", "last.2.ckpt", "last.1.ckpt", "last.best.ckpt", "last.ckpt", "other.3.ckpt"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in older_files(tmp_path)] == ["last.1.ckpt", "last.2.ckpt", "last.10.ckpt"]
    assert older_file(tmp_path, 3) == tmp_path / "last.3.ckpt"
    assert older_files(tmp_path / "missing") == []


def test_keep_copy_links_or_copies_atomically(tmp_path, monkeypatch):
    source = tmp_path / "source"
    source.write_bytes(b"checkpoint bytes")
    (tmp_path / "target").write_bytes(b"older")
    keep_copy(source, tmp_path / "target")
    assert (tmp_path / "target").read_bytes() == b"checkpoint bytes"
    assert os.stat(tmp_path / "target").st_ino == os.stat(source).st_ino

    def no_links(*args):
        raise OSError("hard links not supported")

    monkeypatch.setattr(checkpoint.os, "link", no_links)
    keep_copy(source, tmp_path / "copy")
    assert (tmp_path / "copy").read_bytes() == b"checkpoint bytes"
    assert os.stat(tmp_path / "copy").st_ino != os.stat(source).st_ino
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy", "source", "target"]  # no temporary file left


def test_sync_folder_fsyncs_the_directory_and_tolerates_what_cannot_be_opened(tmp_path, monkeypatch):
    synced, real_fsync = [], os.fsync

    def recording_fsync(fd):
        synced.append(os.path.realpath(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(checkpoint.os, "fsync", recording_fsync)
    sync_folder(tmp_path)
    assert synced == [str(tmp_path.resolve())]
    sync_folder(tmp_path / "missing")  # cannot be opened: a no-op, no error
    assert len(synced) == 1

    def refused(fd):
        raise OSError("fsync not supported on directories here")

    monkeypatch.setattr(checkpoint.os, "fsync", refused)
    sync_folder(tmp_path)  # swallowed; the descriptor is still closed


def test_rotating_saves_write_dot_tmp_files_in_the_folder(tmp_path, monkeypatch):
    """Temporary files sit beside last.ckpt and match the ``.*.tmp`` a later save cleans up after a killed process."""
    made, temp_file = [], checkpoint.temp_file

    def recording_temp_file(*args, **kwargs):
        name = temp_file(*args, **kwargs)
        made.append(name)
        return name

    monkeypatch.setattr(checkpoint, "temp_file", recording_temp_file)
    save_rotating(tmp_path, {"step": 1}, keep=2)
    save_rotating(tmp_path, {"step": 2}, keep=2)  # also a keep_copy of the old last.ckpt to last.1.ckpt
    names = [os.path.basename(n) for n in made]
    assert [os.path.dirname(n) for n in made] == [str(tmp_path)] * 3
    assert [n.split(".")[1:3] for n in names] == [["last", "ckpt"], ["last", "ckpt"], ["last", "1"]]
    assert all(n.startswith(".") and n.endswith(".tmp") for n in names)
    assert steps_in(tmp_path) == {"last.1.ckpt": 1, "last.ckpt": 2}


def test_failed_rotating_save_reports_its_own_error_when_the_temporary_file_is_gone(tmp_path, monkeypatch):
    def vanish_then_fail(obj, name):
        os.unlink(name)
        raise OSError("disk gone")

    monkeypatch.setattr(checkpoint.torch, "save", vanish_then_fail)
    with pytest.raises(OSError, match="disk gone"):
        save_rotating(tmp_path, {"step": 1}, keep=2)
    assert list(tmp_path.iterdir()) == []


def test_save_rotating_syncs_the_folder(tmp_path, monkeypatch):
    synced = []
    monkeypatch.setattr(checkpoint, "sync_folder", lambda folder: synced.append(folder))
    save_rotating(tmp_path, {"step": 1}, keep=1)
    assert synced == [tmp_path]


# ---------------------------------------------------------------- falling back to an older checkpoint


def test_load_newest_reads_last_without_warning(tmp_path):
    for step in (1, 2):
        save_rotating(tmp_path, {"step": step}, keep=2)
    warnings = []
    path, state = load_newest(tmp_path, warnings.append)
    assert (path, state["step"], warnings) == (tmp_path / "last.ckpt", 2, [])


def test_load_newest_falls_back_past_a_truncated_last_and_says_so(tmp_path):
    for step in (1, 2, 3):
        save_rotating(tmp_path, {"step": step, "w": torch.zeros(1000)}, keep=3)
    last = tmp_path / "last.ckpt"
    last.write_bytes(last.read_bytes()[:300])
    (tmp_path / "last.1.ckpt").write_text("garbage")
    warnings = []
    path, state = load_newest(tmp_path, warnings.append)
    assert (path, state["step"]) == (tmp_path / "last.2.ckpt", 1)
    assert len(warnings) == 1
    assert warnings[0].startswith(f"warning: {last}: not a readable dcdgan checkpoint (")
    assert warnings[0].endswith("; resuming from last.2.ckpt (step 1) instead")
    assert load_newest(tmp_path)[0] == tmp_path / "last.2.ckpt"  # without a warn callback too


def test_load_newest_uses_an_older_file_when_last_is_missing(tmp_path):
    save_checkpoint(tmp_path / "last.1.ckpt", {"step": 6})
    warnings = []
    path, state = load_newest(tmp_path, warnings.append)
    assert (path, state["step"], warnings) == (tmp_path / "last.1.ckpt", 6, [])


def test_load_newest_errors_name_the_newest_failure(tmp_path):
    with pytest.raises(UserError) as err:
        load_newest(tmp_path)
    assert str(err.value) == f"{tmp_path / 'last.ckpt'}: checkpoint not found"
    (tmp_path / "last.ckpt").write_text("garbage")
    with pytest.raises(UserError) as err:
        load_newest(tmp_path)
    only = str(err.value)
    assert only.startswith(f"{tmp_path / 'last.ckpt'}: not a readable dcdgan checkpoint (") and "older" not in only
    torch.save({"format": FORMAT + 1}, tmp_path / "last.1.ckpt")
    torch.save([1], tmp_path / "last.2.ckpt")
    with pytest.raises(UserError) as err:
        load_newest(tmp_path)
    assert str(err.value) == f"{only} (and 2 older checkpoints are unreadable too)"


# ---------------------------------------------------------------- the state of a run, saved and restored


class Run:
    """A tiny training run's state holders: two networks, their Adams after one step, a loss scaler, two pools."""

    def __init__(self, seed: int):
        torch.manual_seed(seed)
        self.networks = {"student": torch.nn.Linear(3, 2), "disc": torch.nn.Linear(2, 1)}
        self.optimizers = {name: torch.optim.Adam(net.parameters(), lr=0.1) for name, net in self.networks.items()}
        self.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** (seed + 1))
        self.pools = {"a": ImagePool(2, seed), "b": ImagePool(2, seed + 100)}

    def train_a_step(self) -> None:
        """One Adam step per network, and a few fakes through each pool (more than it holds: its RNG moves)."""
        for name, net in self.networks.items():
            self.optimizers[name].zero_grad()
            net(torch.randn(4, net.in_features)).square().mean().backward()
            self.optimizers[name].step()
        for pool in self.pools.values():
            pool.query(torch.randn(5, 1, 2, 2))


def state_of(run: Run, ranks: list[dict], step: int = 9) -> dict:
    return run_state({"task": "pix2pix"}, step, 12, run.networks, run.optimizers, run.scaler.state_dict(), ranks, {"best": 0.5}, train_seconds=123.5)


def test_run_state_holds_everything_to_continue():
    run = Run(0)
    run.train_a_step()
    ranks = [rank_state(run.pools), {"rng": "rank 1 rng", "pools": "rank 1 pools"}, {"rng": "rank 2 rng", "pools": "rank 2 pools"}]
    state = state_of(run, ranks)
    assert set(state) == {"config", "step", "train_size", "world_size", "networks", "optimizers", "grad_scaler", "pools", "rng",
                          "other_ranks", "selection", "train_seconds"}
    assert (state["config"], state["step"], state["train_size"], state["world_size"], state["selection"], state["train_seconds"]) == (
        {"task": "pix2pix"}, 9, 12, 3, {"best": 0.5}, 123.5)
    assert state["grad_scaler"]["scale"] == 2.0
    assert state["other_ranks"] == ranks[1:]
    assert state["pools"] is ranks[0]["pools"] and state["rng"] is ranks[0]["rng"]
    for name, net in run.networks.items():
        assert state["networks"][name].keys() == net.state_dict().keys()
        assert all(torch.equal(v, net.state_dict()[k]) for k, v in state["networks"][name].items())
        assert state["optimizers"][name]["state"][0]["step"] == 1  # the Adam moments after one step
    assert set(ranks[0]) == {"rng", "pools"} and set(ranks[0]["pools"]) == {"a", "b"}
    assert torch.equal(ranks[0]["pools"]["a"]["images"], torch.cat(run.pools["a"].images))
    assert set(ranks[0]["rng"]) == {"python", "torch", "cuda"}


def test_restore_run_continues_exactly(tmp_path):
    original = Run(0)
    original.train_a_step()
    random.seed(5)
    save_checkpoint(tmp_path / "c.ckpt", state_of(original, [rank_state(original.pools)]))
    original.train_a_step()  # what the run does after the save; the restored run must do the same
    after = {name: net.weight.detach().clone() for name, net in original.networks.items()}
    draws_after = random.random(), torch.rand(2)

    restored = Run(1)  # other weights, other optimizer moments, another scale, other pool seeds
    random.seed(99)
    rng = restore_run(load_checkpoint(tmp_path / "c.ckpt"), 12, 1, 0, restored.networks, restored.optimizers, restored.pools,
                      torch.device("cpu"), restored.scaler)
    assert restored.scaler.get_scale() == 2.0
    assert restored.optimizers["student"].state_dict()["state"][0]["step"] == 1
    set_rng_state(rng)
    restored.train_a_step()
    for name, net in restored.networks.items():
        assert torch.equal(net.weight, after[name])
    for name in ("a", "b"):
        assert torch.equal(torch.cat(restored.pools[name].images), torch.cat(original.pools[name].images))
    assert (random.random(), torch.rand(2)) == (draws_after[0], pytest.approx(draws_after[1]))


def test_restore_run_gives_each_rank_its_own_pools_and_rng():
    run = Run(0)
    ranks = []
    for _ in range(3):
        run.train_a_step()
        ranks.append(rank_state(run.pools))
    rank0, rank1, rank2 = ranks
    state = state_of(run, ranks)
    fresh = Run(3)
    assert restore_run(state, 12, 3, 2, fresh.networks, fresh.optimizers, fresh.pools, torch.device("cpu")) is rank2["rng"]
    rng = restore_run(state, 12, 3, 1, fresh.networks, fresh.optimizers, fresh.pools, torch.device("cpu"))
    assert rng is rank1["rng"]
    assert torch.equal(torch.cat(fresh.pools["b"].images), rank1["pools"]["b"]["images"])
    assert torch.equal(fresh.pools["b"].generator.get_state(), rank1["pools"]["b"]["rng"])
    assert fresh.scaler.get_scale() == 16.0  # no scaler passed: the fresh one keeps its own scale
    rng = restore_run(state, 12, 3, 0, fresh.networks, fresh.optimizers, fresh.pools, torch.device("cpu"))
    assert rng is rank0["rng"]
    assert torch.equal(torch.cat(fresh.pools["a"].images), rank0["pools"]["a"]["images"])


def test_restore_run_keeps_the_scaler_when_the_checkpoint_has_none():
    run = Run(0)
    state = state_of(run, [rank_state(run.pools)]) | {"grad_scaler": None}
    fresh = Run(2)
    restore_run(state, 12, 1, 0, fresh.networks, fresh.optimizers, fresh.pools, torch.device("cpu"), fresh.scaler)
    assert fresh.scaler.get_scale() == 8.0


def test_restore_run_refuses_other_data_world_size_and_networks():
    run = Run(0)
    state = state_of(run, [rank_state(run.pools)] * 2)
    args = (run.networks, run.optimizers, run.pools, torch.device("cpu"))
    with pytest.raises(UserError) as err:
        restore_run(state, 13, 2, 0, *args)
    assert str(err.value) == "the training set has 13 items but the checkpoint was made with 12; resume needs the same data"
    with pytest.raises(UserError) as err:
        restore_run(state, 12, 4, 0, *args)
    assert str(err.value) == ("the checkpoint was written by 2 process(es) and this run has 4; the step count and the per-process RNG and "
                              "image pools depend on it: resume with 2 (torchrun --nproc_per_node 2)")
    legacy = {k: v for k, v in state_of(run, [rank_state(run.pools)]).items() if k != "world_size"}
    with pytest.raises(UserError, match="written by 1 process"):  # a checkpoint without world_size came from one process
        restore_run(legacy, 12, 2, 0, *args)
    restore_run(legacy, 12, 1, 0, *args)
    with pytest.raises(UserError) as err:
        restore_run(state, 12, 2, 0, {"student": run.networks["student"], "teacher": torch.nn.Linear(1, 1)}, *args[1:])
    assert str(err.value) == "checkpoint networks ['disc', 'student'] do not match this config's ['student', 'teacher']"
    with pytest.raises(UserError) as err:
        restore_run(state, 12, 2, 0, {"student": torch.nn.Linear(3, 5), "disc": run.networks["disc"]}, *args[1:], path="run/last.ckpt")
    assert str(err.value).startswith("run/last.ckpt: the stored student does not fit this config's network (size mismatch for weight")
    with pytest.raises(UserError, match="^checkpoint: the stored student"):  # the default path
        restore_run(state, 12, 2, 0, {"student": torch.nn.Linear(3, 5), "disc": run.networks["disc"]}, *args[1:])
