"""FID from features to the numbers a run reports: statistics, the default reference, validation and `dcdgan eval`.

Expected values are recomputed here with PIL, plain torch and pytorch-fid's own formulas, from the image files.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_RUN, fid_by_pytorch_fid, read_images, tiny_features

from fid_numerics import singular_fid_tolerance

from dcdgan.checkpoint import load_checkpoint
from dcdgan.cli import main
from dcdgan.metrics.fid import ReferenceStats, frechet_distance, load_stats
from dcdgan.weights import load_generator


def test_statistics_use_the_unbiased_covariance():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 3)) @ rng.normal(size=(3, 3))
    stats = ReferenceStats.from_features(x)
    centred = x - x.mean(axis=0)
    assert np.allclose(stats.mu, x.mean(axis=0))
    assert np.allclose(stats.sigma, centred.T @ centred / (len(x) - 1), rtol=1e-12)  # pytorch-fid: np.cov, ddof 1
    assert not np.allclose(stats.sigma, centred.T @ centred / len(x), rtol=1e-3)
    assert stats.features.shape == (5, 3) and ReferenceStats.from_features(x, keep_features=False).features is None


def test_frechet_distance_equals_pytorch_fid():
    from pytorch_fid.fid_score import calculate_frechet_distance

    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(40, 6)), rng.normal(size=(40, 6)) * 1.3 + 0.2
    sa, sb = ReferenceStats.from_features(a), ReferenceStats.from_features(b)
    expected = calculate_frechet_distance(sa.mu, sa.sigma, sb.mu, sb.sigma)
    assert frechet_distance(sa.mu, sa.sigma, sb.mu, sb.sigma) == pytest.approx(expected, rel=1e-9)
    assert fid_by_pytorch_fid(a, b) == pytest.approx(expected, rel=1e-9)
    # singular covariances (fewer images than dimensions) take pytorch-fid's eps path and still agree
    c, d = rng.normal(size=(4, 6)), rng.normal(size=(4, 6)) + 1
    sc, sd = ReferenceStats.from_features(c), ReferenceStats.from_features(d)
    singular = calculate_frechet_distance(sc.mu, sc.sigma, sd.mu, sd.sigma)
    # both take square roots of round-off in the null space (tests/fid_numerics.py): each is exact to that bound
    tolerance = 2 * singular_fid_tolerance(sc.sigma, sd.sigma, rank=len(c) - 1)
    assert frechet_distance(sc.mu, sc.sigma, sd.mu, sd.sigma) == pytest.approx(singular, rel=0, abs=tolerance)


@pytest.fixture(scope="module")
def fid_run(tmp_path_factory, folder_data, tiny_inception) -> Path:
    """2 steps of paired DCD on the folder data, selected by validation FID (10 val images, 4-d 'Inception')."""
    run = tmp_path_factory.mktemp("fid") / "run"
    args = ["distill", "quickstart", *TINY_RUN, f"data.root={folder_data['paired']}", "train.batch_size=4", "train.max_steps=2",
            "eval.metric=fid", f"eval.inception={tiny_inception}", "eval.max_images=0", "--run-dir", str(run), "--quiet"]
    assert main(args) == 0
    return run


def translate(generator_file: Path, images: torch.Tensor) -> torch.Tensor:
    gen, _ = load_generator(generator_file)
    with torch.no_grad():
        return gen.eval()(images)


def test_validation_fid_is_the_fid_of_the_student_against_the_val_targets(fid_run, folder_data, tiny_inception):
    val = folder_data["paired"] / "val"
    targets = tiny_features(tiny_inception, read_images(val / "B"))
    inputs = tiny_features(tiny_inception, read_images(val / "A"))
    # the default reference: the val split's targets (not its inputs), cached in the run directory
    ref = load_stats(fid_run / "fid_ref_val.npz")
    assert np.allclose(ref.mu, targets.mean(axis=0), atol=1e-6)
    assert np.allclose(ref.sigma, np.cov(targets, rowvar=False), atol=1e-6)
    assert not np.allclose(ref.mu, inputs.mean(axis=0), atol=1e-3)

    fake = tiny_features(tiny_inception, translate(fid_run / "student.safetensors", read_images(val / "A")))
    expected = fid_by_pytorch_fid(fake, targets)
    records = [json.loads(line) for line in (fid_run / "metrics.jsonl").read_text().splitlines()]
    scores = [r for r in records if "val/fid" in r]
    assert [r["step"] for r in scores] == [2]
    assert scores[0]["val/fid"] == pytest.approx(expected, rel=1e-4)
    state = load_checkpoint(fid_run / "checkpoints" / "best.ckpt")
    assert state["step"] == 2
    assert state["selection"]["metric"] == "fid" and state["selection"]["best_score"] == pytest.approx(expected, rel=1e-4)


def test_eval_cli_fid_values_against_the_test_targets(fid_run, folder_data, tiny_inception, capsys):
    assert main(["eval", str(fid_run), "--inception", str(tiny_inception), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    test = folder_data["paired"] / "test"
    targets = tiny_features(tiny_inception, read_images(test / "B"))
    ref = load_stats(fid_run / "fid_ref_test.npz")  # default reference: the test split's targets
    assert np.allclose(ref.mu, targets.mean(axis=0), atol=1e-6) and ref.features.shape == (10, 4)
    assert metrics["reference"] == "test targets" and metrics["n_images"] == 10
    a = read_images(test / "A")
    for name, file in (("student_last", "student.safetensors"), ("teacher", "teacher.safetensors")):
        out = translate(fid_run / file, a)
        model = metrics["models"][name]
        assert model["fid"] == pytest.approx(fid_by_pytorch_fid(tiny_features(tiny_inception, out), targets), rel=1e-4), name
        # PSNR on uint8 levels, per image, then averaged (torchmetrics/pix2pix convention)
        q = lambda x: ((x.clamp(-1, 1) + 1) * 127.5 + 0.5).floor()  # noqa: E731
        mse = ((q(out) - q(read_images(test / "B"))) ** 2).mean((1, 2, 3))
        assert model["psnr"] == pytest.approx((10 * torch.log10(255**2 / mse)).mean().item(), rel=1e-4), name
    assert metrics["models"]["student_last"]["fid"] != pytest.approx(metrics["models"]["teacher"]["fid"], rel=1e-3)


def test_fid_input_errors(tmp_path):
    from dcdgan.errors import UserError
    from dcdgan.metrics.fid import kernel_inception_distance, save_stats

    with pytest.raises(UserError, match="^FID statistics need at least 2 images, got 1$"):
        ReferenceStats.from_features(np.zeros((1, 4)))
    with pytest.raises(UserError, match=r"^FID statistics of different dimensions: \(3,\) vs \(4,\)$"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(UserError, match="^KID needs at least 2 images on each side, got 1 and 5$"):
        kernel_inception_distance(np.zeros((1, 3)), np.zeros((5, 3)))
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(UserError, match=r"junk.npz: not a readable .npz \(ValueError\)$"):
        load_stats(tmp_path / "junk.npz")
    np.savez(tmp_path / "odd.npz", mu=np.zeros(3), sigma=np.eye(4))
    with pytest.raises(UserError, match=r"odd.npz: mu \(3,\) and sigma \(4, 4\) do not describe one distribution"):
        load_stats(tmp_path / "odd.npz")
    np.savez(tmp_path / "none.npz", other=np.zeros(3), more=np.ones(1))
    with pytest.raises(UserError, match="none.npz: missing mu, sigma \\(keys: other, more\\)$"):
        load_stats(tmp_path / "none.npz")
    with pytest.raises(UserError, match="gone.npz: FID statistics file not found"):
        load_stats(tmp_path / "gone.npz")
    save_stats(tmp_path / "bare.npz", ReferenceStats(np.zeros(2), np.eye(2)))
    with np.load(tmp_path / "bare.npz") as npz:
        assert sorted(npz.files) == ["mu", "sigma"]
    assert load_stats(tmp_path / "bare.npz").features is None


def test_frechet_distance_by_hand_for_diagonal_covariances():
    # diagonal S1, S2: sqrt(S1 S2) is diagonal with sqrt(s1 s2), so FID = |mu1 - mu2|^2 + sum (sqrt s1 - sqrt s2)^2
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    s1, s2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
    expected = 1 + 0 + 4 + (1 - 2) ** 2 + (2 - 1) ** 2 + 0
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-9)


def test_kid_by_hand_for_two_points():
    from dcdgan.metrics.fid import kernel_inception_distance

    x, y = np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[1.0, 1.0], [0.0, 0.0]])
    k = lambda a, b: (a @ b / 2 + 1) ** 3  # noqa: E731 - the cubic polynomial kernel, d = 2
    expected = (2 * k(x[0], x[1])) / 2 + (2 * k(y[0], y[1])) / 2 - 2 * np.mean([k(a, b) for a in x for b in y])
    mean, std = kernel_inception_distance(x, y, subsets=3, subset_size=2)
    assert mean == pytest.approx(expected, rel=1e-12) and std == pytest.approx(0, abs=1e-12)


class Planted:
    """Unpickling this object writes a marker file: proof that loading ran code from the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_statistics_files_with_pickled_objects_are_refused_unexecuted(tmp_path):
    from dcdgan.errors import UserError

    marker = tmp_path / "executed"
    np.savez(tmp_path / "evil.npz", mu=np.array([Planted(marker)], dtype=object), sigma=np.eye(1))
    with pytest.raises(UserError, match=r"evil.npz: not a readable .npz \(ValueError\)$"):
        load_stats(tmp_path / "evil.npz")
    assert not marker.exists()


def test_frechet_distance_refuses_covariances_of_other_sizes():
    from dcdgan.errors import UserError

    with pytest.raises(UserError, match="FID statistics of different dimensions"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(4))


def test_fid_from_features_equals_the_covariance_formula():
    from dcdgan.metrics.fid import fid_of

    rng = np.random.default_rng(4)
    few_a, few_b = rng.normal(size=(5, 8)), rng.normal(size=(6, 8)) + 0.5  # fewer images than dimensions: singular
    a, b = ReferenceStats.from_features(few_a), ReferenceStats.from_features(few_b)
    by_eigenvalues = frechet_distance(a.mu, a.sigma, b.mu, b.sigma)
    # nuclear-norm path vs eigenvalue path: the eigenvalue path takes square roots of the 8 - 4 zero eigenvalues'
    # round-off, so it is exact only to ~1e-7 here (tests/fid_numerics.py), whatever the BLAS: measured 1.8e-8 on
    # two machines, where a tolerance of 1e-9 relative passed on one and failed on the other
    tolerance = singular_fid_tolerance(a.sigma, b.sigma, rank=len(few_a) - 1)
    assert 1e-8 < tolerance < 1e-5  # not vacuous: 1e-6 of this FID of 11.24
    assert fid_of(a, b) == pytest.approx(by_eigenvalues, rel=0, abs=tolerance)
    # full rank: both paths agree with pytorch-fid
    many_a, many_b = rng.normal(size=(40, 4)), rng.normal(size=(30, 4)) * 2
    a, b = ReferenceStats.from_features(many_a), ReferenceStats.from_features(many_b)
    assert fid_of(a, b) == pytest.approx(fid_by_pytorch_fid(many_a, many_b), rel=1e-6)
    with pytest.raises(Exception, match="different dimensions"):
        fid_of(ReferenceStats.from_features(few_a), ReferenceStats.from_features(rng.normal(size=(5, 7))))
