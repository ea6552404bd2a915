"""Checkpoints: one file with everything a run needs to continue, written atomically, read without executing code."""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import torch

from dcdgan.errors import UserError

FORMAT = 1


def atomic_write(path: Path, write: Any) -> None:
    """Call ``write(tmp_path)`` then move the file into place, so ``path`` is never half-written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
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


def check_compatible(state: dict, config: dict, path: Path) -> None:
    """UserError naming the keys where ``config`` (a ``to_dict`` config) builds other networks than the checkpoint's."""
    saved, wanted = _flat(state.get("config") or {}), _flat(config)
    keys = [k for k in wanted if k in ARCHITECTURE_KEYS or k.split(".")[0] in ARCHITECTURE_SECTIONS]
    differ = [f"{k}={saved.get(k)!r} there, {wanted[k]!r} here" for k in keys if saved.get(k) != wanted[k]]
    if differ:
        raise UserError(f"{path}: made for other networks ({'; '.join(differ[:3])}); resume with the run's own settings or start a new run")


def load_network_state(net: torch.nn.Module, state_dict: dict, path: Path | str, name: str) -> None:
    """``net.load_state_dict`` with a one-line UserError (naming the file and network) when the weights do not fit."""
    try:
        net.load_state_dict(state_dict)
    except (RuntimeError, KeyError, TypeError) as err:
        detail = next((line.strip() for line in str(err).splitlines() if "size mismatch" in line), str(err).strip().splitlines()[0])
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
