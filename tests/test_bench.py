"""dcdgan bench: the documented JSON keys; --vs times two models and reports speedup and mac_ratio; precision pinned."""

from __future__ import annotations

import json

import pytest

from dcdgan.cli import main
from dcdgan.metrics.latency import parse_architecture
from dcdgan.metrics.profile import count_macs
from dcdgan.nets import build_generator

KEYS = {"model", "backend", "runner", "precision", "device", "size", "batch", "threads", "runs", "median_ms", "p90_ms", "min_ms", "params", "macs"}


def bench_json(capsys, *args: str) -> dict:
    assert main(["bench", *args, "--size", "32", "--runs", "3", "--warmup", "1", "--threads", "1", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_bench_json_keys(capsys):
    result = bench_json(capsys, "mobile_resnet_9blocks:4")
    assert set(result) == KEYS
    assert (result["backend"], result["precision"], result["size"], result["batch"], result["runs"], result["threads"]) == ("torch", "fp32", 32, 1, 3, 1)
    assert 0 < result["min_ms"] <= result["median_ms"] <= result["p90_ms"]
    assert result["macs"] == count_macs(build_generator(parse_architecture("mobile_resnet_9blocks:4")), (1, 3, 32, 32))


def test_bench_vs_reports_speedup_and_mac_ratio(capsys):
    result = bench_json(capsys, "mobile_resnet_9blocks:4", "--vs", "resnet_9blocks:4", "--batch", "2")
    assert set(result) == KEYS | {"vs", "speedup", "mac_ratio"}
    assert set(result["vs"]) == KEYS and result["vs"]["model"] == "resnet_9blocks:4" and result["vs"]["batch"] == 2
    assert result["speedup"] == pytest.approx(result["vs"]["median_ms"] / result["median_ms"])
    assert result["mac_ratio"] == pytest.approx(result["vs"]["macs"] / result["macs"])
    assert result["vs"]["macs"] == count_macs(build_generator(parse_architecture("resnet_9blocks:4")), (1, 3, 32, 32))


def test_openvino_precision_is_pinned(capsys, monkeypatch):
    ov = pytest.importorskip("openvino")
    hints = []  # the precision hint every compile hands OpenVINO (the real compile still runs)
    real = ov.Core.compile_model

    def recording(self, model, device, config=None, *args, **kwargs):
        hints.append((config or {}).get("INFERENCE_PRECISION_HINT"))
        return real(self, model, device, config, *args, **kwargs)

    monkeypatch.setattr(ov.Core, "compile_model", recording)
    result = bench_json(capsys, "mobile_resnet_9blocks:4", "--backend", "openvino", "--precision", "fp32")
    assert (result["backend"], result["precision"]) == ("openvino", "fp32")
    # OpenVINO's own default on a CPU with bf16 is bf16: fp32 holds only because every compile asks for f32
    assert hints and set(hints) == {"f32"}
    hints.clear()
    # bf16 runs pinned where the CPU has it; where it does not, OpenVINO would quietly run f32: refused in one line
    if "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        assert bench_json(capsys, "mobile_resnet_9blocks:4", "--backend", "openvino", "--precision", "bf16")["precision"] == "bf16"
        assert set(hints) == {"bf16"}
    else:
        args = ["bench", "mobile_resnet_9blocks:4", "--backend", "openvino", "--precision", "bf16", "--size", "32", "--runs", "1", "--threads", "1"]
        assert main(args) == 2
        assert capsys.readouterr().err.strip() == "dcdgan bench: error: OpenVINO on this CPU runs f32, not the requested bf16"


def test_bench_errors_are_one_line(capsys):
    assert main(["bench", "mobile_resnet_9blocks:x"]) == 2
    assert "expected NAME or NAME:NGF" in capsys.readouterr().err
    assert main(["bench", "mobile_resnet_9blocks:4", "--precision", "int8"]) == 2
    assert capsys.readouterr().err.strip() == "dcdgan bench: error: int8 runs on --backend openvino (NNCF post-training quantization)"
    assert main(["bench", "mobile_resnet_9blocks:4", "--size", "30", "--runs", "1"]) == 2
    assert "--size must be a multiple of 4" in capsys.readouterr().err


def test_openvino_compiles_a_static_shape_for_a_shape_seen_twice(monkeypatch):
    pytest.importorskip("openvino")
    import numpy as np
    import torch

    from dcdgan import backends

    compiled = []  # the input shape of every compile: None while dynamic
    real = backends.openvino_compile

    def counting(model, precision, threads):
        shape = model.input(0).get_partial_shape()
        compiled.append(tuple(d.get_length() for d in shape) if shape.is_static else None)
        return real(model, precision, threads)

    monkeypatch.setattr(backends, "openvino_compile", counting)
    spec = parse_architecture("mobile_resnet_9blocks:4")
    torch.manual_seed(0)
    net = build_generator(spec).eval()
    runner = backends.runner_from_module(net, spec, "openvino", "fp32", "cpu", 1)
    shapes = [(1, 3, 8 + 4 * i, 12) for i in range(backends.OV_STATIC_SHAPES + 1)]
    rng = np.random.default_rng(0)
    inputs = {s: rng.uniform(-1, 1, s).astype(np.float32) for s in shapes}
    first = {s: runner(x) for s, x in inputs.items()}  # each shape once: the dynamic compile serves them all
    assert compiled == [None]
    for s, x in inputs.items():  # seen again: a static compile each, the oldest dropped beyond OV_STATIC_SHAPES
        assert np.abs(runner(x) - first[s]).max() <= 1e-6 and runner(x).shape == s
        with torch.no_grad():
            assert np.abs(runner(x) - net(torch.from_numpy(x)).numpy()).max() <= 1e-5
    assert compiled == [None, *shapes]
    runner(inputs[shapes[-1]])  # still held: no compile
    runner(inputs[shapes[0]])  # dropped: compiled again
    assert compiled == [None, *shapes, shapes[0]]
