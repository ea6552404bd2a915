"""distill.lambda_pixel: an L1 to the teacher output beside (or instead of) the VGG losses."""

import pytest
import torch
from conftest import REFERENCE_STUDENT

from dcdgan.config import Config, load_config
from dcdgan.errors import UserError
from dcdgan.perceptual import setup_perceptual


def perceptual_terms(cfg: Config) -> tuple:
    """(VGG or None, pixel weight) that the run of ``cfg`` would use."""
    return setup_perceptual(cfg.distill, cfg.perceptual, torch.device("cpu"), lambda line: None)


def test_lambda_pixel_defaults_to_the_reference_objective():
    for recipe in ("horse2zebra", "horse2zebra_128", "edges2shoes", "cityscapes", "summer2winter", "quickstart_unpaired"):
        cfg = load_config(recipe, ["perceptual.weights=none"])
        assert cfg.distill.lambda_pixel == 0.0, recipe
        assert perceptual_terms(cfg) == (None, 0.0)
    # the paired quickstart adds an L1 to the teacher (the checkerboard evidence in benchmarks/RESULTS.md)
    cfg = load_config("quickstart", ["distill.method=dcd", "perceptual.weights=none"])
    assert cfg.distill.lambda_pixel == 100.0
    assert perceptual_terms(cfg) == (None, 100.0)
    # its 32 px student objective (benchmarks/RESULTS.md, "The student's own discriminator"): no VGG, both L1 terms,
    # a GAN term through a discriminator of the student's own; the unpaired quickstart keeps the reference terms
    d = load_config("quickstart").distill
    assert (d.lambda_style, d.lambda_feat, d.lambda_pixel, d.lambda_target, d.student_gan_weight, d.student_gan_disc) == (0, 0, 100, 100, 1, "own")
    d = load_config("quickstart_unpaired").distill
    assert (d.lambda_style, d.lambda_feat, d.lambda_pixel, d.lambda_target, d.student_gan_weight, d.student_gan_disc) == (1e4, 10, 0, 0, 0, "teacher")


def test_lambda_pixel_is_used_beside_vgg_and_without_it():
    with pytest.warns(UserWarning, match="RANDOM"):
        vgg, weight = perceptual_terms(load_config("quickstart", [*REFERENCE_STUDENT, "distill.lambda_pixel=3", "perceptual.weights=random"]))
    assert vgg is not None and weight == 3.0
    assert perceptual_terms(load_config("quickstart", ["distill.lambda_pixel=2.5", "perceptual.weights=none"])) == (None, 2.5)
    # the quickstart recipe turns the VGG terms off: no VGG is loaded, whatever perceptual.weights says
    assert perceptual_terms(load_config("quickstart", ["perceptual.weights=random"])) == (None, 100.0)
    assert perceptual_terms(load_config("quickstart", ["distill.method=none", "distill.lambda_pixel=2.5"])) == (None, 0.0)


def test_lambda_pixel_must_not_be_negative():
    with pytest.raises(UserError, match="distill.lambda_pixel"):
        load_config("quickstart", ["distill.lambda_pixel=-1"])
