"""dcdgan export: ONNX, OpenVINO and torch.export programs of student and teacher agree with PyTorch; errors are one line."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from dcdgan import export as export_module
from dcdgan.backends import load_runner, load_torch_source
from dcdgan.cli import main
from dcdgan.errors import UserError
from dcdgan.export import export_model

FORMAT_SUFFIX = {"onnx": ".onnx", "openvino": ".xml", "pt2": ".pt2"}


@pytest.mark.parametrize("which", ["student", "teacher"])
@pytest.mark.parametrize("fmt", ["onnx", "openvino", "pt2"])
def test_export_matches_pytorch_at_two_sizes(tiny_run_dir, tmp_path, fmt, which):
    out = tmp_path / f"{which}{FORMAT_SUFFIX[fmt]}"
    result = export_model(tiny_run_dir, fmt, out, which=which, sizes=(32, 48), quiet=True)
    assert out.is_file() and result["max_abs_diff"] <= 1e-4
    assert "max_abs_diff_real" in result  # checked on the run's own images too
    net = load_torch_source(tiny_run_dir, which).net
    runner = load_runner(out)
    assert runner.backend == {"onnx": "onnxruntime", "openvino": "openvino", "pt2": "torch"}[fmt]
    assert (runner.input_nc, runner.output_nc, runner.size_multiple) == (1, 1, 4)
    assert runner.params == sum(p.numel() for p in net.parameters())
    rng = np.random.default_rng(1)
    for shape in [(1, 1, 32, 32), (3, 1, 48, 48), (2, 1, 32, 48)]:  # dynamic batch, height and width
        x = rng.uniform(-1, 1, shape).astype(np.float32)
        with torch.no_grad():
            expected = net(torch.from_numpy(x)).numpy()
        got = runner(x)
        assert got.shape == shape
        assert np.abs(got - expected).max() <= 1e-4


def test_onnx_export_keeps_instance_norm(tiny_run_dir, tmp_path):
    import onnx

    export_model(tiny_run_dir, "onnx", tmp_path / "s.onnx", sizes=(32,), quiet=True)
    proto = onnx.load(str(tmp_path / "s.onnx"))
    assert sum(n.op_type == "InstanceNormalization" for n in proto.graph.node) == 1 + 2 + 9 * 4 + 2  # stem, 2 downs, 4 per block, 2 ups
    # the inference form: the 7x7 head as one stride-4 conv to 16 output phases per channel, then depth-to-space
    assert sum(n.op_type == "DepthToSpace" for n in proto.graph.node) == 1
    head = [n for n in proto.graph.node if n.op_type == "Conv" and any(a.name == "strides" and list(a.ints) == [4, 4] for a in n.attribute)]
    assert len(head) == 1
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.HasField("dim_value") for d in dims] == [False, True, False, False]  # batch, H, W dynamic; channels fixed


def test_parity_failure_writes_nothing(tiny_run_dir, tmp_path, monkeypatch):
    # below any difference, including an exact 0 (torch.export often reproduces eager bit for bit)
    monkeypatch.setattr(export_module, "PARITY_TOLERANCE", -1.0)
    with pytest.raises(UserError, match=r"differs from PyTorch by .* \(> -1\); not written"):
        export_model(tiny_run_dir, "onnx", tmp_path / "s.onnx", sizes=(32,), quiet=True)  # ONNX differs by ~1e-6 (pt2: exactly 0)
    assert not (tmp_path / "s.onnx").exists()


@pytest.mark.parametrize("precision", ["bf16", pytest.param("int8", marks=pytest.mark.slow)])  # NNCF calibration takes a while
def test_lower_precision_prints_its_cost(tiny_run_dir, tmp_path, capsys, precision):
    out = tmp_path / f"s_{precision}.xml"
    args = ["export", str(tiny_run_dir), "--format", "openvino", "--precision", precision, "--out", str(out)]
    ov = pytest.importorskip("openvino")
    if precision == "bf16" and "BF16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        # a CPU without bf16 (e.g. AMD EPYC before Zen 4): OpenVINO would quietly run f32; refused in one line
        assert main(args) == 2
        assert capsys.readouterr().err.strip() == "dcdgan export: error: OpenVINO on this CPU runs f32, not the requested bf16"
        return
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert re.search(rf"{precision} cost: PSNR \d+\.\d\d dB against fp32 on \d+ validation images", printed)
    assert out.is_file() and out.with_suffix(".bin").is_file()
    runner = load_runner(out, backend="openvino", precision=precision)
    assert runner.precision == precision
    if precision == "int8":
        assert "NNCF calibration on" in printed


def test_bad_requests_are_one_line(tiny_run_dir, tmp_path, capsys):
    assert main(["export", str(tiny_run_dir), "--format", "onnx", "--out", str(tmp_path / "s.xml")]) == 2
    assert capsys.readouterr().err.strip() == f"dcdgan export: error: {tmp_path / 's.xml'}: a onnx export must end in .onnx"
    assert main(["export", str(tiny_run_dir), "--format", "onnx", "--precision", "int8", "--out", str(tmp_path / "s.onnx")]) == 2
    assert "for int8 use --format openvino" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nothing"), "--format", "onnx", "--out", str(tmp_path / "s.onnx")]) == 2
    assert capsys.readouterr().err.strip() == f"dcdgan export: error: {tmp_path / 'nothing'}: model not found"


def test_missing_backend_names_the_extra(monkeypatch, tiny_run_dir):
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    with pytest.raises(UserError, match=r'^onnxruntime is not installed; pip install "dcdgan\[deploy\]"$'):
        load_runner(tiny_run_dir, backend="onnxruntime")
