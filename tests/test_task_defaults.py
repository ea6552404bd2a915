"""Defaults that follow the task (gan_mode, lambda_dcd, ndf) and the architecture (norm, dropout), resolved once."""

from __future__ import annotations

import json

from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from dcdgan.cli import main
from dcdgan.config import Config, help_text, load_config, paper_defaults, recipe_names, resolve_defaults, to_yaml
from dcdgan.errors import UserError
from dcdgan.nets import GENERATORS, GeneratorSpec, build_generator
from dcdgan.nets.generators import PUBLIC_DEFAULTS
from dcdgan.weights import load_generator

UNPAIRED = ["task=cyclegan", "data.mode=unpaired", "data.root=builtin:shoes_unpaired"]
AUTO_KEYS = {"loss.gan_mode", "distill.lambda_dcd", "model.ndf", "model.teacher_norm", "model.teacher_dropout", "model.student_norm", "model.student_dropout",
             "distill.teacher_taps"}


def resolved(cfg: Config) -> tuple:
    m = cfg.model
    return (cfg.loss.gan_mode, cfg.distill.lambda_dcd, m.ndf, m.teacher_norm, m.teacher_dropout, m.student_norm, m.student_dropout)


def test_unset_means_auto_and_is_resolved_in_one_place():
    cfg = Config()
    assert resolved(cfg) == (None,) * 7
    assert set(resolve_defaults(cfg)) == AUTO_KEYS
    assert resolved(cfg) == ("hinge", 1.0, 128, "instance", 0.0, "instance", 0.0)
    assert resolve_defaults(cfg) == []  # nothing left to fill
    assert "loss.gan_mode = auto" in help_text() and "model.ndf = auto" in help_text()


def test_task_defaults_without_a_recipe():
    assert resolved(paper_defaults(UNPAIRED))[:3] == ("lsgan", 0.1, 64)
    assert resolved(paper_defaults(["task=pix2pix"]))[:3] == ("hinge", 1.0, 128)


def test_what_the_config_sets_wins_and_auto_unsets_it():
    cfg = paper_defaults([*UNPAIRED, "loss.gan_mode=vanilla", "distill.lambda_dcd=0.5", "model.ndf=32"])
    assert resolved(cfg)[:3] == ("vanilla", 0.5, 32)
    # the quickstart recipe sets ndf 64 for its 32px images; auto gives the pix2pix value back
    assert load_config("quickstart").model.ndf == 64 and load_config("quickstart", ["model.ndf=auto"]).model.ndf == 128
    with pytest.raises(UserError, match="loss.gan_mode: 'wgan' is not one of lsgan, vanilla, hinge"):
        paper_defaults(["loss.gan_mode=wgan"])
    with pytest.raises(UserError, match="model.teacher_dropout: expected float, got 'lots'"):
        paper_defaults(["model.teacher_dropout=lots"])


def test_norm_and_dropout_follow_each_architecture_separately():
    cfg = paper_defaults(["model.teacher_netG=unet_256"])
    assert resolved(cfg)[3:] == ("batch", 0.5, "instance", 0.0)
    cfg = paper_defaults(["model.teacher_netG=resnet_9blocks", "model.student_netG=unet_128"])
    assert resolved(cfg)[3:] == ("instance", 0.0, "batch", 0.5)
    cfg = paper_defaults(["model.teacher_netG=unet_256", "model.teacher_norm=instance", "model.student_dropout=0.2"])
    assert resolved(cfg)[3:] == ("instance", 0.5, "instance", 0.2)
    assert set(PUBLIC_DEFAULTS) == set(GENERATORS)


def test_spec_without_norm_or_dropout_builds_the_public_default():
    unet = build_generator(GeneratorSpec("unet_128", 4, 1, 1))
    kinds = {type(m).__name__ for m in unet.modules()}
    assert "BatchNorm2d" in kinds and "Dropout" in kinds and "InstanceNorm2d" not in kinds
    resnet = build_generator(GeneratorSpec("resnet_9blocks", 4, 1, 1))
    kinds = {type(m).__name__ for m in resnet.modules()}
    assert "InstanceNorm2d" in kinds and "BatchNorm2d" not in kinds and "Dropout" not in kinds


# what each recipe meant before the defaults became task-aware (all set gan_mode/lambda_dcd/ndf explicitly, or
# relied on the old global defaults hinge / 1.0 / instance / 0.0 with mobile_resnet generators)
RECIPES_BEFORE = {
    "quickstart": ("hinge", 1.0, 64, "instance", 0.0, "instance", 0.0),
    "quickstart_unpaired": ("lsgan", 0.1, 64, "instance", 0.0, "instance", 0.0),
    "horse2zebra": ("lsgan", 0.1, 64, "instance", 0.0, "instance", 0.0),
    "horse2zebra_128": ("lsgan", 0.1, 64, "instance", 0.0, "instance", 0.0),
    "summer2winter": ("lsgan", 0.1, 64, "instance", 0.0, "instance", 0.0),
    "edges2shoes": ("hinge", 1.0, 128, "instance", 0.0, "instance", 0.0),
    "cityscapes": ("hinge", 1.0, 128, "instance", 0.0, "instance", 0.0),
}


def test_recipes_still_mean_what_they_meant():
    assert set(RECIPES_BEFORE) <= set(recipe_names())
    for name, before in RECIPES_BEFORE.items():
        assert resolved(load_config(name)) == before, name


def test_print_config_shows_resolved_values(capsys):
    assert main(["distill", "model.teacher_netG=unet_256", "--print-config"]) == 0
    model = yaml.safe_load(capsys.readouterr().out)["model"]
    assert (model["teacher_norm"], model["teacher_dropout"], model["student_norm"], model["student_dropout"]) == ("batch", 0.5, "instance", 0.0)
    assert "null" not in to_yaml(paper_defaults())


def public_unet_keys(input_nc: int, output_nc: int, ngf: int, num_downs: int = 8) -> dict[str, tuple]:
    """State-dict keys and shapes of the public pix2pix ``UnetGenerator`` (BatchNorm, so convs without bias),
    written from the public code's block layout: outermost [down, sub, relu, up, tanh], middle [lrelu, down, norm,
    sub, relu, up, norm, (dropout)], innermost [lrelu, down, relu, up, norm]."""
    levels = [(output_nc, ngf, input_nc), (ngf, 2 * ngf, ngf), (2 * ngf, 4 * ngf, 2 * ngf), (4 * ngf, 8 * ngf, 4 * ngf)]
    levels += [(8 * ngf, 8 * ngf, 8 * ngf)] * (num_downs - 4)
    keys: dict[str, tuple] = {}

    def batch_norm(prefix: str, channels: int) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            keys[f"{prefix}.{name}"] = (channels,)
        keys[f"{prefix}.num_batches_tracked"] = ()

    prefix = "model.model."
    for i, (outer, inner, source) in enumerate(levels):
        if i == 0:
            keys[prefix + "0.weight"] = (inner, source, 4, 4)
            keys[prefix + "3.weight"], keys[prefix + "3.bias"] = (2 * inner, outer, 4, 4), (outer,)
            prefix += "1.model."
        elif i == len(levels) - 1:
            keys[prefix + "1.weight"] = (inner, source, 4, 4)
            keys[prefix + "3.weight"] = (inner, outer, 4, 4)
            batch_norm(prefix + "4", outer)
        else:
            keys[prefix + "1.weight"] = (inner, source, 4, 4)
            batch_norm(prefix + "2", inner)
            keys[prefix + "5.weight"] = (2 * inner, outer, 4, 4)
            batch_norm(prefix + "6", outer)
            prefix += "3.model."
    return keys


def write_public_unet_256(path: Path, ngf: int, channels: int) -> dict[str, torch.Tensor]:
    """A ``latest_net_G.pth`` as pix2pix saves it (plain torch.save of the state dict), with trained-looking BN stats."""
    g = torch.Generator().manual_seed(3)
    state = {}
    for key, shape in public_unet_keys(channels, channels, ngf).items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1234)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=g) + 0.5
        else:
            state[key] = torch.randn(shape, generator=g) * 0.05
    torch.save(state, path)
    return state


def test_public_batchnorm_unet_256_distills_with_only_netG_and_weights(tmp_path, offline, capsys):
    weights = tmp_path / "latest_net_G.pth"
    public = write_public_unet_256(weights, ngf=4, channels=1)
    run_dir = tmp_path / "unet"
    # Norm, dropout and the DCD taps are NOT set: they follow the architectures. The rest only makes the test small
    # and fast (the quickstart's 32px shoes resized to the 256px unet_256 needs, narrow networks, 2 steps).
    small = ["model.teacher_ngf=4", "model.student_ngf=4", "model.ndf=8", "data.load_size=256", "data.crop_size=256",
             "train.batch_size=1", "train.max_steps=2", "eval.max_images=2", "eval.final=false", "perceptual.weights=none",
             "train.sample_every=0", "train.checkpoint_every=0"]
    args = ["distill", "model.teacher_netG=unet_256", f"model.teacher_weights={weights}", *small]
    assert main([*args, "--run-dir", str(run_dir), "--quiet"]) == 0
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    model = saved["model"]
    assert (model["teacher_norm"], model["teacher_dropout"], model["student_norm"], model["student_dropout"]) == ("batch", 0.5, "instance", 0.0)
    # the U-Net's map at 1/4 of the input (64x64, like the student's model.9), paired with the student's first tap
    assert (saved["distill"]["teacher_taps"], saved["distill"]["student_taps"]) == (["model.model.1.model.3"], ["model.9"])
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("S_dcd", 0) > 0 for r in records)  # the DCD term ran on those taps
    teacher = load_file(run_dir / "teacher.safetensors")
    assert set(teacher) == set(public) and all(torch.equal(teacher[k], v) for k, v in public.items())  # loaded and frozen
    _, description = load_generator(run_dir / "student.safetensors")
    assert (description["spec"]["norm"], description["spec"]["dropout"]) == ("instance", 0.0)
    # what the old global default (InstanceNorm for every generator) did with the same file: a one-line refusal
    capsys.readouterr()
    assert main([*args, "model.teacher_norm=instance", "--run-dir", str(tmp_path / "instance"), "--quiet"]) == 2
    assert f"{weights}: does not fit the configured generator" in capsys.readouterr().err
