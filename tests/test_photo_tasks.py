"""The photo benchmark's tasks (issue 20): the edges -> photo build script, and the recipes horse2zebra_64 and
edges2photo_64 through the CLI, on tiny images made here (the shared horse2zebra photos are never needed)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from conftest import REPO

SCRIPT = REPO / "scripts" / "build_edges2photo.py"

# A fake CycleGAN horse2zebra release: (folder, file stem, width, height, PIL mode). Sizes differ, none is square,
# one photo is grayscale; the stems follow the release's (one ImageNet synset per domain, so they never collide).
FAKE_RELEASE = [
    ("trainA", "n02381460_1001", 40, 30, "RGB"),
    ("trainA", "n02381460_1002", 33, 47, "RGB"),
    ("trainA", "n02381460_1003", 50, 50, "L"),
    ("trainA", "n02381460_1004", 61, 37, "RGB"),
    ("trainA", "n02381460_1005", 24, 29, "RGB"),
    ("trainB", "n02391049_2001", 45, 35, "RGB"),
    ("trainB", "n02391049_2002", 30, 52, "RGB"),
    ("trainB", "n02391049_2003", 64, 48, "RGB"),
    ("trainB", "n02391049_2004", 27, 27, "RGB"),
    ("testA", "n02381460_3001", 38, 44, "RGB"),
    ("testA", "n02381460_3002", 52, 31, "RGB"),
    ("testB", "n02391049_4001", 36, 36, "RGB"),
    ("testB", "n02391049_4002", 41, 58, "RGB"),
]
TRAIN_STEMS = {stem for folder, stem, *_ in FAKE_RELEASE if folder.startswith("train")}
TEST_STEMS = {stem for folder, stem, *_ in FAKE_RELEASE if folder.startswith("test")}


@pytest.fixture(scope="module")
def script():
    """scripts/build_edges2photo.py imported from its path (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("build_edges2photo", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def photo(seed: int, width: int, height: int, mode: str) -> Image.Image:
    """A seeded photo-like image: a coloured disc on a gradient, plus noise (so edges and colours both exist)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rgb = np.stack([60 + x / width * 40, 60 + y / height * 40, np.full_like(x, 60)], axis=-1)  # gentle: below the edge threshold
    disc = (x - width * rng.uniform(0.3, 0.7)) ** 2 + (y - height * rng.uniform(0.3, 0.7)) ** 2 < (min(width, height) / 4) ** 2
    rgb[disc] = rng.uniform(0, 255, 3)
    rgb = np.clip(rgb + rng.normal(0, 2, rgb.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(rgb, "RGB").convert(mode)


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    """The fake horse2zebra release on disk, JPEG like the real one."""
    root = tmp_path_factory.mktemp("horse2zebra")
    for i, (folder, stem, width, height, mode) in enumerate(FAKE_RELEASE):
        (root / folder).mkdir(exist_ok=True)
        photo(i, width, height, mode).save(root / folder / f"{stem}.jpg", quality=90)
    return root


def stems(folder: Path) -> set[str]:
    """File names without suffix of a folder."""
    return {p.stem for p in folder.iterdir()}


def pixels(path: Path) -> np.ndarray:
    """An image file's pixels as stored."""
    return np.asarray(Image.open(path))


# ---------------------------------------------------------------- the edge operator

def sobel_magnitude(x: np.ndarray) -> np.ndarray:
    """3x3 Sobel gradient magnitude with a replicated border, by hand (float64)."""
    kx = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float64)
    p = np.pad(x.astype(np.float64), 1, mode="edge")
    h, w = x.shape
    gx = sum(kx[i, j] * p[i:i + h, j:j + w] for i in range(3) for j in range(3))
    gy = sum(kx.T[i, j] * p[i:i + h, j:j + w] for i in range(3) for j in range(3))
    return np.sqrt(gx**2 + gy**2)


def sobel_edges(x: np.ndarray, threshold: float) -> np.ndarray:
    """Black-on-white map of the Sobel magnitude above ``threshold`` x its maximum."""
    mag = sobel_magnitude(x)
    return np.where(mag > threshold * mag.max(), 0, 255).astype(np.uint8)


def documented_edges(b: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """The script's documented operator with its defaults (luminance, Gaussian blur 1, Sobel above 0.2 x peak),
    and where that decision is clear of the threshold by more than float rounding could move it."""
    mag = sobel_magnitude(np.asarray(b.convert("L").filter(ImageFilter.GaussianBlur(1.0))))
    cut = 0.2 * mag.max()
    return np.where(mag > cut, 0, 255).astype(np.uint8), np.abs(mag - cut) > 1e-4 * mag.max()


def white_square(value: int = 255) -> np.ndarray:
    """24x24 black image with a ``value`` square on rows and columns 8..15."""
    x = np.zeros((24, 24), dtype=np.uint8)
    x[8:16, 8:16] = value
    return x


def test_edges_of_a_square_are_the_thresholded_sobel_ring(script):
    square = white_square()
    out = np.asarray(script.edges(Image.fromarray(square, "L"), blur=0))  # the default threshold, 0.2
    assert out.shape == (24, 24, 3) and (out == out[..., :1]).all()  # RGB, gray
    a = out[..., 0]
    assert np.array_equal(a, sobel_edges(square, 0.2))
    # By hand: a straight border gives 4 x 255 on both pixels beside it, the outer corner pixel only 255 x sqrt(2)
    # (33 % of the peak, reached at the inner corner: 765 x sqrt(2)), so at 0.2 the line is a closed 2-pixel ring
    # straddling the border, and nothing else.
    ring = np.full((24, 24), 255, np.uint8)
    ring[7:17, 7:17] = 0
    ring[9:15, 9:15] = 255
    assert np.array_equal(a, ring)
    # at 0.4 the outer corners (33 %) drop out, the rest of the ring stays
    high = np.asarray(script.edges(Image.fromarray(square, "L"), threshold=0.4, blur=0))[..., 0]
    assert np.array_equal(high, sobel_edges(square, 0.4))
    assert set(np.flatnonzero(high != ring)) == {7 * 24 + 7, 7 * 24 + 16, 16 * 24 + 7, 16 * 24 + 16}
    # the threshold is relative to the image's own peak: a dim square has the same edges
    assert np.array_equal(np.asarray(script.edges(Image.fromarray(white_square(40), "L"), blur=0))[..., 0], ring)


def test_default_threshold_is_a_fifth_of_the_peak(script):
    # A bright square sets the peak (765 x sqrt(2) at its inner corners). The straight sides of a square of 60 reach
    # 4 x 60 = 22 % of it, those of a square of 52 19 %: at the documented default 0.2 the first are lines, the
    # second not; a threshold of 0.25 or 0.18 would change that.
    x = np.zeros((32, 32), dtype=np.uint8)
    x[4:12, 4:12] = 255
    x[4:12, 20:28] = 60
    x[20:28, 4:12] = 52
    a = np.asarray(script.edges(Image.fromarray(x, "L"), blur=0))[..., 0]
    assert np.array_equal(a, sobel_edges(x, 0.2))
    assert a[3, 24] == a[4, 24] == a[8, 19] == a[8, 20] == 0  # the 60 square's sides
    assert a[19, 8] == a[20, 8] == a[24, 3] == a[24, 4] == 255  # the 52 square's sides


def test_edges_with_the_default_blur_stay_on_the_border(script):
    a = np.asarray(script.edges(Image.fromarray(white_square(), "L").convert("RGB")))[..., 0]
    assert set(np.unique(a)) == {0, 255}
    # Gaussian blur of radius 1 widens the ring by at most 2 pixels each side; the middle of each side is black,
    # the square's centre and the image's corners stay white.
    assert (a[:4, :] == 255).all() and (a[-4:, :] == 255).all() and (a[:, :4] == 255).all() and (a[:, -4:] == 255).all()
    assert (a[10:14, 10:14] == 255).all()
    assert a[7, 12] == a[16, 12] == a[12, 7] == a[12, 16] == 0
    # a flat image has no edges at all (not a division by its zero peak)
    assert (np.asarray(script.edges(Image.new("RGB", (16, 16), (90, 30, 200)))) == 255).all()


# ---------------------------------------------------------------- the build

def test_build_writes_matched_pairs_in_disjoint_splits(script, release, tmp_path):
    out = tmp_path / "edges2photo"
    counts = script.build(release, out, size=16, val=2, seed=0)
    assert counts == {"train": 7, "val": 2, "test": 4}
    assert sorted(p.name for p in out.iterdir()) == ["test", "train", "val"]
    split_stems = {}
    for split, n in counts.items():
        assert sorted(p.name for p in (out / split).iterdir()) == ["A", "B"]
        a, b = sorted((out / split / "A").iterdir()), sorted((out / split / "B").iterdir())
        assert [p.name for p in a] == [p.name for p in b] and len(a) == n  # pairs matched by name
        assert all(p.suffix == ".png" for p in a + b)
        split_stems[split] = stems(out / split / "A")
    # val carved from train: together they are the release's train images, disjoint; test is the release's test
    assert split_stems["train"] | split_stems["val"] == TRAIN_STEMS and not split_stems["train"] & split_stems["val"]
    assert split_stems["test"] == TEST_STEMS
    sources = {stem: release / folder / f"{stem}.jpg" for folder, stem, *_ in FAKE_RELEASE}
    for split in counts:
        for path_b in (out / split / "B").iterdir():
            a_image, b_image = Image.open(out / split / "A" / path_b.name), Image.open(path_b)
            assert a_image.size == b_image.size == (16, 16) and a_image.mode == b_image.mode == "RGB"
            b = np.asarray(b_image)
            # B is the photo squashed to the square (Lanczos), kept lossless
            expected = Image.open(sources[path_b.stem]).convert("RGB").resize((16, 16), Image.Resampling.LANCZOS)
            assert np.array_equal(b, np.asarray(expected)), path_b
            # A is black and white only, gray, and the documented operator applied to B
            a = np.asarray(a_image)
            assert set(np.unique(a)) <= {0, 255} and (a == a[..., :1]).all()
            expected_a, clear = documented_edges(b_image)
            assert clear.mean() > 0.97 and np.array_equal(a[..., 0][clear], expected_a[clear]), path_b
    gray = np.asarray(Image.open(out / ("train" if "n02381460_1003" in split_stems["train"] else "val") / "B" / "n02381460_1003.png"))
    assert (gray == gray[..., :1]).all()  # the grayscale photo became a gray RGB image
    # every edge map has lines and background (the disc's outline, not the gentle gradient nor nothing)
    assert all(set(np.unique(pixels(p))) == {0, 255} for p in out.glob("*/A/*.png"))


def test_validation_carve_is_deterministic_for_a_seed(script, release, tmp_path):
    def carve(name: str, seed: int, size: int = 8) -> tuple[set[str], list[np.ndarray]]:
        out = tmp_path / name
        script.build(release, out, size=size, val=3, seed=seed)
        return stems(out / "val" / "A"), [pixels(p) for side in "AB" for p in sorted((out / "val" / side).iterdir())]

    val0, images0 = carve("seed0", 0)
    again, images_again = carve("seed0-again", 0)
    val1, _ = carve("seed1", 1)
    assert len(val0) == 3 and val0 == again and all(np.array_equal(x, y) for x, y in zip(images0, images_again))
    assert val1 != val0 and val1 <= TRAIN_STEMS
    assert stems(tmp_path / "seed1" / "train" / "A") == TRAIN_STEMS - val1
    # the carve depends on the seed alone, not on the output size
    assert carve("seed1-size12", 1, size=12)[0] == val1


@pytest.mark.parametrize("val", [0, -1, 9, 20])
def test_bad_val_is_refused_before_writing(script, release, tmp_path, val):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as err:
        script.build(release, out, size=16, val=val, seed=0)
    assert str(err.value) == f"--val {val}: must be between 1 and 8 (train has 9 images)"
    assert not out.exists()


@pytest.mark.parametrize("missing", ["trainA", "testB"])
def test_missing_release_folder_is_refused_before_writing(script, release, tmp_path, missing):
    root = tmp_path / "partial"
    for folder in ("trainA", "trainB", "testA", "testB"):
        if folder != missing:
            (root / folder).mkdir(parents=True)
            for src in (release / folder).iterdir():
                (root / folder / src.name).write_bytes(src.read_bytes())
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as err:
        script.build(root, out, size=16, val=2, seed=0)
    assert str(err.value) == f"{root / missing}: missing (expected the CycleGAN horse2zebra layout trainA/ trainB/ testA/ testB/)"
    assert not out.exists()


def test_build_as_a_command(release, tmp_path):
    out = tmp_path / "edges2photo-12"
    run = subprocess.run([sys.executable, str(SCRIPT), str(release), str(out), "--size", "12", "--val", "2", "--seed", "3"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout == f"{out}: train 7 pairs, val 2 pairs, test 4 pairs at 12x12\n" and run.stderr == ""
    assert {Image.open(p).size for p in out.rglob("*.png")} == {(12, 12)} and len(list(out.rglob("*.png"))) == 2 * 13
    bad = subprocess.run([sys.executable, str(SCRIPT), str(release), str(tmp_path / "bad"), "--val", "9"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and bad.stdout == ""
    assert bad.stderr == "--val 9: must be between 1 and 8 (train has 9 images)\n"  # one line, no traceback
    missing = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "nowhere"), str(tmp_path / "bad")],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode != 0 and missing.stderr.count("\n") == 1 and "nowhere/trainA: missing" in missing.stderr
    assert not (tmp_path / "bad").exists()


# ---------------------------------------------------------------- the recipes, 2 steps through the CLI

# Narrow networks, no VGG (the recipe test turns on a random one), no final evaluation, validation by L1: seconds
# per run. Nothing here touches the keys the tests below check the recipes keep (task, data layout and sizes,
# schedule, losses).
FAST = ["model.teacher_ngf=8", "model.student_ngf=4", "model.ndf=8", "perceptual.weights=none", "eval.final=false",
        "eval.metric=l1", "train.max_steps=2"]
RECIPE_DIR = REPO / "src" / "dcdgan" / "configs"


@pytest.fixture(scope="module")
def paired_photos(script, release, tmp_path_factory) -> Path:
    """The fake release built into task (d)'s paired layout by the build script, at the recipe's load size."""
    out = tmp_path_factory.mktemp("edges2photo") / "edges2photo-72"
    script.build(release, out, size=72, val=2, seed=0)
    return out


def data_for(recipe: str, release: Path, paired_photos: Path) -> list[str]:
    """data.* overrides pointing a recipe at the tiny data: the unpaired release (2 images per domain held out) or (d)."""
    return [f"data.root={release}", "data.holdout=2"] if recipe == "horse2zebra_64" else [f"data.root={paired_photos}"]


def distill(run_dir: Path, recipe: str, *overrides: str) -> Path:
    """``dcdgan distill <recipe>`` in this process; the overrides come after FAST, so they win."""
    from dcdgan.cli import main

    assert main(["distill", recipe, *FAST, *overrides, "--run-dir", str(run_dir), "--quiet"]) == 0
    return run_dir


def flat(tree: dict, prefix: str = "") -> dict:
    """{'a.b': value} of a nested mapping."""
    out = {}
    for key, value in tree.items():
        out.update(flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


def records(run_dir: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# recipe -> (what the resolved config must keep, the networks of its checkpoint)
RECIPES = {
    "horse2zebra_64": ({"task": "cyclegan", "data.mode": "unpaired", "data.val_split": "holdout", "loss.gan_mode": "lsgan",
                        "distill.lambda_dcd": 0.1},
                       {"gen_ab", "gen_ba", "disc_a", "disc_b", "student", "projector"}),
    "edges2photo_64": ({"task": "pix2pix", "data.mode": "paired", "data.val_split": "val", "loss.gan_mode": "hinge",
                        "distill.lambda_dcd": 1.0},
                       {"gen_ab", "disc_b", "student", "projector"}),
}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_recipe_runs_two_steps_through_the_cli(recipe, release, paired_photos, tmp_path, offline):
    import torch
    import yaml

    from dcdgan.checkpoint import load_checkpoint
    from dcdgan.weights import load_generator

    data = data_for(recipe, release, paired_photos)
    with pytest.warns(UserWarning, match="RANDOM weights"):  # the recipe's VGG terms run, on an untrained VGG16
        run = distill(tmp_path / "run", recipe, *data, "perceptual.weights=random")
    for rel in ["config.yaml", "checkpoints/last.ckpt", "student.safetensors", "teacher.safetensors", "metrics.jsonl"]:
        assert (run / rel).is_file(), rel
    resolved = flat(yaml.safe_load((run / "config.yaml").read_text()))
    keeps, networks = RECIPES[recipe]
    expected = {"data.crop_size": 64, "data.load_size": 72, "data.input_nc": 3, "data.output_nc": 3,
                "distill.method": "dcd", "distill.schedule": "interleaved", "distill.task_every": 1, "train.batch_size": 1, **keeps}
    assert {key: resolved[key] for key in expected} == expected
    # every value of the recipe file survives, except the keys this test overrides
    overridden = {arg.split("=")[0] for arg in FAST + data}  # perceptual.weights: auto in the recipe, random here
    recipe_values = flat(yaml.safe_load((RECIPE_DIR / f"{recipe}.yaml").read_text()))
    assert {k: resolved[k] for k in recipe_values if k not in overridden} == {k: v for k, v in recipe_values.items() if k not in overridden}
    assert resolved["data.root"] == str(data[0].split("=", 1)[1]) and resolved["model.student_ngf"] == 4
    state = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert state["step"] == 2 and set(state["networks"]) == networks
    train = [r for r in records(run) if "phase" in r]
    assert [r["step"] for r in train] == [2]  # the recipe's log_every (100) leaves the last step
    assert {"S_dcd", "S_style", "S_feat"} <= set(train[0])  # the recipe's student objective
    assert any("val/l1" in r for r in records(run))  # validation read the recipe's validation split
    student, description = load_generator(run / "student.safetensors")
    spec = {"netG": "mobile_resnet_9blocks", "ngf": 4, "input_nc": 3, "output_nc": 3, "dropout": 0.0, "norm": "instance"}
    assert description["spec"] == spec
    assert student(torch.zeros(1, 3, 64, 64)).shape == (1, 3, 64, 64)


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_recipe_with_a_frozen_teacher(recipe, release, paired_photos, tmp_path, offline):
    """The photo benchmark's protocol: a teacher-size network trained alone (method none), then frozen for a student."""
    import torch
    from safetensors.torch import load_file

    from dcdgan.checkpoint import load_checkpoint

    data = data_for(recipe, release, paired_photos)
    alone = distill(tmp_path / "teacher", recipe, *data, "distill.method=none", "model.student_ngf=8")
    teacher_file = alone / "student.safetensors"
    teacher = load_file(teacher_file)
    # another seed for the student run: a teacher initialised there instead of loaded would not match by chance
    run = distill(tmp_path / "student", recipe, *data, f"model.teacher_weights={teacher_file}", "train.seed=1")
    state = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert state["step"] == 2
    frozen = state["networks"]["gen_ab"]
    assert set(frozen) == set(teacher) and all(torch.equal(frozen[k], v) for k, v in teacher.items())
    assert "gen" not in state["optimizers"] and "gen_ba" not in state["networks"]  # nothing trains it, no B->A teacher
    delivered = load_file(run / "teacher.safetensors")
    assert set(delivered) == set(teacher) and all(torch.equal(delivered[k], v) for k, v in teacher.items())
    # the student did train, from its own initialisation, beside the frozen teacher
    assert {"student", "projector", "disc_b"} <= set(state["networks"]) and "student" in state["optimizers"]


# ---------------------------------------------------------------- task (e): a held-out Fashion-MNIST class


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file (MNIST's container: 2 zero bytes, the type 0x08 = uint8, the rank, big-endian sizes), gzipped."""
    import gzip

    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_fashion_paired_build_writes_one_class_in_disjoint_splits(tmp_path):
    src = tmp_path / "fashion"
    src.mkdir()
    # training file: labels 8 and 3 interleaved, 10 of each; t10k: 4 of class 8 after 2 of class 3. Each image is
    # a filled box whose brightness encodes its file position, so the test can tell which images went where.

    def images(n):
        x = np.zeros((n, 28, 28), np.uint8)
        for i in range(n):
            x[i, 6:22, 6:22] = 40 + 5 * i
        return x
    write_idx(src / "train-images-idx3-ubyte.gz", images(20))
    write_idx(src / "train-labels-idx1-ubyte.gz", np.array([8, 3] * 10))
    write_idx(src / "t10k-images-idx3-ubyte.gz", images(6))
    write_idx(src / "t10k-labels-idx1-ubyte.gz", np.array([3, 3, 8, 8, 8, 8]))
    out = tmp_path / "bag"
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "build_fashion_paired.py"), str(out), "--classes", "8",
                           "--src", str(src), "--train", "6", "--val", "2", "--test", "3"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"wrote {out}: train 6 pairs, val 2 pairs, test 3 pairs"
    position = {}
    for split, n in (("train", 6), ("val", 2), ("test", 3)):
        a, b = sorted((out / split / "A").iterdir()), sorted((out / split / "B").iterdir())
        assert [p.name for p in a] == [p.name for p in b] == [f"{i:05d}.png" for i in range(n)]  # pairs matched by name
        for pa, pb in zip(a, b):
            edge, photo_ = np.asarray(Image.open(pa)), np.asarray(Image.open(pb))
            assert edge.shape == photo_.shape == (28, 28) and Image.open(pa).mode == "L"
            assert set(np.unique(edge)) == {0, 255} and (edge[14, 14] == 255) and (edge[6, 14] == 0)  # black lines on white
            position.setdefault(split, []).append((int(photo_[14, 14]) - 40) // 5)
    # class 8 sits at the even positions of the training file: train takes its first 6, val the next 2; test t10k's 8s
    assert position == {"train": [0, 2, 4, 6, 8, 10], "val": [12, 14], "test": [2, 3, 4]}
    too_many = subprocess.run([sys.executable, str(REPO / "scripts" / "build_fashion_paired.py"), str(tmp_path / "x"),
                               "--classes", "8", "--src", str(src), "--train", "9", "--val", "2", "--test", "3"],
                              capture_output=True, text=True)
    assert too_many.returncode != 0 and "class 8: asked for 2 images from position 9, only 1 left" in too_many.stderr
