"""Run directories: their layout, the resolved config they hold, and the metrics log."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from dcdgan.checkpoint import atomic_write, check_compatible, load_newest
from dcdgan.config import Config, to_dict, to_yaml
from dcdgan.errors import UserError


def default_run_dir(cfg: Config) -> Path:
    """runs/<run.name>, or runs/<task>-<method>-<timestamp> (the whole Config: it reads run, the task and distill)."""
    name = cfg.run.name or f"{cfg.task}-{cfg.distill.method}-{time.strftime('%Y%m%d-%H%M%S')}"
    return Path(cfg.run.output_dir) / name


def last_checkpoint(run_dir: Path) -> Path:
    """checkpoints/last.ckpt of a run."""
    return Path(run_dir) / "checkpoints" / "last.ckpt"


def best_checkpoint(run_dir: Path) -> Path:
    """checkpoints/best.ckpt of a run."""
    return Path(run_dir) / "checkpoints" / "best.ckpt"


def require_run_dir(run_dir: Path) -> None:
    """UserError unless ``run_dir`` is a run that can be resumed (a folder with checkpoints/last.ckpt)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run directory to resume")
    if not last_checkpoint(run_dir).is_file():
        what = "a run that stopped before its first checkpoint" if (run_dir / "config.yaml").is_file() else "not a dcdgan run directory"
        raise UserError(f"{run_dir}: {what} (no checkpoints/last.ckpt); start a new run without --resume")


def open_for_resume(run_dir: Path, cfg: Config, warn=None) -> tuple[Path, dict]:
    """(path, state) of the checkpoint a resume continues from: the newest readable one, after the compatibility
    check (UserError naming the config keys that would build other networks), before any data is read."""
    require_run_dir(run_dir)
    path, state = load_newest(last_checkpoint(run_dir).parent, warn)
    check_compatible(state, to_dict(cfg), path)
    return path, state


def prepare_run_dir(run_dir: Path, cfg: Config, resume: bool) -> None:
    """Create the folder (refusing to overwrite another run) and write the resolved config.yaml."""
    if not resume and last_checkpoint(run_dir).exists():
        raise UserError(f"{run_dir}: already holds a run; continue it with --resume {run_dir} or choose another run.name")
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    atomic_write(run_dir / "config.yaml", lambda tmp: tmp.write_text(to_yaml(cfg)))


def flat_config(cfg: Config) -> dict:
    """Config as flat scalars (TensorBoard hparams accept no lists)."""
    flat = {}
    for section, values in to_dict(cfg).items():
        if isinstance(values, dict):
            for key, value in values.items():
                flat[f"{section}.{key}"] = ",".join(value) if isinstance(value, list) else value
        else:
            flat[section] = values
    return flat


@dataclass
class MetricsLog:
    """metrics.jsonl: one JSON object per line (training losses, validation scores)."""

    path: Path
    enabled: bool = True

    def write(self, record: dict) -> None:
        """Append one record."""
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")

    def truncate_after(self, step: int) -> None:
        """Drop records past ``step`` (a resumed run re-logs them)."""
        if not self.enabled or not self.path.exists():
            return
        kept = [line for line in self.path.read_text().splitlines() if (record := _parse(line)) is not None and record["step"] <= step]
        atomic_write(self.path, lambda tmp: tmp.write_text("".join(line + "\n" for line in kept)))

    def read(self) -> list[dict]:
        """All records."""
        if not self.path.exists():
            return []
        return [record for line in self.path.read_text().splitlines() if (record := _parse(line)) is not None]


def _parse(line: str) -> dict | None:
    """One metrics.jsonl record, or None for a blank line or the half-written last line of a killed process."""
    try:
        return json.loads(line) if line.strip() else None
    except json.JSONDecodeError:
        return None
