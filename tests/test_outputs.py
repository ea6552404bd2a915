"""What a run leaves for people to read: the numbers in TensorBoard's scalars and in report.html."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import TINY_RUN

from dcdgan.checkpoint import load_checkpoint
from dcdgan.cli import main
from dcdgan.weights import load_generator


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """3 steps of paired DCD, validated every step, then `dcdgan eval --no-fid` (which rewrites report.html)."""
    run_dir = tmp_path_factory.mktemp("outputs") / "run"
    assert main(["distill", "quickstart", *TINY_RUN, "train.max_steps=3", "eval.every=1", "--run-dir", str(run_dir), "--quiet"]) == 0
    assert main(["eval", str(run_dir), "--no-fid", "--max-images", "6", "--json"]) == 0
    return run_dir


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_tensorboard_scalars_are_the_logged_numbers(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars: dict[str, list[tuple[int, float]]] = {}
    for events in run.glob("tb/**/events.out.tfevents.*"):
        acc = EventAccumulator(str(events))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    logged = records(run)
    train = [r for r in logged if "phase" in r]
    assert {"train/D", "train/G_gan", "train/G_L1", "train/S_dcd", "val/l1"} <= set(scalars)
    for key in ("D", "G_gan", "G_L1", "S_dcd"):
        assert sorted(scalars[f"train/{key}"]) == [(r["step"], pytest.approx(r[key], rel=1e-6)) for r in train], key
    val = [(r["step"], pytest.approx(r["val/l1"], rel=1e-6)) for r in logged if "val/l1" in r]
    assert sorted(scalars["val/l1"]) == val and [s for s, _ in val] == [1, 2, 3]


def table(html: str) -> list[list[str]]:
    return [re.findall(r"<t[hd]>(.*?)</t[hd]>", row) for row in re.findall(r"<tr>(.*?)</tr>", html)]


def test_report_shows_the_evaluated_numbers(run):
    metrics = json.loads((run / "metrics.json").read_text())
    html = (run / "report.html").read_text()
    header, *rows = table(html)
    assert header == ["model", "step", "params", "MACs", "PSNR", "SSIM"]
    chosen = {"best on validation": "best on val", "last": "last"}[metrics["models"]["teacher"]["chosen"]]  # teacher.json's word
    labels = {"teacher": f"teacher ({chosen})", "student_last": "student (last)", "student_best": "student (best on val)"}
    best_step = load_checkpoint(run / "checkpoints" / "best.ckpt")["step"]
    expected_models = ["teacher", "student_last"] + (["student_best"] if best_step != 3 else [])
    assert [r[0] for r in rows] == [labels[m] for m in expected_models]
    for row in rows:
        name = next(k for k, v in labels.items() if v == row[0])
        m = metrics["models"][name]
        assert row[1:] == [str(m["step"]), f"{m['params'] / 1e6:.3f}M", f"{m['macs'] / 1e9:.3f}G", f"{m['psnr']:.2f}", f"{m['ssim']:.3f}"]
    # the parameter counts are those of the saved generators
    student, _ = load_generator(run / "student.safetensors")
    teacher, _ = load_generator(run / "teacher.safetensors")
    assert rows[1][2] == f"{sum(p.numel() for p in student.parameters()) / 1e6:.3f}M"
    assert rows[0][2] == f"{sum(p.numel() for p in teacher.parameters()) / 1e6:.3f}M"
    assert f"best step {best_step}, last step 3" in html
    assert "Final evaluation: test split, 6 images at 32px" in html
    scores = [r["val/l1"] for r in records(run) if "val/l1" in r]
    assert best_step == 1 + min(range(3), key=lambda i: scores[i])  # best.ckpt is the lowest validation score
