"""Shared fixtures: tiny configs, offline weight locations."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# One intra-op thread per test process (and per `python -m dcdgan` a test starts, via the environment): on a
# small shared CPU, torch's OpenMP threads spin against each other and against other processes, which made
# tiny ops (an 8x8 instance norm) up to 1000x slower; single-threaded, the suite's time stays predictable.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

REPO = Path(__file__).resolve().parents[1]
SHARED_VGG = REPO.parent / "shared" / "weights" / "vgg16_imagenet_caffe_features.safetensors"


def vgg_file() -> Path | None:
    """The offline Caffe VGG16 file: $DCDGAN_VGG16, or ../shared next to the checkout."""
    path = Path(os.environ.get("DCDGAN_VGG16", SHARED_VGG))
    return path if path.is_file() else None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A test marked ``golden(file=...)`` skips (saying why) when ``file()`` finds no reference file, and fails when it
    skips although the file is there: a golden test must never go quiet where its weights exist (CI has them)."""
    outcome = yield
    report = outcome.get_result()
    marker = item.get_closest_marker("golden")
    if marker is None or not report.skipped:
        return
    found = marker.kwargs["file"]()
    if found is not None and Path(found).is_file():
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"golden test skipped although its file exists ({found}): {reason}"


@pytest.fixture(autouse=True)
def _deterministic(monkeypatch):
    torch.manual_seed(0)
    monkeypatch.setenv("TQDM_DISABLE", "1")


@pytest.fixture(autouse=True)
def _own_scan_cache(tmp_path, monkeypatch):
    """Dataset-scan results and FID reference statistics go to the test's folder, never to the user's ~/.cache."""
    monkeypatch.setenv("DCDGAN_CACHE_DIR", str(tmp_path / "scan-cache"))


@pytest.fixture
def offline(monkeypatch):
    """No VGG/Inception env overrides and no downloads: what a fresh offline machine sees."""
    import dcdgan.perceptual as perceptual

    monkeypatch.delenv("DCDGAN_VGG16", raising=False)
    monkeypatch.delenv("DCDGAN_INCEPTION", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(Path(os.environ.get("TMPDIR", "/tmp")) / "dcdgan-empty-torch-home"))

    def no_download():
        raise OSError("offline (test)")

    monkeypatch.setattr(perceptual, "_torchvision_download", no_download)


# ---------------------------------------------------------------- small real files for end-to-end checks

# The reference student objective (VGG terms, no target L1, no GAN term of its own). The quickstart recipe trains
# its 32 px student with another one (its YAML says why); tests of the mechanisms start from the reference.
REFERENCE_STUDENT = [
    "distill.lambda_style=10000",
    "distill.lambda_feat=10",
    "distill.lambda_target=0",
    "distill.student_gan_weight=0",
    "distill.student_gan_disc=teacher",
]

TINY_RUN = [  # narrow networks, no VGG, no final evaluation, a log line every step
    *REFERENCE_STUDENT,
    "model.teacher_ngf=8",
    "model.student_ngf=4",
    "model.ndf=8",
    "perceptual.weights=none",
    "distill.lambda_pixel=0",  # the quickstart recipe's L1 to the teacher would join every student loss here
    "eval.final=false",
    "train.log_every=1",
    "train.sample_every=0",
    "train.checkpoint_every=0",
    "eval.max_images=8",
]


class TinyFeatures(torch.nn.Module):
    """A 4-d stand-in for the FID Inception (TorchScript, like the real file) so FID plumbing runs in seconds."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 5, stride=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv(x)).mean((2, 3))


@pytest.fixture(scope="session")
def tiny_inception(tmp_path_factory) -> Path:
    """TorchScript file of ``TinyFeatures`` with fixed weights."""
    path = tmp_path_factory.mktemp("inception") / "tiny_inception.pt"
    torch.manual_seed(123)
    torch.jit.script(TinyFeatures()).save(str(path))
    return path


def gray(seed: int, size: int = 32):
    """A seeded grayscale image with some structure (a gradient plus noise)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    base = (x * rng.uniform(2, 8) + y * rng.uniform(2, 8)) % 256
    return np.clip(base + rng.normal(0, 30, (size, size)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def folder_data(tmp_path_factory) -> dict[str, Path]:
    """Two tiny 32x32 grayscale datasets on disk: paired ({train,val,test}/A|B/) and unpaired ({split}A/, {split}B/)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("data")
    sizes = {"train": 8, "val": 10, "test": 10}
    for split, n in sizes.items():
        for i in range(n):
            seed = sum(map(ord, split)) * 1000 + i
            a, b = gray(seed), 255 - gray(seed + 500_000)
            for folder, img in ((root / "paired" / split / "A", a), (root / "paired" / split / "B", b),
                                (root / "unpaired" / f"{split}A", a), (root / "unpaired" / f"{split}B", b)):
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(img, "L").save(folder / f"{i:03d}.png")
    return {"paired": root / "paired", "unpaired": root / "unpaired"}


def read_images(folder: Path) -> torch.Tensor:
    """Every PNG of a folder as a (N, 1, H, W) float tensor in [-1, 1], read with PIL alone."""
    import numpy as np
    from PIL import Image

    arrays = [np.asarray(Image.open(p).convert("L"), dtype=np.float32) for p in sorted(folder.glob("*.png"))]
    return torch.from_numpy(np.stack(arrays))[:, None] / 255 * 2 - 1


def tiny_features(inception_file: Path, images: torch.Tensor):
    """FID features the pytorch-fid way, by hand: quantise to uint8, /255, gray to RGB, bilinear 299, 2x - 1."""
    net = torch.jit.load(str(inception_file)).eval()
    q = ((images.clamp(-1, 1) + 1) * 127.5 + 0.5).floor()  # the uint8 levels a saved PNG would hold
    x = (q / 255).repeat(1, 3, 1, 1)
    x = torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False) * 2 - 1
    with torch.no_grad():
        return net(x).double().numpy()


def fid_by_pytorch_fid(features_a, features_b) -> float:
    """FID of two feature sets with pytorch-fid's own statistics formula (unbiased np.cov) and distance."""
    import numpy as np
    from pytorch_fid.fid_score import calculate_frechet_distance

    stats = [(f.mean(axis=0), np.cov(f, rowvar=False)) for f in (features_a, features_b)]
    return float(calculate_frechet_distance(stats[0][0], stats[0][1], stats[1][0], stats[1][1]))


@pytest.fixture(scope="session")
def tiny_run_dir(tmp_path_factory):
    """One tiny 2-step quickstart run (student ngf 4, teacher ngf 8) shared by the deployment tests."""
    from deploy_run import tiny_run

    return tiny_run(tmp_path_factory.mktemp("deploy"))


# Plain formulas the loss tests recompute the product's values with (independent of dcdgan.losses).
def lsgan_g(pred):
    """LSGAN generator loss: mean (D(fake) - 1)^2."""
    return ((pred - 1) ** 2).mean()


def lsgan_d(real_pred, fake_pred):
    """LSGAN discriminator loss: half of mean (D(real) - 1)^2 plus mean D(fake)^2."""
    return 0.5 * (((real_pred - 1) ** 2).mean() + (fake_pred**2).mean())


def l1(x, y):
    """Mean absolute difference."""
    return (x - y).abs().mean()
