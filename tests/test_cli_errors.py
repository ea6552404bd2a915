"""Bad input through the CLI: exit code 2 and one line on stderr naming the file or key and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import TINY_RUN

from dcdgan.cli import main


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    """One step of paired DCD on 8 training pairs."""
    run = tmp_path_factory.mktemp("cli") / "run"
    assert main(["distill", "quickstart", *TINY_RUN, "data.max_train_images=8", "train.max_steps=1", "--run-dir", str(run), "--quiet"]) == 0
    return run


def test_resume_of_a_folder_without_a_checkpoint(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["distill", "--resume", str(tmp_path / "empty")]) == 2
    expected = f"dcdgan distill: error: {tmp_path / 'empty'}: not a dcdgan run directory (no checkpoints/last.ckpt); start a new run without --resume"
    assert one_line_error(capsys) == expected


def test_resume_with_other_data(small_run, capsys, offline):
    assert main(["distill", "--resume", str(small_run), "data.max_train_images=6", "train.max_steps=2", "--quiet"]) == 2
    assert "the training set has 6 items but the checkpoint was made with 8; resume needs the same data" in one_line_error(capsys)


def test_resume_with_other_networks(small_run, capsys, offline):
    assert main(["distill", "--resume", str(small_run), "distill.method=omgd", "distill.lambda_style=0", "distill.student_gan_weight=1",
                 "train.max_steps=2", "--quiet"]) == 2
    ckpt = small_run / "checkpoints" / "last.ckpt"
    assert one_line_error(capsys) == (f"dcdgan distill: error: {ckpt}: made for other networks (distill.method='dcd' there, 'omgd' here); "
                                      "resume with the run's own settings or start a new run")


def test_resume_with_other_network_sizes(small_run, capsys, offline):
    assert main(["distill", "--resume", str(small_run), "model.student_ngf=8", "model.ndf=16", "train.max_steps=2", "--quiet"]) == 2
    ckpt = small_run / "checkpoints" / "last.ckpt"
    assert one_line_error(capsys) == (f"dcdgan distill: error: {ckpt}: made for other networks (model.student_ngf=4 there, 8 here; "
                                      "model.ndf=8 there, 16 here); resume with the run's own settings or start a new run")


def test_resume_that_adds_the_students_own_discriminator_is_refused_first_naming_the_keys(small_run, capsys, offline, tmp_path):
    """The network set changes (a student_disc appears): refused before the dataset is read (a missing data.root
    would fail the scan otherwise), naming the keys, by the CLI and by the library's distill(cfg, dir, resume=True)."""
    from dcdgan.checkpoint import load_checkpoint
    from dcdgan.config import apply_overrides, config_from_dict
    from dcdgan.distill import distill
    from dcdgan.errors import UserError

    own = ["distill.student_gan_disc=own", "distill.student_gan_weight=1"]
    ckpt = small_run / "checkpoints" / "last.ckpt"
    expected = (f"{ckpt}: made for other networks (distill.student_gan_disc='teacher' there, 'own' here; distill.student_gan_weight=0.0 "
                "there, 1.0 here (the student's own discriminator exists only with distill.student_gan_disc=own and student_gan_weight > 0)); "
                "resume with the run's own settings or start a new run")
    assert main(["distill", "--resume", str(small_run), *own, f"data.root={tmp_path / 'nowhere'}", "data.mode=paired", "--quiet"]) == 2
    assert one_line_error(capsys) == f"dcdgan distill: error: {expected}"
    cfg = apply_overrides(config_from_dict(load_checkpoint(ckpt)["config"]), own)
    with pytest.raises(UserError) as err:
        distill(cfg, small_run, resume=True, quiet=True)
    assert str(err.value) == expected
    # another weight for the same (teacher's) discriminator builds the same networks: no objection from the check
    from dcdgan.checkpoint import check_compatible
    from dcdgan.config import to_dict

    check_compatible(load_checkpoint(ckpt), to_dict(apply_overrides(config_from_dict(load_checkpoint(ckpt)["config"]), ["distill.student_gan_weight=2"])), ckpt)


def test_resume_refuses_a_config_or_another_run_dir_it_would_ignore(small_run, capsys, tmp_path):
    assert main(["distill", "quickstart_unpaired", "train.max_steps=2", "--resume", str(small_run), "--quiet"]) == 2
    assert one_line_error(capsys) == (f"dcdgan distill: error: --resume {small_run} continues with the run's own config: drop quickstart_unpaired "
                                      "(key=value overrides still apply)")
    assert main(["distill", "--resume", str(small_run), "--run-dir", str(tmp_path / "other"), "train.max_steps=2", "--quiet"]) == 2
    assert one_line_error(capsys) == f"dcdgan distill: error: --resume {small_run} continues in that run's directory: drop --run-dir {tmp_path / 'other'}"
    # the same folder named twice is no conflict (and --print-config shows the run's own config, the override applied)
    assert main(["distill", "--resume", str(small_run), "--run-dir", str(small_run), "train.max_steps=2", "--print-config"]) == 0
    assert "  max_steps: 2\n" in capsys.readouterr().out


def test_student_without_any_loss(tmp_path, capsys, offline):
    args = ["distill", "quickstart", *TINY_RUN, "distill.method=omgd", "train.max_steps=1", "--run-dir", str(tmp_path / "r"), "--quiet"]
    assert main(args) == 2  # omgd without VGG (perceptual.weights=none), no DCD, no GAN term: nothing to learn from
    assert one_line_error(capsys) == (
        "dcdgan distill: error: the student has no loss: enable VGG (distill.lambda_style/lambda_feat), dcd, distill.student_gan_weight or distill.lambda_target"
    )
    assert main([*args[:-4], "distill.lambda_target=1", *args[-4:]]) == 0  # the L1 to the real target alone is a loss
    assert (tmp_path / "r" / "student.safetensors").is_file()


def test_segmenter_without_labels(small_run, tmp_path, capsys):
    assert main(["eval", str(small_run), "--no-fid", "--segmenter", str(tmp_path / "seg.pt")]) == 2
    assert one_line_error(capsys) == "dcdgan eval: error: --segmenter needs --labels DIR (integer label maps named like the test images)"


def test_stats_on_a_missing_folder(tmp_path, capsys, tiny_inception):
    assert main(["stats", str(tmp_path / "nowhere"), "--out", str(tmp_path / "ref.npz"), "--inception", str(tiny_inception)]) == 2
    assert one_line_error(capsys) == f"dcdgan stats: error: {tmp_path / 'nowhere'}: folder not found"
    assert not (tmp_path / "ref.npz").exists()
