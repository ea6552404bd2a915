"""Checkpoints: one file with everything a run needs to continue, written atomically, read without executing code."""

from __future__ import annotations

import os
import random
import secrets
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from dcdgan.config import config_from_dict, student_owns_disc
from dcdgan.errors import UserError

FORMAT = 1


def temp_file(folder: Path, name: str) -> str:
    """A new empty file ``folder/.name.XXXX.tmp`` with the permissions any new file gets (0666 less the umask).

    Not ``tempfile.mkstemp``: its files are 0600, and the rename would deliver every run file and export readable by
    its owner alone (a web server running as another user then cannot serve an export)."""
    for _ in range(100):
        tmp = folder / f".{name}.{secrets.token_hex(4)}.tmp"
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return str(tmp)
        except FileExistsError:
            continue
    raise FileExistsError(f"{folder}: no free temporary name for {name}")


def atomic_write(path: Path, write: Any) -> None:
    """Call ``write(tmp_path)`` then move the file into place, so ``path`` is never half-written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_file(path.parent, path.name)
    mode = os.stat(tmp).st_mode & 0o777  # what any new file gets here (the umask's)
    try:
        write(Path(tmp))
        os.chmod(tmp, mode)  # a writer that replaces the file keeps its own mode (safetensors' save_file: 0600)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(path: Path, state: dict) -> None:
    """Atomically write ``state`` (plain containers and tensors only) with a format tag."""
    atomic_write(path, lambda tmp: torch.save({"format": FORMAT, **state}, tmp))


def load_checkpoint(path: Path) -> dict:
    """Read a checkpoint with ``weights_only=True``; UserError for a missing, corrupt or foreign file."""
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt zip, truncated file, unsafe pickle: all mean "not our checkpoint"
        raise UserError(f"{path}: not a readable dcdgan checkpoint ({type(err).__name__}: {str(err).splitlines()[0][:120]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"{path}: not a dcdgan checkpoint (format {FORMAT})")
    return state


# Config keys that decide the networks' shapes (or which networks exist): a checkpoint fits only the same values.
ARCHITECTURE_SECTIONS = ("model",)
ARCHITECTURE_KEYS = ("task", "data.input_nc", "data.output_nc", "distill.method", "distill.schedule", "distill.teacher_taps",
                     "distill.student_taps", "distill.disc_tap", "distill.train_teacher_connectors")


def _flat(config: dict) -> dict:
    return {f"{section}.{k}": v for section, values in config.items() if isinstance(values, dict) for k, v in values.items()} | {
        k: v for k, v in config.items() if not isinstance(v, dict)}


# Keys that decide together whether a network exists (the student's own discriminator: student_owns_disc); they
# matter only when that decision changes (a new student_gan_weight with the same discriminator resumes fine).
OWN_DISC_KEYS = ("distill.student_gan_disc", "distill.student_gan_weight")


def check_compatible(state: dict, config: dict, path: Path) -> None:
    """UserError naming the keys where ``config`` (a ``to_dict`` config) builds other networks than the checkpoint's.

    The one resume check, made before any data is read (``distill`` calls it through ``runs.open_for_resume``)."""
    saved, wanted = _flat(state.get("config") or {}), _flat(config)
    keys = [k for k in wanted if k in ARCHITECTURE_KEYS or k.split(".")[0] in ARCHITECTURE_SECTIONS]
    differ = [f"{k}={saved.get(k)!r} there, {wanted[k]!r} here" for k in keys if saved.get(k) != wanted[k]]
    if not differ and student_owns_disc(config_from_dict(state.get("config") or {}).distill) != student_owns_disc(config_from_dict(config).distill):
        differ = [f"{k}={saved.get(k)!r} there, {wanted[k]!r} here" for k in OWN_DISC_KEYS if saved.get(k) != wanted[k]]
        differ[-1] += " (the student's own discriminator exists only with distill.student_gan_disc=own and student_gan_weight > 0)"
    if differ:
        raise UserError(f"{path}: made for other networks ({'; '.join(differ)}); resume with the run's own settings or start a new run")


def load_network_state(net: torch.nn.Module, state_dict: dict, path: Path | str, name: str) -> None:
    """``net.load_state_dict`` with a one-line UserError (naming the file and network) when the weights do not fit."""
    try:
        net.load_state_dict(state_dict)
    except (RuntimeError, KeyError, TypeError) as err:
        # torch's message starts with "Error(s) in loading state_dict for X:"; the line after it names the problem
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        informative = ("size mismatch", "Missing key", "Unexpected key")
        detail = next((line for line in lines if line.startswith(informative)), lines[0] if lines else type(err).__name__)
        raise UserError(f"{path}: the stored {name} does not fit this config's network ({detail[:160]})") from None


def rng_state() -> dict:
    """Every global RNG a training step may touch."""
    return {
        "python": random.getstate(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    """Restore what ``rng_state`` captured."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------- the state of a training run


def run_state(
    config: dict,
    step: int,
    train_size: int,
    networks: dict[str, nn.Module],
    optimizers: dict[str, Optimizer],
    scaler: dict | None,
    ranks: list[dict],
    selection: dict,
    train_seconds: float,
) -> dict:
    """Everything needed to continue exactly. ``networks`` are bare modules; ``ranks`` holds each process's RNG
    states and image pools (``rank_state``), rank 0's at the top level as in a single-process checkpoint;
    ``train_seconds`` is the run's wall time so far, over all its sessions, so a resumed run reports the whole."""
    return {
        "config": config,
        "step": step,
        "train_seconds": train_seconds,
        "train_size": train_size,
        "world_size": len(ranks),
        "networks": {name: net.state_dict() for name, net in networks.items()},
        "optimizers": {name: opt.state_dict() for name, opt in optimizers.items()},
        "grad_scaler": scaler,
        "pools": ranks[0]["pools"],
        "rng": ranks[0]["rng"],
        "other_ranks": ranks[1:],
        "selection": selection,
    }


def rank_state(pools: dict[str, Any]) -> dict:
    """This process's share of a checkpoint: its global RNG states and its image pools."""
    return {"rng": rng_state(), "pools": {name: pool.state_dict() for name, pool in pools.items()}}


def restore_run(
    state: dict,
    train_size: int,
    world_size: int,
    rank: int,
    networks: dict[str, nn.Module],
    optimizers: dict[str, Optimizer],
    pools: dict[str, Any],
    device: torch.device,
    scaler: Any = None,
    path: Path | str = "checkpoint",
) -> dict:
    """Load a checkpoint into bare networks, optimizers, the fp16 loss scaler and this rank's pools; returns this
    rank's RNG states, which the caller sets last, once every data iterator exists, so nothing drawn during set-up
    shifts them."""
    if state["train_size"] != train_size:
        raise UserError(f"the training set has {train_size} items but the checkpoint was made with {state['train_size']}; resume needs the same data")
    saved_world = state.get("world_size", 1)
    if saved_world != world_size:
        raise UserError(
            f"the checkpoint was written by {saved_world} process(es) and this run has {world_size}; the step count and the "
            f"per-process RNG and image pools depend on it: resume with {saved_world} (torchrun --nproc_per_node {saved_world})"
        )
    if set(state["networks"]) != set(networks):
        raise UserError(f"checkpoint networks {sorted(state['networks'])} do not match this config's {sorted(networks)}")
    for name, net in networks.items():
        load_network_state(net, state["networks"][name], path, name)
    for name, opt in optimizers.items():
        opt.load_state_dict(state["optimizers"][name])
    if scaler is not None and state.get("grad_scaler"):
        scaler.load_state_dict(state["grad_scaler"])
    mine = state if rank == 0 else state["other_ranks"][rank - 1]
    for name, pool in pools.items():
        pool.load_state_dict(mine["pools"][name], device)
    return mine["rng"]


# ---------------------------------------------------------------- a folder of rotating checkpoints

LAST = "last.ckpt"


def older_file(folder: Path, index: int) -> Path:
    """checkpoints/last.N.ckpt: the N-th checkpoint before last.ckpt."""
    return Path(folder) / f"last.{index}.ckpt"


def older_files(folder: Path) -> list[Path]:
    """The kept last.N.ckpt files, newest (N = 1) first."""
    found = [(p.name.split(".")[1], p) for p in Path(folder).glob("last.*.ckpt")]
    return [p for index, p in sorted((int(i), p) for i, p in found if i.isdigit())]


def save_rotating(folder: Path, state: dict, keep: int, rotate: bool = True) -> None:
    """Write last.ckpt (temp file, fsync, rename) and keep the ``keep - 1`` before it as last.1.ckpt, last.2.ckpt, ...
    (``rotate=False``: replace last.ckpt only, e.g. a second save at the same step).

    Every rename is atomic and last.ckpt always exists once written: the previous one is hard-linked (or copied)
    to last.1.ckpt before the new one replaces it.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(".*.tmp"):  # left by a process killed mid-write (this process is the only writer)
        stale.unlink(missing_ok=True)
    last = folder / LAST
    tmp = temp_file(folder, LAST)
    try:
        torch.save({"format": FORMAT, **state}, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        if rotate and last.exists() and keep > 1:
            for index in range(keep - 1, 1, -1):
                if older_file(folder, index - 1).exists():
                    os.replace(older_file(folder, index - 1), older_file(folder, index))
            keep_copy(last, older_file(folder, 1))
        os.replace(tmp, last)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    for extra in older_files(folder)[max(keep - 1, 0) :]:
        extra.unlink(missing_ok=True)
    sync_folder(folder)


def keep_copy(source: Path, target: Path) -> None:
    """``target`` becomes the file ``source`` is now: a hard link (no second copy on disk), else a copy; atomic."""
    tmp = temp_file(target.parent, target.name)
    os.unlink(tmp)
    try:
        os.link(source, tmp)
    except OSError:  # file systems without hard links
        shutil.copyfile(source, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
    os.replace(tmp, target)


def sync_folder(folder: Path) -> None:
    """fsync a directory, so the renames in it survive a power cut (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_newest(folder: Path, warn=None) -> tuple[Path, dict]:
    """last.ckpt, or, when it is unreadable, the newest readable last.N.ckpt (``warn`` gets one line saying so)."""
    folder = Path(folder)
    failures = []
    for path in [folder / LAST, *older_files(folder)]:
        if not path.exists():
            continue
        try:
            state = load_checkpoint(path)
        except UserError as err:
            failures.append(str(err))
            continue
        if failures and warn is not None:
            warn(f"warning: {failures[0]}; resuming from {path.name} (step {state['step']}) instead")
        return path, state
    if failures:
        raise UserError(failures[0] if len(failures) == 1 else f"{failures[0]} (and {len(failures) - 1} older checkpoints are unreadable too)")
    raise UserError(f"{folder / LAST}: checkpoint not found")
