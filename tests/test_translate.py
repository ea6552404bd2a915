"""dcdgan translate: any size and channel count, names kept, corrupt files named and skipped, backends agree."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image

from dcdgan.backends import load_runner
from dcdgan.cli import main
from dcdgan.export import export_model
from dcdgan.translate import fill_batch, pad_to_multiple, translate_files


def make_folder(root):
    """Mixed sizes, grayscale, RGBA, a nested folder and one corrupt file."""
    rng = np.random.default_rng(0)
    (root / "nested" / "deeper").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / "rgb_32.png")
    Image.fromarray(rng.integers(0, 256, (37, 45), dtype=np.uint8)).save(root / "gray_45x37.png")
    Image.fromarray(rng.integers(0, 256, (50, 21, 4), dtype=np.uint8), "RGBA").save(root / "nested" / "rgba_21x50.png")
    Image.fromarray(rng.integers(0, 256, (64, 30, 3), dtype=np.uint8)).save(root / "nested" / "deeper" / "photo.jpg")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (root / "notes.txt").write_text("not an image, not counted")
    return {"rgb_32.png": (32, 32), "gray_45x37.png": (45, 37), "nested/rgba_21x50.png": (21, 50), "nested/deeper/photo.jpg": (30, 64)}


def test_folder_of_mixed_images(tiny_run_dir, tmp_path, capsys):
    expected = make_folder(tmp_path / "in")
    assert main(["translate", str(tiny_run_dir), str(tmp_path / "in"), str(tmp_path / "out"), "--batch-size", "2", "--quiet"]) == 0
    captured = capsys.readouterr()
    for name, size in expected.items():
        out = Image.open(tmp_path / "out" / name)
        assert out.size == size and out.mode == "L", name  # the tiny run's student is 1-channel
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*") if p.is_file()) == sorted(expected)
    warnings = [line for line in captured.err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and f"{tmp_path / 'in' / 'broken.png'}" in warnings[0]
    assert captured.out.strip() == f"translated 4 image(s) into {tmp_path / 'out'} (torch, fp32); skipped 1 unreadable file(s)"


def test_nothing_translated_is_an_error(tiny_run_dir, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(b"garbage")
    assert main(["translate", str(tiny_run_dir), str(tmp_path / "in"), str(tmp_path / "out"), "--quiet"]) == 1
    assert "translated 0 image(s)" in capsys.readouterr().out
    assert main(["translate", str(tiny_run_dir), str(tmp_path / "missing"), str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip() == f"dcdgan translate: error: {tmp_path / 'missing'}: no such file or folder"


def test_onnx_and_run_directory_give_the_same_pixels(tiny_run_dir, tmp_path):
    make_folder(tmp_path / "in")
    onnx_file = tmp_path / "student.onnx"
    export_model(tiny_run_dir, "onnx", onnx_file, sizes=(32,), quiet=True)
    torch_out = translate_files(load_runner(tiny_run_dir), tmp_path / "in", tmp_path / "a", quiet=True)
    onnx_runner = load_runner(onnx_file)
    assert onnx_runner.backend == "onnxruntime"
    onnx_out = translate_files(onnx_runner, tmp_path / "in", tmp_path / "b", quiet=True)
    assert len(torch_out.written) == len(onnx_out.written) == 4
    for a, b in zip(sorted(torch_out.written), sorted(onnx_out.written)):
        if a.suffix == ".png":  # lossless: compare pixels (JPEG re-encoding could amplify a 1-level difference)
            diff = np.abs(np.asarray(Image.open(a), dtype=int) - np.asarray(Image.open(b), dtype=int))
            assert diff.max() <= 1, a.name


def test_single_file_to_a_named_output(tiny_run_dir, tmp_path):
    Image.fromarray(np.full((10, 13), 128, np.uint8)).save(tmp_path / "x.png")
    result = translate_files(load_runner(tiny_run_dir), tmp_path / "x.png", tmp_path / "y.png", quiet=True)
    assert result.written == [tmp_path / "y.png"] and Image.open(tmp_path / "y.png").size == (13, 10)


@pytest.mark.parametrize("h, w", [(1, 1), (5, 7), (8, 8)])
def test_reflection_pad_to_multiple(h, w):
    x = np.arange(h * w, dtype=np.float32).reshape(1, h, w)
    padded = pad_to_multiple(x, 4)
    assert padded.shape == (1, -(-h // 4) * 4, -(-w // 4) * 4)
    assert np.array_equal(padded[:, :h, :w], x)
    if h == 5:
        assert padded[0, 5, 0] == x[0, 3, 0]  # reflection, not edge


def test_captured_runners_get_fixed_batches(tiny_run_dir, tmp_path):
    rng = np.random.default_rng(1)
    (tmp_path / "in").mkdir()
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(tmp_path / "in" / f"a_{i}.png")
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (20, 28), dtype=np.uint8)).save(tmp_path / "in" / f"b_{i}.png")
    base = load_runner(tiny_run_dir)
    calls = []

    def recording(images):
        calls.append(images.shape)
        return base.forward(images)

    eager = dataclasses.replace(base, forward=recording)
    plain = translate_files(eager, tmp_path / "in", tmp_path / "plain", batch_size=4, quiet=True)
    assert calls == [(4, 1, 32, 32), (1, 1, 32, 32), (3, 1, 20, 28)]  # eager: short batches stay short
    calls.clear()
    graphs = dataclasses.replace(eager, runner="cuda-graph")  # a capturing runner: every call is a full batch
    fixed = translate_files(graphs, tmp_path / "in", tmp_path / "fixed", batch_size=4, quiet=True)
    assert calls == [(4, 1, 32, 32), (4, 1, 32, 32), (4, 1, 20, 28)]
    assert len(plain.written) == len(fixed.written) == 8
    for a, b in zip(sorted(plain.written), sorted(fixed.written)):  # the filler images' outputs are dropped
        assert a.name == b.name and Image.open(b).size == Image.open(a).size
        assert np.abs(np.asarray(Image.open(a), dtype=int) - np.asarray(Image.open(b), dtype=int)).max() <= 1, a.name


def test_fill_batch_repeats_the_last_image():
    images = [np.full((1, 4, 4), v, np.float32) for v in (1, 2)]
    batch = fill_batch(images, 4)
    assert batch.shape == (4, 1, 4, 4) and [float(b[0, 0, 0]) for b in batch] == [1, 2, 2, 2]
    assert fill_batch(images, 2).shape == (2, 1, 4, 4)
    with pytest.raises(ValueError):
        fill_batch(images, 1)
