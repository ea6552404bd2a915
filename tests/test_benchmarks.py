"""The user-facing benchmarks (latency, precision, scan, quickstart) run end to end on a tiny budget, as a user
runs them (``python benchmarks/X.py ...`` in a new process), and print the tables their docstrings promise.

Speed numbers are never asserted (claims live in benchmarks/RESULTS.md); what is asserted is that each script
runs, and the numbers that do not depend on the machine: sizes, MAC ratios, image counts, rows and columns, and
that the table agrees with the JSON or run files the script writes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from deploy_run import TINY_RUN

from dcdgan.metrics.latency import parse_architecture
from dcdgan.metrics.profile import count_macs
from dcdgan.nets import build_generator


def run_benchmark(script: str, *args: str, cwd: Path) -> str:
    """stdout of ``python benchmarks/SCRIPT ARGS``; the test fails with the script's stderr when it exits non-zero."""
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args], cwd=cwd, env=dict(os.environ),
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{script} exited {done.returncode}:\n{done.stderr[-3000:]}"
    return done.stdout


def table(out: str) -> tuple[list[str], dict[str, list[str]]]:
    """The first Markdown table in ``out``: its header cells and {first cell: the other cells} per row."""
    lines = [line for line in out.splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    assert len(cells) >= 3 and set(cells[1][0]) == {"-"}, out
    return cells[0], {row[0]: row[1:] for row in cells[2:]}


def test_scan_benchmark(tmp_path):
    out = run_benchmark("scan.py", "--images", "12", "--size", "16", "--repeats", "2", cwd=tmp_path)
    assert out.startswith(f"12 images of 16x16 (JPEG), {os.cpu_count()} cores, median of 2\n")
    head, rows = table(out)
    assert head == ["setup", "median (s)", "min (s)", "max (s)", "images/s", "speed-up vs serial"]
    assert list(rows) == ["serial", "threads", "cached"]  # each asserted inside the script to find all 12 images
    assert rows["serial"][-1] == "1.0x"
    for median, low, high, rate, ratio in rows.values():
        assert float(low) <= float(median) <= float(high)
        assert float(rate.replace(",", "")) > 0 and ratio.endswith("x")


def test_latency_benchmark(tmp_path):
    student, reference = "mobile_resnet_9blocks:4", "resnet_9blocks:8"
    args = ["--student", student, "--reference", reference, "--backends", "torch", "--size", "16", "--runs", "2",
            "--warmup", "1", "--threads", "1", "--json", str(tmp_path / "latency.json")]
    out = run_benchmark("latency.py", *args, cwd=tmp_path)
    macs = {name: count_macs(build_generator(parse_architecture(name)), (1, 3, 16, 16)) for name in (student, reference)}
    ratio = macs[reference] / macs[student]
    head, rows = table(out)
    assert head == ["backend", "precision", "student ms", f"{reference} ms", "realized speedup", "MAC ratio"]
    assert list(rows) == ["PyTorch eager"]
    precision, student_ms, reference_ms, speedup, mac_ratio = rows["PyTorch eager"]
    assert precision == "fp32" and mac_ratio == f"{ratio:.1f}x"
    [result] = json.loads((tmp_path / "latency.json").read_text())
    assert (result["backend"], result["precision"], result["size"], result["runs"], result["threads"]) == ("torch", "fp32", 16, 2, 1)
    assert (result["macs"], result["vs"]["macs"]) == (macs[student], macs[reference])
    assert result["speedup"] == pytest.approx(result["vs"]["median_ms"] / result["median_ms"])
    assert student_ms.startswith(f"{result['median_ms']:.1f} (") and speedup == f"{result['speedup']:.1f}x"


@pytest.mark.slow  # three ONNX exports, an NNCF calibration and four Inception passes: about a minute of CPU
def test_precision_benchmark(tiny_run_dir, tiny_inception, tmp_path):
    ov = pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    out = run_benchmark("precision.py", str(tiny_run_dir), "--size", "16", "--runs", "2", "--warmup", "1", "--threads", "1",
                        "--inception", str(tiny_inception), cwd=tmp_path)
    head, rows = table(out)
    assert head == ["model", "FID", "KID x1e3", "PSNR", "SSIM", "PSNR vs PyTorch fp32 (dB, float outputs, pooled MSE)", "median ms", "p90 ms",
                    "speed vs OpenVINO fp32"]
    bf16 = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    assert list(rows) == ["torch fp32", "openvino fp32", *(["openvino bf16"] if bf16 else []), "openvino int8"]
    if not bf16:  # said, not run as f32 under a bf16 label
        assert "openvino bf16: left out: OpenVINO on this CPU runs f32, not the requested bf16" in out
    assert rows["torch fp32"][4] == "inf" and rows["openvino fp32"][-1] == "1.00x"
    assert float(rows["openvino fp32"][4]) > 100  # the same graph in fp32: differences at round-off level
    assert f"run {tiny_run_dir} (mobile_resnet_9blocks ngf 4), test split: " in out


def test_quickstart_benchmark(tiny_inception, tmp_path):
    overrides = [o for o in TINY_RUN if not o.startswith("eval.final")] + [f"eval.inception={tiny_inception}", "eval.batch_size=8"]
    out = run_benchmark("quickstart.py", "--runs-dir", str(tmp_path / "runs"), *overrides, cwd=tmp_path)
    metrics = json.loads((tmp_path / "runs" / "novgg" / "metrics.json").read_text())
    head, _ = table(out)
    assert head == ["setup", "wall (s)", "model", "params", "MACs (G)", "FID", "KID x1e3", "PSNR", "SSIM"]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines() if line.startswith("| novgg |")]
    assert [row[2] for row in rows] == list(metrics["models"]) and len(rows) >= 2  # the teacher and the student(s)
    for row, (name, model) in zip(rows, metrics["models"].items()):  # the table prints the run's own metrics.json
        assert row[3] == f"{model['params']:,}" and row[5] == f"{model['fid']:.2f}", name
        assert row[7] == f"{model['psnr']:.2f}" and row[8] == f"{model['ssim']:.3f}", name


def test_device_step_rate_probe(tmp_path):
    # the GPU probe that sizes a lent device's step budget must import and time on any machine (it once lost its helper)
    overrides = [o for o in TINY_RUN if not o.startswith(("train.nepochs", "train.max_steps"))]
    out = run_benchmark("device/step_rate.py", "quickstart", "--method", "dcd", "--warmup", "1", "--steps", "2", *overrides, cwd=tmp_path)
    line = json.loads(out.strip().splitlines()[-1])
    assert line["method"] == "dcd" and line["seed"] == 0
    assert line["median_ms"] > 0 and abs(line["steps_per_s"] * line["median_ms"] - 1e3) < 1e-6


def test_quality_table_from_result_files_with_a_frozen_teacher(tmp_path):
    # --table-only rebuilds a table from committed JSONs: the teacher's lives under its own budget, and the students
    # are compared with `none` seed by seed (the numbers are made up; only the arithmetic and layout are checked)
    results = tmp_path / "results" / "task"
    common = {"task": "task", "budget": 30, "train_s": 10.0, "selected_step": 30, "val_metric": "l1", "val_score": 0.5, "psnr": 12.0,
              "ssim": 0.1, "params": 1000, "macs": 2e6, "val_curve": []}
    scores = {("teacher", 0): (200.0, 0.150), ("none", 0): (300.0, 0.300), ("none", 1): (310.0, 0.320),
              ("dcd", 0): (290.0, 0.250), ("dcd", 1): (314.0, 0.300)}
    for (method, seed), (fid, kid) in scores.items():
        folder = results / ("b80" if method == "teacher" else "b30")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{method}_seed{seed}.json").write_text(json.dumps({**common, "method": method, "seed": seed, "fid": fid, "kid_mean": kid}))
    out = run_benchmark("quality.py", "quickstart", "--table-only", "--seeds", "2", "--budget", "30", "--teacher-budget", "80", "--frozen-teacher",
                        "--methods", "teacher,none,dcd", "--results-dir", str(tmp_path / "results"), "--name", "task", cwd=tmp_path)
    summary = out.split("\n\n")[1]  # the first table: one row per method
    _, rows = table(summary)
    assert rows["teacher"][0] == "0" and rows["teacher"][3] == "200.00"  # one teacher, found under b80
    assert rows["none"][3] == "305.00 ± 7.07" and rows["dcd"][3] == "302.00 ± 16.97"
    assert "| dcd | -10.00 / +4.00 | -3.00 ± 9.90 | -50.00 / -20.00 | -35.00 ± 21.21 | 1 of 2 |" in out.splitlines()
    assert "no result" not in out
