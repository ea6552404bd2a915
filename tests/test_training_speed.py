"""CPU training speed options (issue 20, part 1): bf16 against fp32, torch.compile and its fallback, the one-pass
discriminator reads, and the benchmarks that measure them (train_speed.py --json, quality.py) on tiny budgets."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import dcdgan.distill as distill_module
from dcdgan.cli import main
from conftest import TINY_RUN

REPO = Path(__file__).resolve().parents[1]
QUICK = [*TINY_RUN, "train.max_steps=3", "eval.every=0", "eval.metric=l1"]


@pytest.fixture
def fresh_accelerate_state():
    """Accelerate keeps one process-wide state whose precision cannot change between runs of one process."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def run(tmp_path: Path, name: str, *overrides: str) -> Path:
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)  # each run sets its own precision
    run_dir = tmp_path / name
    assert main(["distill", "quickstart", *QUICK, *overrides, "--run-dir", str(run_dir), "--quiet"]) == 0
    return run_dir


def step_losses(run_dir: Path) -> list[dict[str, float]]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("step", "phase", "epoch", "lr")} for r in rows if "phase" in r]


# ---------------------------------------------------------------- bf16 on CPU


# bf16 keeps 8 significant bits (relative rounding 2^-9 = 0.2%); a loss read through ~30 layers of the teacher, the
# student and the discriminator accumulates a few percent at most. Terms that are means of signed values near zero
# (the hinge G_gan: minus the mean discriminator output) get that error relative to the values averaged, of size ~1,
# hence the absolute bound. The first step is the one both runs take from the same weights and batch; later steps
# start from weights the different roundings have already moved.
BF16_FIRST_STEP_REL = 0.05
BF16_FIRST_STEP_ABS = 0.01


def test_bf16_first_losses_match_fp32_and_stay_finite(tmp_path, offline, fresh_accelerate_state, monkeypatch, capsys):
    fp32 = step_losses(run(tmp_path, "fp32"))
    monkeypatch.setattr(distill_module, "native_cpu_bf16", lambda: False)  # this CPU, whatever the test machine has
    capsys.readouterr()
    bf16 = step_losses(run(tmp_path, "bf16", "train.mixed_precision=bf16"))
    assert "has no native bf16" in capsys.readouterr().out  # the one line that says emulated bf16 is slow here
    assert len(fp32) == len(bf16) == 3
    assert all(math.isfinite(v) for row in bf16 for v in row.values())
    assert fp32[0].keys() == bf16[0].keys()
    for term, value in fp32[0].items():
        assert bf16[0][term] == pytest.approx(value, rel=BF16_FIRST_STEP_REL, abs=BF16_FIRST_STEP_ABS), term
    # and bf16 really ran: some first-step term differs from fp32 beyond fp32 rounding
    assert any(abs(bf16[0][t] - v) > 1e-5 * max(abs(v), 1e-3) for t, v in fp32[0].items())


def test_no_bf16_notice_where_the_cpu_has_it(tmp_path, offline, fresh_accelerate_state, monkeypatch, capsys):
    monkeypatch.setattr(distill_module, "native_cpu_bf16", lambda: True)
    run(tmp_path, "bf16", "train.mixed_precision=bf16", "train.max_steps=1")
    assert "native bf16" not in capsys.readouterr().out


# ---------------------------------------------------------------- torch.compile


def test_compile_without_a_cpp_compiler_trains_eagerly_and_says_so(tmp_path, offline, monkeypatch, capsys):
    monkeypatch.setattr(distill_module.shutil, "which", lambda name: None)
    run_dir = run(tmp_path, "nocxx", "train.compile=true")
    out = capsys.readouterr().out
    assert "train.compile: no C++ compiler found" in out and "training eagerly" in out
    assert (run_dir / "student.safetensors").is_file() and len(step_losses(run_dir)) == 3


@pytest.mark.slow  # inductor compiles every network first: minutes on a small CPU
def test_compiled_training_matches_eager_losses(tmp_path, offline):
    eager = step_losses(run(tmp_path, "eager"))
    compiled = step_losses(run(tmp_path, "compiled", "train.compile=true"))
    for term, value in eager[0].items():  # fused kernels round differently: fp32 reordering, not a different loss
        assert compiled[0][term] == pytest.approx(value, rel=1e-3, abs=1e-5), term


# ---------------------------------------------------------------- the benchmarks, end to end on tiny budgets


def test_train_speed_json(tmp_path):
    cmd = [sys.executable, str(REPO / "benchmarks" / "train_speed.py"), "--recipe", "quickstart", "--methods", "none,dcd",
           "--steps", "2", "--warmup", "1", "--steps-per-round", "1", "--compare-steps", "2", "--threads", "1", "--json",
           *[o for o in TINY_RUN if not o.startswith(("eval.", "train."))], "perceptual.weights=none"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    assert set(result["ms_per_step"]) == {"none", "dcd"}
    for method in ("none", "dcd"):
        assert list(result["ms_per_step"][method]) == ["no/eager"]
        assert result["ms_per_step"][method]["no/eager"] > 0
        assert result["speedup"][method]["no/eager"] == 1.0
    assert any(line.startswith("| dcd | no/eager |") for line in lines)


def test_quality_benchmark_trains_scores_commits_and_rebuilds_its_table(tmp_path, tiny_inception):
    runs, results = tmp_path / "runs", tmp_path / "results"
    common = [sys.executable, str(REPO / "benchmarks" / "quality.py"), "quickstart", "--seeds", "1", "--budget", "2",
              "--methods", "teacher,none", "--val-points", "1", "--runs-dir", str(runs), "--results-dir", str(results)]
    overrides = [*TINY_RUN, f"eval.inception={tiny_inception}"]
    done = subprocess.run([*common, *overrides], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    for method in ("teacher", "none"):
        committed = json.loads((results / "quickstart" / "b2" / f"{method}_seed0.json").read_text())
        assert committed == json.loads((runs / "quickstart" / "b2" / method / "seed0" / "result.json").read_text())
        assert committed["method"] == method and committed["budget"] == 2 and math.isfinite(committed["fid"])
        assert [p["step"] for p in committed["val_curve"] if p["metric"] == "l1"] == [2]
        run = runs / "quickstart" / "b2" / method / "seed0"  # the wall time is the run's own clock (it survives kills), not the script's
        logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if "train_seconds" in line]
        assert [r["step"] for r in logged] == [2] and committed["train_s"] == logged[0]["train_seconds"] > 0
        assert not (run / "train_wall.json").exists()
    assert "teacher seed 0, validation l1 by step:" in done.stdout
    rebuilt = subprocess.run([*common, "--methods", "teacher,none,dcd", "--table-only"], capture_output=True, text=True, timeout=120)
    assert rebuilt.returncode == 0, rebuilt.stderr[-2000:]
    table = done.stdout[done.stdout.index("| method | seeds |"):].split("\n\n")[0]
    assert table.split("| train wall")[0] in rebuilt.stdout  # the same header
    for row in table.splitlines()[2:]:
        assert row in rebuilt.stdout
    assert "no result (unfinished or not run): dcd seed 0" in rebuilt.stdout

    # another machine: the run folders are gone, the committed results are not. Nothing is redone...
    shutil.rmtree(runs)
    again = subprocess.run([*common, *overrides], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert again.stdout.count("finished elsewhere") == 2 and not any((runs / "quickstart").iterdir())  # no run folder made
    for row in table.splitlines()[2:]:
        assert row in again.stdout
    # ...except a frozen teacher that a student still has to read: it trains again (its weights are not here), its
    # new result replaces the committed one, and the committed student trained alone is still not redone
    committed_teacher = results / "quickstart" / "b2" / "teacher_seed0.json"
    committed_teacher.write_text(committed_teacher.read_text().replace('"method": "teacher"', '"method": "teacher", "stale": true'))
    frozen = subprocess.run([*common, "--methods", "teacher,none,dcd", "--frozen-teacher", *overrides], capture_output=True,
                            text=True, timeout=600, cwd=tmp_path)
    assert frozen.returncode == 0, frozen.stdout[-2000:] + frozen.stderr[-2000:]
    assert "none seed 0: finished elsewhere" in frozen.stdout and "teacher seed 0: finished elsewhere" not in frozen.stdout
    assert (runs / "quickstart" / "b2" / "teacher" / "seed0" / "student.safetensors").is_file()
    assert not (runs / "quickstart" / "b2" / "none").exists()
    assert "stale" not in json.loads(committed_teacher.read_text())
    assert json.loads((results / "quickstart" / "b2" / "dcd_seed0.json").read_text())["method"] == "dcd"
    # with every student committed, the missing teacher weights stop nothing: the table is printed
    shutil.rmtree(runs)
    table_again = subprocess.run([*common, "--methods", "teacher,none,dcd", "--frozen-teacher", *overrides], capture_output=True,
                                 text=True, timeout=600, cwd=tmp_path)
    assert table_again.returncode == 0, table_again.stdout[-2000:] + table_again.stderr[-2000:]
    assert table_again.stdout.count("finished elsewhere") == 3 and "| dcd | 0 |" in table_again.stdout
    # but a new seed would be distilled from a teacher trained again, which differs from the one dcd seed 0 had:
    # the command stops before training anything, naming the missing weights and the students that read them
    shutil.rmtree(runs)
    more = subprocess.run([*common[:4], "2", *common[5:], "--methods", "teacher,none,dcd", "--frozen-teacher", *overrides],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert more.returncode != 0
    assert "teacher/seed0/student.safetensors is not on this machine, and dcd seed 0 were distilled from it" in more.stderr
    assert not any((runs / "quickstart").iterdir())


def test_cpu_runs_use_fused_adam_which_updates_as_the_for_loop_kernel_does():
    import torch

    from dcdgan.config import load_config

    cfg = load_config("quickstart", ["train.cpu=true"])
    torch.manual_seed(0)
    weights = [torch.randn(64, 32), torch.randn(32)]
    fused_params = [w.clone().requires_grad_() for w in weights]
    plain_params = [w.clone().requires_grad_() for w in weights]
    fused = distill_module.make_optimizer(fused_params, cfg.train)
    plain = torch.optim.Adam(plain_params, lr=cfg.train.lr, betas=(cfg.train.beta1, cfg.train.beta2))
    assert fused.param_groups[0]["fused"] is True and not plain.param_groups[0]["fused"]
    for step in range(5):
        grads = [torch.randn_like(w) * 10.0 ** -step for w in weights]  # shrinking gradients: Adam's normalisation at work
        for params, opt in ((fused_params, fused), (plain_params, plain)):
            for p, g in zip(params, grads):
                p.grad = g.clone()
            opt.step()
    # the same formula, another kernel: a few float32 ulps of the weights apart, where 5 steps move them by up to 5 lr = 1e-3
    assert all(torch.allclose(f, p, rtol=1e-6, atol=2e-6) for f, p in zip(fused_params, plain_params))
    assert all(not torch.equal(f, w) for f, w in zip(fused_params, weights))
