"""Config: typed overrides, clear errors, recipes."""

from __future__ import annotations

import pytest
import yaml

from dcdgan.config import config_from_dict, load_config, paper_defaults, recipe_names, student_owns_disc, to_dict, to_yaml, valid_keys
from dcdgan.errors import UserError


def test_defaults_are_the_paper_settings():
    cfg = paper_defaults()  # built-in defaults, auto keys resolved
    assert (cfg.train.lr, cfg.train.beta1, cfg.data.load_size, cfg.data.crop_size) == (2e-4, 0.5, 286, 256)
    assert (cfg.distill.lambda_style, cfg.distill.lambda_feat) == (1e4, 10.0)
    assert cfg.distill.teacher_taps == ["model.9", "model.12", "model.15", "model.18"] and cfg.distill.disc_tap == "model.10"
    assert cfg.distill.student_gan_weight == 0 and cfg.distill.train_teacher_connectors is False
    assert cfg.distill.student_gan_disc == "teacher"  # the reference has no discriminator of the student's own
    assert cfg.distill.lambda_pixel == 0 and cfg.distill.lambda_target == 0  # the student learns from the teacher only


def test_overrides_are_typed():
    cfg = load_config("quickstart", ["train.lr=1e-4", "train.batch_size=3", "data.flip=false", "distill.teacher_taps=[model.9, model.18]", "run.name=007"])
    assert cfg.train.lr == 1e-4 and cfg.train.batch_size == 3 and cfg.data.flip is False
    assert cfg.distill.teacher_taps == ["model.9", "model.18"] and cfg.run.name == "007"


def test_unknown_key_lists_valid_keys():
    with pytest.raises(UserError, match=r"unknown config key 'train.batchsize'; valid keys: task, data.root, .*train.batch_size"):
        paper_defaults(["train.batchsize=4"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.batch_size=four", "train.batch_size: expected int, got 'four'"),
        ("distill.method=kd", "distill.method: 'kd' is not one of none, omgd, dcd"),
        ("train.batch_size=0", "train.batch_size: must be at least 1"),
        ("data.crop_size=300", r"data.crop_size \(300\) cannot exceed data.load_size \(286\)"),
        ("data=foo", "data: expected a mapping"),
        ("trainlr", "overrides look like section.key=value"),
        ("distill.student_taps=[model.9]", "distill.student_taps has 1 entries but distill.teacher_taps has 4"),
    ],
)
def test_bad_values_are_one_line_errors(override, message):
    with pytest.raises(UserError, match=message):
        paper_defaults([override])


def test_cross_field_rules():
    with pytest.raises(UserError, match="model.teacher_disc_weights is the discriminator of a pretrained teacher: set model.teacher_weights too"):
        load_config("quickstart", ["model.teacher_disc_weights=d.pth"])
    with pytest.raises(UserError, match="model.teacher_disc_weights is the discriminator of a pretrained teacher"):
        load_config("quickstart", ["model.teacher_disc_weights=d.pth", "model.teacher_weights=t.pth", "distill.method=none"])
    assert load_config("quickstart", ["model.teacher_disc_weights=d.pth", "model.teacher_weights=t.pth"]).model.teacher_disc_weights == "d.pth"
    with pytest.raises(UserError, match="task pix2pix needs paired data"):
        paper_defaults(["data.mode=unpaired"])
    with pytest.raises(UserError, match="burst is the CycleGAN reference schedule"):
        paper_defaults(["distill.schedule=burst"])
    with pytest.raises(UserError, match="builtin:shoes_paired is paired data; set data.mode=paired"):
        load_config("quickstart_unpaired", ["data.root=builtin:shoes_paired"])
    no_target = "distill.lambda_target needs paired data .data.mode=paired. and the interleaved schedule"
    with pytest.raises(UserError, match=no_target):
        load_config("quickstart_unpaired", ["distill.lambda_target=1"])
    with pytest.raises(UserError, match=no_target):  # CycleGAN on aligned pairs: its student bursts read A images only
        load_config("quickstart_unpaired", ["data.root=builtin:shoes_paired", "data.mode=paired", "distill.schedule=burst", "distill.lambda_target=1"])
    assert load_config("quickstart_unpaired", ["data.root=builtin:shoes_paired", "data.mode=paired", "distill.lambda_target=1"]).distill.lambda_target == 1
    with pytest.raises(UserError, match="distill.lambda_target: must not be negative"):
        load_config("quickstart", ["distill.lambda_target=-1"])
    own = ["distill.student_gan_disc=own", "distill.student_gan_weight=1"]
    assert student_owns_disc(load_config("quickstart_unpaired", [*own, "distill.schedule=burst"]).distill)  # bursts read B images for it
    # nothing to train it for: no GAN term, or no student (the quickstart's own discriminator must not stop method=none)
    for unused in (["distill.student_gan_weight=0"], ["distill.method=none"], ["distill.method=none", "distill.schedule=burst"]):
        cfg = load_config("quickstart_unpaired", [*own, *unused])
        assert cfg.distill.student_gan_disc == "own" and not student_owns_disc(cfg.distill)
    assert student_owns_disc(load_config("quickstart_unpaired", own).distill) and not student_owns_disc(load_config("quickstart_unpaired").distill)
    with pytest.raises(UserError, match="distill.student_gan_disc: 'mine' is not one of teacher, own"):
        load_config("quickstart", ["distill.student_gan_disc=mine"])


def test_recipes_all_load_and_round_trip(tmp_path):
    names = recipe_names()
    assert {"quickstart", "quickstart_unpaired", "horse2zebra", "summer2winter", "edges2shoes", "cityscapes"} <= set(names)
    for name in names:
        cfg = load_config(name)
        path = tmp_path / f"{name}.yaml"
        path.write_text(to_yaml(cfg))
        assert load_config(str(path)) == cfg
        assert config_from_dict(to_dict(cfg)) == cfg


def test_yaml_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(UserError, match="bad.yaml: invalid YAML"):
        load_config(str(bad))
    with pytest.raises(UserError, match="nope.yaml: no such config file or recipe"):
        load_config("nope.yaml")
    listed = tmp_path / "list.yaml"
    listed.write_text(yaml.safe_dump([1, 2]))
    with pytest.raises(UserError, match="list.yaml: expected a mapping"):
        load_config(str(listed))


def test_every_key_has_help():
    from dcdgan.config import help_text

    text = help_text()
    for key in valid_keys():
        assert f"{key} = " in text


def test_configs_of_older_releases_still_load(tmp_path):
    from dcdgan.config import config_from_dict, to_dict

    stored = to_dict(load_config("quickstart"))
    for role in ("teacher", "student"):
        del stored["model"][f"{role}_norm"], stored["model"][f"{role}_dropout"]
    stored["model"].update(norm="batch", dropout=0.25)  # the single keys of releases before the task-aware defaults
    cfg = config_from_dict(stored)
    assert (cfg.model.teacher_norm, cfg.model.student_norm, cfg.model.teacher_dropout, cfg.model.student_dropout) == ("batch", "batch", 0.25, 0.25)
    (tmp_path / "config.yaml").write_text("model:\n  dropout: 0.5\n")
    assert load_config(str(tmp_path / "config.yaml")).model.student_dropout == 0.5


def test_n_dis_of_older_configs_becomes_the_key_its_schedule_read_and_is_refused_as_an_override(tmp_path):
    """distill.n_dis meant the interleaved update period or the burst ratio, whichever the schedule read; today each
    meaning has its own key. Stored configs and old YAML files map by their schedule; an override cannot tell."""
    from dcdgan.config import config_from_dict, to_dict

    stored = to_dict(load_config("quickstart"))
    del stored["distill"]["task_every"], stored["distill"]["burst_ratio"]
    stored["distill"]["n_dis"] = 3
    cfg = config_from_dict(stored)
    assert (cfg.distill.task_every, cfg.distill.burst_ratio) == (3, 1)
    (tmp_path / "burst.yaml").write_text("task: cyclegan\ndata:\n  root: builtin:shoes_unpaired\n  mode: unpaired\ndistill:\n  schedule: burst\n  n_dis: 4\n")
    cfg = load_config(str(tmp_path / "burst.yaml"))
    assert (cfg.distill.task_every, cfg.distill.burst_ratio) == (1, 4)
    with pytest.raises(UserError) as err:
        load_config("quickstart", ["distill.n_dis=2"])
    assert str(err.value) == (
        "distill.n_dis was split in two keys: distill.task_every (interleaved schedule: the teacher and discriminators update every N steps) "
        "and distill.burst_ratio (burst schedule: student epochs per teacher epoch); set the one your schedule reads"
    )
    assert load_config("horse2zebra").distill.burst_ratio == 4 and load_config("quickstart").distill.task_every == 1


def test_load_config_without_a_recipe_is_what_the_cli_runs_without_one(capsys):
    """`dcdgan.load_config()` and `dcdgan distill` with no config both mean the quickstart recipe (not the 200-epoch
    paper defaults, which paper_defaults() gives)."""
    from dcdgan.cli import main

    assert to_dict(load_config()) == to_dict(load_config("quickstart"))
    assert main(["distill", "--print-config"]) == 0
    assert capsys.readouterr().out == to_yaml(load_config())
    assert main(["distill", "train.max_steps=7", "--print-config"]) == 0
    assert capsys.readouterr().out == to_yaml(load_config(overrides=["train.max_steps=7"]))
    assert (paper_defaults().train.nepochs, paper_defaults().train.nepochs_decay) == (100, 100)
    assert to_dict(load_config()) != to_dict(paper_defaults())
