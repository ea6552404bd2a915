"""Datasets: layouts, channel conversion, one shared random transform per pair, resumable order, embedded data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dcdgan.config import DataConfig
from dcdgan.data import DataRoot, EpochSampler, PairedDataset, SideBySidePairs, Transform, folder_dataset, list_images, to_mode
from dcdgan.errors import UserError


def write(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path)


def gradient(h: int, w: int, offset: int = 0) -> np.ndarray:
    """An RGB image whose pixels all differ, so any crop/flip difference shows."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([(x * 7 + offset) % 256, (y * 5) % 256, (x + y) % 256], -1).astype(np.uint8)


def test_side_by_side_pairs_share_crop_and_flip(tmp_path):
    img = gradient(40, 40)
    write(tmp_path / "train" / "0.png", np.concatenate([img, img], 1))  # A == B
    pairs = SideBySidePairs(list_images(tmp_path / "train"))
    ds = PairedDataset(pairs, Transform("resize_and_crop", 40, 32, True, True), 3, 3)
    flips = []
    for seed in range(12):
        item = ds[(0, seed)]
        assert item["A"].shape == (3, 32, 32)
        assert torch.equal(item["A"], item["B"])  # the same random crop and flip for A and B
        # and they are the crop and flip the seed's parameters describe, applied to the file by hand
        params = ds.transform.params((40, 40), np.random.default_rng(seed))
        top, left = params["crop"]
        expected = img[top:top + 32, left:left + 32]
        if params["flip"]:
            expected = expected[:, ::-1]
        assert torch.equal(item["A"], torch.from_numpy(expected.copy()).permute(2, 0, 1).float() / 255 * 2 - 1)
        flips.append(params["flip"])
    assert True in flips and False in flips  # both flipped and unflipped samples were checked
    params = {str(ds.transform.params((40, 40), np.random.default_rng(s))) for s in range(12)}
    assert len(params) > 3  # crops and flips actually vary with the seed
    assert torch.equal(ds[(0, 5)]["A"], ds[(0, 5)]["A"])  # and are a pure function of it


def test_eval_transform_resizes_only(tmp_path):
    t = Transform("resize_and_crop", 286, 256, True, train=False)
    assert t.params((500, 300), None) == {"resize": (256, 256), "crop": None, "flip": False}
    assert Transform("scale_width", 286, 256, True, False).params((512, 256), None)["resize"] == (128, 256)
    # pix2pix's __make_power_2 rounds each side to a multiple of 4 with Python's round (42 / 4 = 10.5 -> 10)
    assert Transform("none", 0, 0, False, False).params((30, 42), None)["resize"] == (40, 32)


def test_folder_pairs_matched_by_name(tmp_path):
    for name, off in [("b", 1), ("a", 2)]:
        write(tmp_path / "val" / "A" / f"{name}.png", gradient(8, 8, off))
        write(tmp_path / "val" / "B" / f"{name}.jpg", gradient(8, 8, off))
    cfg = DataConfig(root=str(tmp_path), mode="paired", load_size=8, crop_size=8, val_split="val")
    ds = DataRoot(cfg).eval_dataset("val")
    assert [ds[i]["name"] for i in range(2)] == ["a.png", "b.png"]
    write(tmp_path / "val" / "B" / "c.png", gradient(8, 8))
    with pytest.raises(UserError, match="1 files have no partner of the same name"):
        DataRoot(cfg).eval_dataset("val")


def test_unpaired_layout_and_direction(tmp_path):
    for split, n_a, n_b in [("train", 3, 5), ("test", 2, 2)]:
        for i in range(n_a):
            write(tmp_path / f"{split}A" / f"a{i}.png", gradient(8, 8, i))
        for i in range(n_b):
            write(tmp_path / f"{split}B" / f"b{i}.png", np.full((8, 8), 10 * i, np.uint8), "L")
    cfg = DataConfig(root=str(tmp_path), mode="unpaired", load_size=8, crop_size=8, val_split="test")
    ds = DataRoot(cfg).train_dataset()
    assert len(ds) == 5  # max(|A|, |B|), as CycleGAN
    item = ds[(4, 123)]
    assert item["A"].shape == (3, 8, 8) and item["B"].shape == (3, 8, 8) and item["name"] == "a1.png"
    back = DataRoot(DataConfig(root=str(tmp_path), mode="unpaired", direction="BtoA", load_size=8, crop_size=8, val_split="test"))
    assert back.eval_inputs("train")[0]["name"] == "b0.png"
    # the burst schedule's student epochs: one pass over the 3 A images, alone or each with a random B image
    alone, with_b = DataRoot(cfg).train_inputs(), DataRoot(cfg).train_inputs(with_targets=True)
    assert len(alone) == len(with_b) == 3 and set(alone[(2, 7)]) == {"A", "name"}
    item = with_b[(2, 7)]
    assert item["name"] == "a2.png" and item["B"].shape == (3, 8, 8)
    assert torch.equal(item["B"], with_b[(2, 7)]["B"])  # the B draw is the item's seed's, so a resumed run sees it again
    assert len({with_b[(0, seed)]["B"][0, 0, 0].item() for seed in range(20)}) > 1  # and random over seeds


def test_burst_student_inputs_use_the_training_augmentation_paired_and_unpaired(tmp_path):
    # the student's burst epochs are training epochs: random crop and flip, drawn from the item's seed; with targets
    # on paired data, A and B come as the pair (the same crop for both), one pass over the pairs
    img = gradient(12, 12)
    for i in range(3):
        write(tmp_path / "p" / "train" / f"{i}.png", np.concatenate([img, img], 1))  # A == B
        write(tmp_path / "u" / "trainA" / f"a{i}.png", img)
    for i in range(5):
        write(tmp_path / "u" / "trainB" / f"b{i}.png", img)
    common = dict(load_size=12, crop_size=8, flip=True, val_split="train")
    for mode in ("paired", "unpaired"):
        root = DataRoot(DataConfig(root=str(tmp_path / mode[0]), mode=mode, **common))
        for ds in (root.train_inputs(), root.train_inputs(with_targets=True)):
            assert len(ds) == 3
            crops = {tuple(ds[(0, seed)]["A"][:, 0, 0].tolist()) for seed in range(12)}
            assert len(crops) > 3, (mode, type(ds).__name__)  # an eval transform would give one
    with_b = DataRoot(DataConfig(root=str(tmp_path / "u"), mode="unpaired", **common)).train_inputs(with_targets=True)
    assert len({tuple(with_b[(0, seed)]["B"][:, 0, 0].tolist()) for seed in range(12)}) > 3  # B is augmented too
    pairs = DataRoot(DataConfig(root=str(tmp_path / "p"), mode="paired", **common)).train_inputs(with_targets=True)
    assert all(torch.equal(pairs[(1, seed)]["A"], pairs[(1, seed)]["B"]) for seed in range(6))


def test_channel_conversion():
    rgba = Image.fromarray(np.zeros((4, 4, 4), np.uint8), "RGBA")  # fully transparent
    assert to_mode(rgba, 3).getpixel((0, 0)) == (255, 255, 255)
    palette = Image.fromarray(np.arange(16, dtype=np.uint8).reshape(4, 4), "L").convert("P")
    assert to_mode(palette, 3).mode == "RGB" and to_mode(palette, 1).mode == "L"
    gray16 = Image.fromarray(np.full((4, 4), 65535, np.uint16))
    assert to_mode(gray16, 1).getpixel((0, 0)) == 255
    assert to_mode(Image.new("RGB", (4, 4), (255, 0, 0)), 1).getpixel((0, 0)) == 76  # ITU-R 601 luma
    with pytest.raises(UserError, match="1 or 3 channels"):
        to_mode(rgba, 4)


def test_broken_and_missing_images_name_the_file(tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match=r"broken.png: cannot read image"):
        folder_dataset(tmp_path / "imgs", 3)[0]
    with pytest.raises(UserError, match=r"empty: folder not found"):
        list_images(tmp_path / "empty")
    (tmp_path / "none").mkdir()
    with pytest.raises(UserError, match=r"none: no images"):
        list_images(tmp_path / "none")
    with pytest.raises(UserError, match="dataset folder not found"):
        DataRoot(DataConfig(root=str(tmp_path / "missing")))


def test_sampler_is_deterministic_and_resumable():
    s = EpochSampler(10, seed=3)
    s.begin(epoch=2)
    full = list(s)
    s.begin(epoch=2, skip=4)
    assert list(s) == full[4:] and len(s) == 6
    s.begin(epoch=3)
    assert [i for i, _ in s] != [i for i, _ in full]
    assert sorted(i for i, _ in full) == list(range(10))


def test_embedded_dataset_splits_and_holdout():
    paired = DataRoot(DataConfig(root="builtin:shoes_paired", mode="paired", input_nc=1, output_nc=1, load_size=32, crop_size=32, val_split="val"))
    assert [len(paired.split(s)) for s in ("train", "val", "test")] == [2400, 300, 300]
    item = paired.train_dataset()[(0, 1)]
    assert item["A"].shape == (1, 32, 32) and item["A"].min() >= -1 and item["B"].max() <= 1
    unpaired = DataRoot(DataConfig(root="builtin:shoes_unpaired", mode="unpaired", input_nc=1, output_nc=1, load_size=32, crop_size=32, val_split="val"))
    assert [len(unpaired.split(s).a) for s in ("train", "val", "test")] == [1000, 100, 200]
    held = DataRoot(DataConfig(root="builtin:shoes_paired", mode="paired", input_nc=1, output_nc=1, load_size=32, crop_size=32, val_split="holdout", holdout=50))
    train, val = held.split("train"), held.split("holdout")
    assert (len(train), len(val)) == (2350, 50)
    assert not set(train.pairs.indices) & set(val.pairs.indices)
    assert held.split("holdout").pairs.indices == val.pairs.indices  # fixed seed: the same images every time
    with pytest.raises(UserError, match="no split 'valid'"):
        paired.split("valid")
