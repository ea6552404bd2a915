"""dcdgan bench: the documented JSON keys; --vs times two models and reports speedup and mac_ratio; precision pinned."""

from __future__ import annotations

import json

import pytest

from dcdgan.cli import main
from dcdgan.metrics.latency import parse_architecture
from dcdgan.metrics.profile import count_macs
from dcdgan.nets import build_generator

KEYS = {"model", "backend", "precision", "device", "size", "batch", "threads", "runs", "median_ms", "p90_ms", "min_ms", "params", "macs"}


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


def test_openvino_precision_is_pinned(capsys):
    result = bench_json(capsys, "mobile_resnet_9blocks:4", "--backend", "openvino", "--precision", "fp32")
    assert (result["backend"], result["precision"]) == ("openvino", "fp32")


def test_bench_errors_are_one_line(capsys):
    assert main(["bench", "mobile_resnet_9blocks:x"]) == 2
    assert "expected NAME or NAME:NGF" in capsys.readouterr().err
    assert main(["bench", "mobile_resnet_9blocks:4", "--precision", "int8"]) == 2
    assert capsys.readouterr().err.strip() == "dcdgan bench: error: int8 runs on --backend openvino (NNCF post-training quantization)"
    assert main(["bench", "mobile_resnet_9blocks:4", "--size", "30", "--runs", "1"]) == 2
    assert "--size must be a multiple of 4" in capsys.readouterr().err
