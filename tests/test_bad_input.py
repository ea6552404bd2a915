"""Bad input through the CLI: one line naming the file or key and the problem, exit code 2, no traceback.

One table row per case; each builds the bad thing in a temporary folder and runs ``dcdgan.cli.main``.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from badfiles import RunsCode, exif_rotated_jpeg, huge_png, image, png16_rgb, truncated_jpeg
from dcdgan.checkpoint import load_checkpoint, save_checkpoint
from dcdgan.cli import main
from dcdgan.config import load_config, to_dict
from dcdgan.data import DataRoot, read_image, to_mode
from dcdgan.errors import UserError
from dcdgan.scan import scan_data
from conftest import REFERENCE_STUDENT

# tiny networks, no VGG, no final evaluation: what is left of a run is the part under test
TINY = ["model.teacher_ngf=8", "model.student_ngf=4", "model.ndf=8", "perceptual.weights=none", "eval.final=false",
        "eval.max_images=4", "train.log_every=1", "train.sample_every=0", "train.checkpoint_every=0"]
RGB = ["data.input_nc=3", "data.output_nc=3"]


def unpaired(root: Path, n: int = 3) -> Path:
    """trainA/ trainB/ testA/ testB/ of good 40x40 images."""
    for split in ("train", "test"):
        for side in "AB":
            for i in range(n):
                image(root / f"{split}{side}" / f"{side.lower()}{i}.jpg", offset=i)
    return root


def paired_side_by_side(root: Path, n: int = 3) -> Path:
    """train/ and test/ of 80x40 A|B images."""
    for split in ("train", "test"):
        for i in range(n):
            image(root / split / f"{i}.png", 40, 80, offset=i)
    return root


def check_unpaired(root: Path, *extra: str) -> list[str]:
    return ["check", "quickstart_unpaired", f"data.root={root}", *RGB, "data.val_split=holdout", "data.holdout=1", *extra, "--quiet"]


def check_paired(root: Path, *extra: str) -> list[str]:
    return ["check", "quickstart", f"data.root={root}", *RGB, "data.val_split=holdout", "data.holdout=1", *extra, "--quiet"]


def distill_args(tmp: Path, *extra: str) -> list[str]:
    return ["distill", "quickstart", *TINY, "train.max_steps=1", *extra, "--run-dir", str(tmp / "run"), "--quiet"]


# ---------------------------------------------------------------- builders of the table's cases (tmp -> argv)


def truncated_image(tmp):
    truncated_jpeg(unpaired(tmp / "d") / "trainA" / "cut.jpg")
    return check_unpaired(tmp / "d")


def not_an_image(tmp):
    (unpaired(tmp / "d") / "trainB" / "garbage.png").write_bytes(b"this is not a png")
    return check_unpaired(tmp / "d")


def empty_folder(tmp):
    root = unpaired(tmp / "d")
    for f in (root / "trainB").iterdir():
        f.unlink()
    return check_unpaired(root)


def missing_root(tmp):
    return check_unpaired(tmp / "nowhere")


def one_side_only(tmp):
    root = unpaired(tmp / "d")
    for f in (root / "trainB").iterdir():
        f.unlink()
    (root / "trainB").rmdir()
    return check_unpaired(root)


def missing_val(tmp):
    return check_unpaired(unpaired(tmp / "d"), "data.val_split=val")


def missing_test(tmp):
    root = tmp / "d"
    for side in "AB":
        for i in range(3):
            image(root / f"train{side}" / f"{i}.png")
    return check_unpaired(root)


def unmatched_names(tmp):
    for name in ("x", "y", "z"):
        image(tmp / "d" / "train" / "A" / f"{name}.png")
    for name in ("x", "q"):
        image(tmp / "d" / "train" / "B" / f"{name}.png")
    for name in ("x", "y"):
        image(tmp / "d" / "test" / "A" / f"{name}.png")
        image(tmp / "d" / "test" / "B" / f"{name}.png")
    return check_paired(tmp / "d")


def odd_width(tmp):
    image(paired_side_by_side(tmp / "d") / "train" / "odd.png", 40, 81)
    return check_paired(tmp / "d")


def halves_differ(tmp):
    for split in ("train", "test"):
        for name in ("p", "q"):
            image(tmp / "d" / split / "A" / f"{name}.png")
            image(tmp / "d" / split / "B" / f"{name}.png")
    image(tmp / "d" / "train" / "B" / "q.png", 36, 40)
    return check_paired(tmp / "d")


def smaller_than_crop(tmp):
    image(unpaired(tmp / "d") / "trainA" / "tiny.png", 20, 20)
    return check_unpaired(tmp / "d", "data.preprocess=none")


def decompression_bomb(tmp):
    huge_png(unpaired(tmp / "d") / "trainA" / "huge.png")
    return check_unpaired(tmp / "d")


def python_tag_yaml(tmp):
    evil = tmp / "evil.yaml"
    evil.write_text(f"task: !!python/object/apply:os.system ['touch {tmp / 'pwned'}']\n")
    return ["distill", str(evil), "--run-dir", str(tmp / "run")]


def wrong_type_in_yaml(tmp):
    (tmp / "my.yaml").write_text("train:\n  lr: fast\n")
    return ["distill", str(tmp / "my.yaml"), "--run-dir", str(tmp / "run")]


def fake_run(tmp, **config_changes) -> Path:
    """A run folder whose last.ckpt holds the tiny quickstart config (enough for what resume checks first)."""
    cfg = load_config("quickstart", TINY)
    run = tmp / "run"
    save_checkpoint(run / "checkpoints" / "last.ckpt", {"config": to_dict(cfg), "step": 1})
    return run


def other_architecture(tmp):
    return ["distill", "--resume", str(fake_run(tmp)), "model.student_ngf=8"]


def truncated_checkpoint(tmp):
    ckpt = fake_run(tmp) / "checkpoints" / "last.ckpt"
    ckpt.write_bytes(ckpt.read_bytes()[:300])
    return ["distill", "--resume", str(ckpt.parent.parent)]


def pickled_checkpoint(tmp):
    run = tmp / "run"
    (run / "checkpoints").mkdir(parents=True)
    torch.save({"format": 1, "config": RunsCode(tmp / "pwned")}, run / "checkpoints" / "last.ckpt")
    return ["distill", "--resume", str(run)]


def not_a_run(tmp):
    (tmp / "photos").mkdir()
    (tmp / "photos" / "cat.jpg").write_bytes(b"")
    return ["distill", "--resume", str(tmp / "photos")]


def pickled_teacher(tmp):
    torch.save({"model.1.weight": RunsCode(tmp / "pwned")}, tmp / "latest_net_G.pth")
    return distill_args(tmp, f"model.teacher_weights={tmp / 'latest_net_G.pth'}")


def pickled_vgg(tmp):
    torch.save({"features.0.weight": RunsCode(tmp / "pwned")}, tmp / "vgg16.pth")
    return distill_args(tmp, *REFERENCE_STUDENT, f"perceptual.weights={tmp / 'vgg16.pth'}")  # the quickstart's own objective reads no VGG


def output_dir_is_a_file(tmp):
    (tmp / "results").write_text("not a folder")
    return ["distill", "quickstart", *TINY, f"run.output_dir={tmp / 'results'}", "run.name=x", "--quiet"]


CASES = [
    # (id, build(tmp) -> argv, what the error line must contain)
    ("truncated image", truncated_image, ["cut.jpg: corrupt or truncated image", "data.on_bad_image=skip"]),
    ("not an image", not_an_image, ["garbage.png: not an image"]),
    ("empty folder", empty_folder, ["trainB: no images"]),
    ("missing data root", missing_root, ["nowhere: dataset folder not found (data.root)"]),
    ("unpaired root with one side", one_side_only, ["trainB: folder not found; unpaired data needs both trainA/ and trainB/ (found only trainA/)"]),
    ("missing valA/valB", missing_val, ["no valA/ and valB/ folders for data.val_split=val", "set data.val_split=holdout"]),
    ("missing test split", missing_test, ["no testA/ and testB/ folders for data.test_split=test", "eval.final=false"]),
    ("paired names do not match", unmatched_names, ["3 files have no partner of the same name (e.g. y.png, z.png, q.png)"]),
    ("side-by-side odd width", odd_width, ["odd.png: width 81 is odd, so the A|B halves would differ in size"]),
    ("A/B pair of different sizes", halves_differ, ["q.png: 40x40 but its partner", "q.png is 40x36"]),
    ("smaller than crop (preprocess none)", smaller_than_crop, ["tiny.png: 20x20 is smaller than data.crop_size=32 (data.preprocess=none"]),
    ("decompression bomb", decompression_bomb, ["huge.png: 20000x20000 pixels (400 Mpx) exceeds the decompression-bomb limit of 179 Mpx"]),
    ("unknown config key", lambda tmp: distill_args(tmp, "data.rot=x"), ["unknown config key 'data.rot'; valid keys: task, data.root, data.mode"]),
    ("wrong value type", lambda tmp: distill_args(tmp, "train.batch_size=four"), ["train.batch_size: expected int, got 'four'"]),
    ("wrong value type in a YAML file", wrong_type_in_yaml, ["train.lr: expected float, got 'fast'"]),
    ("negative lambda", lambda tmp: distill_args(tmp, "distill.lambda_dcd=-1"), ["distill.lambda_dcd: must not be negative, got -1.0"]),
    ("nan lambda", lambda tmp: distill_args(tmp, "loss.lambda_recon=nan"), ["loss.lambda_recon: must not be negative, got nan"]),
    ("crop larger than load size", lambda tmp: distill_args(tmp, "data.crop_size=64"), ["data.crop_size (64) cannot exceed data.load_size (32)"]),
    ("task_every below 1", lambda tmp: distill_args(tmp, "distill.task_every=0"), ["distill.task_every: must be at least 1, got 0"]),
    ("burst_ratio below 1", lambda tmp: distill_args(tmp, "distill.burst_ratio=0"), ["distill.burst_ratio: must be at least 1, got 0"]),
    ("value not among the choices", lambda tmp: distill_args(tmp, "distill.method=kd"), ["distill.method: 'kd' is not one of none, omgd, dcd"]),
    ("unknown recipe", lambda tmp: ["distill", "horse2zebr"], ["horse2zebr: no such config file or recipe (recipes: cityscapes, edges2photo_64, edges2shoes, horse2zebra,"]),
    ("YAML with a Python tag", python_tag_yaml, ["evil.yaml: invalid YAML (could not determine a constructor for the tag 'tag:yaml.org,2002:python/object/apply:os.system')"]),
    ("checkpoint of other networks", other_architecture, ["last.ckpt: made for other networks (model.student_ngf=4 there, 8 here)"]),
    ("truncated checkpoint", truncated_checkpoint, ["last.ckpt: not a readable dcdgan checkpoint"]),
    ("checkpoint pickle that runs code", pickled_checkpoint, ["last.ckpt: not a readable dcdgan checkpoint"]),
    ("--resume of a folder that is not a run", not_a_run, ["photos: not a dcdgan run directory (no checkpoints/last.ckpt); start a new run without --resume"]),
    ("--resume of a missing folder", lambda tmp: ["distill", "--resume", str(tmp / "gone")], ["gone: no such run directory to resume"]),
    ("teacher weights pickle that runs code", pickled_teacher, ["latest_net_G.pth: not a loadable state dict (UnpicklingError"]),
    ("VGG weights pickle that runs code", pickled_vgg, ["vgg16.pth: not a loadable state dict (UnpicklingError"]),
    ("output dir that cannot be created", output_dir_is_a_file, ["cannot create the run directory:", "results is a file, not a folder"]),
]


@pytest.mark.parametrize("build, expected", [pytest.param(b, e, id=i) for i, b, e in CASES])
def test_bad_input_is_one_line_and_exit_2(tmp_path, offline, capsys, build, expected):
    argv = build(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    line = err.strip()
    assert line.startswith(f"dcdgan {argv[0]}: error: "), line
    for fragment in expected:
        assert fragment in line, line
    assert not (tmp_path / "pwned").exists()  # no pickle or YAML tag ran its code
    assert not (tmp_path / "run" / "checkpoints" / "best.ckpt").exists()  # stopped before training


def test_every_problem_is_listed_at_once(tmp_path, capsys):
    root = unpaired(tmp_path / "d", n=2)
    for i in range(23):
        (root / "trainA" / f"bad{i:02d}.png").write_bytes(b"junk")
    assert main(check_unpaired(root, "data.val_split=val")) == 2
    out, err = capsys.readouterr()
    lines = out.splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 20 and "valA/ and valB/" in errors[0] and "bad00.png: not an image" in errors[1]
    assert "... and 4 more problems" in lines
    assert "split train: trainA/ 25 images (23 bad), trainB/ 2 images" in lines
    assert "split test: testA/ 2 images, testB/ 2 images" in lines
    assert "(and 23 more problems, listed above)" in err


def test_warned_not_fatal(tmp_path, capsys):
    root = unpaired(tmp_path / "d")
    (root / "trainA" / "README.txt").write_text("notes")
    (root / "trainA" / ".DS_Store").write_bytes(b"\0")
    image(root / "trainA" / "extra" / "deeper" / "n.png")
    image(root / "trainB" / "SHOUT.JPG")
    image(root / "trainB" / "tiny.png", 20, 20)
    assert main(check_unpaired(root)) == 0
    out = capsys.readouterr().out
    assert f"warning: {root / 'trainA'}: ignored 2 files that are not images: .DS_Store, README.txt" in out
    assert f"warning: {root / 'trainA' / 'extra'}: 1 image in this subfolder is not used (image folders are read non-recursively)" in out
    assert f"warning: {root / 'trainB' / 'tiny.png'}: 20x20 is smaller than data.crop_size=32; upscaled by data.preprocess=resize_and_crop" in out
    assert "split train: trainA/ 3 images, trainB/ 5 images" in out  # SHOUT.JPG is an image; extra/ is not read
    assert "0 problems, 3 warnings" in out


def test_converted_not_rejected(tmp_path, capsys):
    root = unpaired(tmp_path / "d")
    a = root / "trainA"
    png16_rgb(a / "rgb16.png", (65535, 32896, 0))
    from PIL import Image

    Image.fromarray(np.full((40, 40), 65535, np.uint16)).save(a / "gray16.png")
    image(a / "cmyk.jpg", mode="CMYK")
    image(a / "palette.png", mode="P")
    image(a / "la.png", mode="LA")
    image(a / "rgba.png", mode="RGBA")
    exif_rotated_jpeg(a / "rotated.jpg", h=40, w=60)
    assert main(check_unpaired(root)) == 0
    assert "0 problems" in capsys.readouterr().out
    assert to_mode(read_image(a / "rgb16.png"), 3).getpixel((0, 0)) == (255, 128, 0)  # 16 bits scaled to 8
    assert to_mode(read_image(a / "gray16.png"), 1).getpixel((0, 0)) == 255
    assert to_mode(read_image(a / "cmyk.jpg"), 3).mode == "RGB"
    stored = np.asarray(Image.open(a / "rotated.jpg").convert("RGB"), np.float64)
    shown = read_image(a / "rotated.jpg")
    assert shown.size == (40, 60)  # orientation 6: a 60x40 photo shown upright as 40 wide, 60 high
    assert np.abs(np.asarray(shown.convert("RGB"), np.float64) - np.rot90(stored, k=-1)).mean() < 3  # turned clockwise
    cfg = load_config("quickstart_unpaired", [f"data.root={root}", *RGB, "data.val_split=holdout", "data.holdout=1"])
    inputs = DataRoot(cfg.data).eval_inputs("train")
    assert [tuple(inputs[i]["A"].shape) for i in range(len(inputs))] == [(3, 32, 32)] * len(inputs)


def messy_folder(root: Path) -> Path:
    """The folder from the issue: truncated JPEG, a .txt, 16-bit PNG, CMYK JPEG, RGBA PNG, 20x20 image, nested subfolders."""
    unpaired(root, n=4)
    truncated_jpeg(root / "trainA" / "truncated.jpg")
    (root / "trainA" / "README.txt").write_text("where these came from")
    png16_rgb(root / "trainA" / "sixteen.png")
    image(root / "trainB" / "cmyk.jpg", mode="CMYK")
    image(root / "trainB" / "rgba.png", mode="RGBA")
    image(root / "trainB" / "tiny.png", 20, 20)
    for folder in ("trainA", "trainB", "testA", "testB"):
        image(root / folder / "old" / "nested.png")
    return root


def test_messy_folder_stops_before_training_then_trains_with_skip(tmp_path, offline, capsys):
    root = messy_folder(tmp_path / "messy")
    args = ["distill", "quickstart_unpaired", f"data.root={root}", *RGB, "data.val_split=holdout", "data.holdout=1",
            "train.batch_size=1", "train.max_steps=2", *TINY]
    assert main([*args, "--run-dir", str(tmp_path / "strict"), "--quiet"]) == 2
    out, err = capsys.readouterr()
    assert err.strip() == (f"dcdgan distill: error: {root / 'trainA' / 'truncated.jpg'}: corrupt or truncated image "
                           "(image file is truncated (7 bytes not processed)); or set data.on_bad_image=skip to train without it")
    assert f"warning: {root / 'trainA'}: ignored 1 file that is not an image: README.txt" in out
    assert f"warning: {root / 'trainA' / 'old'}: 1 image in this subfolder is not used" in out
    assert not (tmp_path / "strict").exists()  # nothing built, nothing written

    assert main([*args, "data.on_bad_image=skip", "--run-dir", str(tmp_path / "skip"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"skipping 1 bad image (data.on_bad_image=skip); the list is in {tmp_path / 'skip' / 'skipped_images.txt'}" in out
    assert (tmp_path / "skip" / "skipped_images.txt").read_text().startswith(f"{root / 'trainA' / 'truncated.jpg'}\tcorrupt or truncated image")
    assert load_checkpoint(tmp_path / "skip" / "checkpoints" / "last.ckpt")["train_size"] == 6  # max(|A| = 6 - 1 bad - 1 held out, |B| = 7 - 1 held out)


def test_skip_leaves_out_both_files_of_a_pair(tmp_path):
    for split in ("train", "test"):
        for name in ("p", "q", "r"):
            image(tmp_path / split / "A" / f"{name}.png")
            image(tmp_path / split / "B" / f"{name}.png")
    truncated_jpeg(tmp_path / "train" / "B" / "q.png")
    cfg = load_config("quickstart", [f"data.root={tmp_path}", *RGB, "data.val_split=test", "data.on_bad_image=skip"])
    report = scan_data(cfg.data, ["train", "test"])
    assert [Path(p.where).name for p in report.bad] == ["q.png"] and len(report.excluded()) == 2
    pairs = DataRoot(cfg.data, exclude=report.excluded()).split("train").pairs
    assert [pairs.name(i) for i in range(len(pairs))] == ["p.png", "r.png"]


def test_cache_means_resume_does_not_decode_again(tmp_path):
    root = unpaired(tmp_path / "d")
    cfg = load_config("quickstart_unpaired", [f"data.root={root}", *RGB, "data.val_split=holdout"]).data
    assert scan_data(cfg, ["train", "test"]).decoded == 12
    again = scan_data(cfg, ["train", "test"])
    assert (again.decoded, again.images, again.bad) == (0, 12, [])
    time.sleep(0.01)
    truncated_jpeg(root / "trainA" / "a1.jpg")  # same path, new contents: rechecked
    changed = scan_data(cfg, ["train", "test"])
    assert changed.decoded == 1 and [Path(p.where).name for p in changed.bad] == ["a1.jpg"]


def test_scan_of_many_small_images_is_fast(tmp_path):
    root = tmp_path / "d"
    for side in "AB":
        for i in range(250):
            image(root / f"train{side}" / f"{i}.jpg", 32, 32, offset=i)
    cfg = load_config("quickstart_unpaired", [f"data.root={root}", *RGB, "data.val_split=holdout", "eval.final=false"]).data
    started = time.perf_counter()
    report = scan_data(cfg, ["train"], quiet=True, use_cache=False)
    seconds = time.perf_counter() - started
    assert report.decoded == 500 and not report.bad
    assert seconds < 10, f"500 images took {seconds:.1f}s (budget: 2,000 in 10 s)"


def test_disk_full_during_checkpoint_write_keeps_the_previous_one(tmp_path, offline, capsys, monkeypatch):
    import dcdgan.checkpoint as checkpoint

    real_save, calls = torch.save, []

    def save_until_the_disk_fills(obj, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 1:
            return real_save(obj, path, *args, **kwargs)
        Path(path).write_bytes(b"PK\x03\x04 half of a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", save_until_the_disk_fills)
    run = tmp_path / "run"
    assert main(["distill", "quickstart", *TINY, "train.max_steps=3", "train.checkpoint_every=1", "--run-dir", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "dcdgan distill: error: No space left on device; files written before it (the previous checkpoint) are intact"
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["step"] == 1
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.ckpt"]  # no half-written file left


def test_loaders_refuse_pickles_that_run_code(tmp_path):
    from dcdgan.metrics.inception import load_inception_file
    from dcdgan.metrics.lpips import load_lpips
    from dcdgan.perceptual import load_vgg_file
    from dcdgan.weights import read_state_dict

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"features.0.weight": RunsCode(marker)}, evil)
    loaders = [load_checkpoint, read_state_dict, load_vgg_file, load_inception_file, load_lpips]
    for load in loaders:
        with pytest.raises(UserError, match="evil.pth: "):
            load(evil)
    assert not marker.exists()
    # the payload is real: an unrestricted load does run it
    torch.load(evil, weights_only=False)
    assert marker.exists()


def test_debug_shows_the_traceback(tmp_path, capsys):
    assert main(["--debug", *missing_root(tmp_path)]) == 2
    assert "Traceback" in capsys.readouterr().err
    assert main([*missing_root(tmp_path), "--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_real_process_prints_one_line_and_no_traceback(tmp_path):
    argv = truncated_image(tmp_path)
    env = {**os.environ, "DCDGAN_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-m", "dcdgan", *argv], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "cut.jpg: corrupt or truncated image" in done.stderr


def test_weights_of_other_networks_are_one_line():
    from dcdgan.checkpoint import load_network_state

    net = torch.nn.Conv2d(3, 8, 3)
    other = torch.nn.Conv2d(3, 4, 3).state_dict()
    with pytest.raises(UserError, match=r"^last.ckpt: the stored student does not fit this config's network \(size mismatch for weight: copying a param with shape torch.Size\(\[4, 3, 3, 3\]\)"):
        load_network_state(net, other, "last.ckpt", "student")
    with pytest.raises(UserError, match="last.ckpt: the stored student does not fit this config's network \\(Missing key"):
        load_network_state(net, {}, "last.ckpt", "student")
