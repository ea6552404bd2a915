"""Quality benchmark: does the DCD student beat OMGD, the no-distillation baseline and its own teacher?

For one task (a recipe), every method below trains under the same step budget and the same seeds, through
the real ``dcdgan distill`` command (one run directory per (task, method, seed)):

- ``teacher``: the teacher generator trained alone with the task's losses (method=none at the teacher's size);
- ``none``:    the student trained alone with the task's losses (the no-distillation baseline);
- ``omgd``:    the student distilled with the recipe's student objective, without the DCD loss (the reference's:
  VGG style/feature losses; a recipe whose student has a discriminator of its own, as the paper recipes and the
  quickstart, keeps it: ``distill.student_gan_weight=0`` on the command line gives the paper's objective);
- ``dcd``:     omgd + the DCD loss;
- ``dcd_gan``: dcd + a direct adversarial term on the student through the teacher's discriminator
  (``distill.student_gan_weight``, ``distill.student_gan_disc=teacher``);
- ``dcd_own``: dcd + that term read by a discriminator of the student's own, trained on the student's outputs
  (``distill.student_gan_disc=own``); ``omgd_own``: the same without the DCD loss. Not in the default
  ``--methods``: the issue's five are.

Model selection uses the validation split only (``best.ckpt``, chosen every ``budget / val_points`` steps);
the selected generator is then scored once on the held-out TEST split: FID and KID (TF-2015 Inception) against
the test targets, PSNR/SSIM when the data is paired, and for CycleGAN tasks also FID against the real
train+test target images (the CycleGAN papers' protocol, labelled as such). The table gives mean +- std over
seeds, with params, MACs and the training wall time of each run.

Resumable: a finished run leaves ``result.json`` and is never redone; a run killed during training continues
from its last checkpoint (``dcdgan distill --resume``); a trained but unscored run is only scored. A run whose
committed result (below) exists is not redone either, even where its run folder is gone (another machine): delete
that JSON to redo it. The one exception is the ``--frozen-teacher`` teacher while a student still has to train
from it and its weights are not on this machine: it trains again, and its new result replaces the committed one,
but only while no committed student was distilled from it (a teacher trained again differs, so the command stops
and says so rather than mix two teachers' students in one table).

    python benchmarks/quality.py quickstart --seeds 3 --budget 300
    python benchmarks/quality.py horse2zebra_128 --seeds 1 --budget 400 data.root=data/horse2zebra-128 data.crop_size=64

Every finished run's result is also copied, as a small JSON, to ``--results-dir`` (default ``benchmarks/results``,
committed), under ``<name>/b<budget>/<method>_seed<N>.json``: ``--table-only`` rebuilds the table from those
files alone, on any machine. Runs started but not finished are listed as unfinished (with their step), never
scored. Each run's validation curve (``val/<metric>`` by step, from its metrics.jsonl) goes into its result, and
the table prints it for the teacher.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from dcdgan.checkpoint import load_checkpoint
from dcdgan.config import Config, apply_overrides, load_config
from dcdgan.data import DataRoot
from dcdgan.evaluate import batches, image_features, score_generator, size_of
from dcdgan.metrics.fid import ReferenceStats, load_stats, save_stats
from dcdgan.tasks import TASKS
from dcdgan.metrics.inception import load_inception
from dcdgan.runs import last_checkpoint
from dcdgan.weights import load_generator

METHODS = ("teacher", "none", "omgd", "dcd", "dcd_gan", "omgd_own", "dcd_own")
DEFAULT_METHODS = METHODS[:5]


def method_overrides(method: str, cfg: Config, gan_weight: float) -> list[str]:
    """Config overrides that turn the task recipe into one benchmarked method."""
    m = cfg.model
    if method == "teacher":  # the task networks alone, at the teacher's size
        return ["distill.method=none", f"model.student_netG={m.teacher_netG}", f"model.student_ngf={m.teacher_ngf}"]
    if method == "dcd_gan":
        return ["distill.method=dcd", f"distill.student_gan_weight={gan_weight}", "distill.student_gan_disc=teacher"]
    if method in ("omgd_own", "dcd_own"):
        return [f"distill.method={method.removesuffix('_own')}", f"distill.student_gan_weight={gan_weight}", "distill.student_gan_disc=own"]
    return [f"distill.method={method}"]


def budget_overrides(cfg: Config, budget: int, val_points: int, val_metric: str) -> list[str]:
    """Same step budget for every method: enough epochs at a constant rate, cut at ``budget`` steps, validated val_points times."""
    metric = val_metric if val_metric != "auto" else ("l1" if cfg.data.mode == "paired" else "fid")
    if budget == 0:  # the recipe's own schedule (the paper's, for the full-size recipes)
        return [f"eval.metric={metric}", "eval.final=false"]
    steps_per_epoch = math.ceil(len(DataRoot(cfg.data).train_dataset()) / cfg.train.batch_size)
    every = max(1, budget // val_points)
    return [
        f"train.nepochs={math.ceil(budget / steps_per_epoch)}",
        "train.nepochs_decay=0",
        f"train.max_steps={budget}",
        f"eval.every={every}",
        f"eval.metric={metric}",
        "eval.max_images=0",
        "eval.final=false",  # scored below, once, on the model chosen on validation
        f"train.checkpoint_every={every}",
        f"train.sample_every={budget}",
        f"train.log_every={max(1, budget // 10)}",
    ]


def reference(cache: Path, data: DataRoot, splits: list[str], inception, batch_size: int) -> ReferenceStats:
    """FID/KID statistics of the target images of ``splits`` at the evaluation size, cached in ``cache``."""
    if cache.is_file():
        return load_stats(cache)
    feats = [image_features(inception, batches(data.eval_targets(s), batch_size), quiet_bar=True) for s in splits]
    stats = ReferenceStats.from_features(np.concatenate(feats))
    save_stats(cache, stats)
    return stats


class Bench:
    """One task: its config, run folders, reference statistics and the runs' results."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.cfg = load_config(args.task, args.overrides)
        self.root = args.runs_dir / (args.name or args.task)
        self.root.mkdir(parents=True, exist_ok=True)
        self.data = DataRoot(self.cfg.data)
        self._inception = None
        self._refs: dict[str, ReferenceStats] = {}
        self._lock = threading.Lock()  # --jobs threads score at once: load Inception and each reference once

    def budget(self, method: str) -> int:
        """Steps of one method's runs: --teacher-budget for the teacher when given, else --budget."""
        return self.args.teacher_budget if method == "teacher" and self.args.teacher_budget else self.args.budget

    def run_dir(self, method: str, seed: int) -> Path:
        """Where one (method, seed) run lives: <runs-dir>/<task>/b<budget>/<method>/seed<N>."""
        return self.root / f"b{self.budget(method)}" / method / f"seed{seed}"

    def frozen_teacher(self) -> Path:
        """--frozen-teacher: the teacher run's delivered generator (seed 0, chosen on validation), which every student distils from."""
        return self.run_dir("teacher", 0) / "student.safetensors"

    def overrides(self, method: str, seed: int) -> list[str]:
        """Everything the run's command line sets on top of the recipe."""
        a = self.args
        frozen = [f"model.teacher_weights={self.frozen_teacher()}"] if a.frozen_teacher and method not in ("teacher", "none") else []
        return [*a.overrides, *budget_overrides(self.cfg, self.budget(method), a.val_points, a.val_metric), *frozen,
                *method_overrides(method, self.cfg, a.gan_weight), f"train.seed={seed}", f"train.cpu={str(a.device == 'cpu').lower()}"]

    def train(self, method: str, seed: int) -> float:
        """Train (or continue) one run with the real CLI; returns the wall seconds spent now."""
        run = self.run_dir(method, seed)
        if (run / "student.safetensors").is_file():
            return 0.0
        run.parent.mkdir(parents=True, exist_ok=True)
        if last_checkpoint(run).is_file():
            cmd = ["distill", "--resume", str(run)]
        else:
            cmd = ["distill", self.args.task, *self.overrides(method, seed), "--run-dir", str(run)]
        env = dict(os.environ, OMP_NUM_THREADS=str(self.args.threads), MKL_NUM_THREADS=str(self.args.threads))
        start = time.perf_counter()
        with open(run.parent / f"seed{seed}.log", "a") as log:
            log.write(f"$ dcdgan {' '.join(cmd)}\n")
            log.flush()
            done = subprocess.run([sys.executable, "-m", "dcdgan", *cmd, "--quiet"], env=env, stdout=log, stderr=subprocess.STDOUT)
        if done.returncode != 0:
            raise RuntimeError(f"{run}: dcdgan distill exited with {done.returncode}; see {run.parent / f'seed{seed}.log'}")
        return time.perf_counter() - start

    @property
    def inception(self):
        with self._lock:
            if self._inception is None:
                self._inception = load_inception(self.cfg.eval.inception).to(self.args.device)
            return self._inception

    def ref(self, kind: str) -> ReferenceStats:
        """test: the test split's targets; train+test: the real train and test targets (CycleGAN papers' protocol)."""
        inception = self.inception
        with self._lock:
            if kind not in self._refs:
                c = self.cfg.data
                splits = [c.test_split] if kind == "test" else [c.train_split, c.test_split]
                name = f"fid_ref_{kind.replace('+', '_')}_{c.crop_size}px.npz"
                self._refs[kind] = reference(self.root / name, self.data, splits, inception, self.cfg.eval.batch_size)
            return self._refs[kind]

    def score(self, method: str, seed: int) -> dict:
        """Test scores of the generator chosen on validation (best.ckpt, else the last one)."""
        run = self.run_dir(method, seed)
        gen, described = load_generator(run / "student.safetensors")  # the deliverable: best on validation, or the last
        gen = gen.to(self.args.device).eval()
        c = self.cfg.data
        test = self.data.eval_dataset(c.test_split) if c.mode == "paired" else self.data.eval_inputs(c.test_split)
        start = time.perf_counter()
        n = self.args.max_test
        device = torch.device(self.args.device)
        scores = score_generator(gen, test, device, self.cfg.eval.batch_size, n, self.inception, self.ref("test"), quiet_bar=True)
        if TASKS[self.cfg.task].fid_vs_train_test:
            train_test = score_generator(gen, test, device, self.cfg.eval.batch_size, n, self.inception, self.ref("train+test"), quiet_bar=True)
            scores["fid_train_test"] = train_test["fid"]
        selection = described.get("selection") or {}
        return {
            "selected": described["chosen"],
            "selected_step": described["step"],
            "val_metric": selection.get("metric"),
            "val_score": selection.get("score"),
            **scores,
            **size_of(gen, c.input_nc, c.crop_size),
            "eval_s": time.perf_counter() - start,
        }

    def results_file(self, method: str, seed: int) -> Path:
        """The committed copy of one run's result: <results-dir>/<name>/b<budget>/<method>_seed<N>.json."""
        return self.args.results_dir / (self.args.name or Path(self.args.task).stem) / f"b{self.budget(method)}" / f"{method}_seed{seed}.json"

    def unfinished(self, units: list[tuple[str, int]]) -> list[str]:
        """'method seed N: step S of B' for every run that has started (a checkpoint exists) but has no result."""
        lines = []
        for method, seed in units:
            run = self.run_dir(method, seed)
            if (run / "result.json").is_file() or not last_checkpoint(run).is_file():
                continue
            step = int(load_checkpoint(last_checkpoint(run))["step"])
            lines.append(f"{method} seed {seed}: step {step} of {self.budget(method)}")
        return lines

    def finished(self, method: str, seed: int) -> bool:
        """Whether the run has a scored result, here (its run folder) or committed (--results-dir)."""
        return (self.run_dir(method, seed) / "result.json").is_file() or self.results_file(method, seed).is_file()

    def result(self, method: str, seed: int, need_weights: bool = False) -> dict | None:
        """The finished result of one run, training and scoring it first when needed (None: another process has it).

        ``need_weights``: a committed result alone does not do, the run's generator must be on this machine.
        """
        done = self.run_dir(method, seed) / "result.json"
        committed = self.results_file(method, seed)
        if not done.is_file() and committed.is_file() and not need_weights:
            print(f"{method} seed {seed}: finished elsewhere, its result is {committed} (delete it to redo the run)", flush=True)
            return json.loads(committed.read_text())
        if done.is_file():
            out = json.loads(done.read_text())
            out["val_curve"] = out.get("val_curve") or val_curve(self.run_dir(method, seed))  # results from before the curves
            if not self.results_file(method, seed).is_file():  # a result from before the committed copies existed
                write_json(self.results_file(method, seed), out)
            return out
        if not claim(self.run_dir(method, seed)):
            return None
        trained_s = self.train(method, seed)
        total = run_train_seconds(self.run_dir(method, seed))  # the run's own clock, over every session, killed ones too
        if total is None:  # a run trained by code from before that clock: the sessions this script saw end
            previous = self.run_dir(method, seed) / "train_wall.json"
            total = trained_s + (json.loads(previous.read_text())["train_s"] if previous.is_file() else 0.0)
            previous.write_text(json.dumps({"train_s": total}))
        trained = {"task": self.args.task, "method": method, "seed": seed, "budget": self.budget(method), "train_s": total,
                   "val_curve": val_curve(self.run_dir(method, seed))}
        if self.args.train_only:  # scored later, where the Inception file is (a lent GPU may not carry it)
            write_json(self.results_file(method, seed).with_suffix(".trained.json"), trained)
            return trained
        out = {**trained, **self.score(method, seed)}
        for path in (done, self.results_file(method, seed)):
            write_json(path, out)  # the done marker appears only complete
        return out


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` as indented JSON through a temporary file, so the file appears only complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def run_train_seconds(run: Path) -> float | None:
    """The training seconds a finished run logged last (metrics.jsonl), or None when its code did not log them."""
    log = run / "metrics.jsonl"
    rows = [json.loads(line) for line in log.read_text().splitlines() if '"train_seconds"' in line] if log.is_file() else []
    return float(rows[-1]["train_seconds"]) if rows else None


def val_curve(run: Path) -> list[dict]:
    """[{step, metric, score}] of every validation of a run (its metrics.jsonl), the teacher's among them when scored."""
    log = run / "metrics.jsonl"
    if not log.is_file():
        return []
    curve = []
    for line in log.read_text().splitlines():
        row = json.loads(line)
        curve += [{"step": row["step"], "metric": k.removeprefix("val/"), "score": v} for k, v in row.items() if k.startswith("val/")]
    return curve


def signed_mean_std(values: list[float]) -> str:
    """'+mean +- std' of differences (std over seeds, n-1), or the single value."""
    if len(values) == 1:
        return f"{values[0]:+.2f}"
    return f"{statistics.mean(values):+.2f} ± {statistics.stdev(values):.2f}"


def versus_none(results: list[dict]) -> str:
    """Markdown: each student's FID and KID minus the `none` student's of the same seed (negative: better than training
    alone), per seed and as mean +- std, with the seeds it wins; empty without `none` results."""
    none = {r["seed"]: r for r in results if r["method"] == "none"}
    lines = []
    for method in METHODS:
        rows = [r for r in results if r["method"] == method and r["seed"] in none and method not in ("none", "teacher")]
        if not rows:
            continue
        fid = [r["fid"] - none[r["seed"]]["fid"] for r in rows]
        kid = [(r["kid_mean"] - none[r["seed"]]["kid_mean"]) * 1e3 for r in rows]
        lines.append(f"| {method} | {' / '.join(f'{d:+.2f}' for d in fid)} | {signed_mean_std(fid)} | "
                     f"{' / '.join(f'{d:+.2f}' for d in kid)} | {signed_mean_std(kid)} | {sum(d < 0 for d in fid)} of {len(rows)} |")
    if not lines:
        return ""
    head = "| method | FID - none, per seed | mean | KID x1e3 - none, per seed | mean | seeds with a lower FID |"
    return "\nagainst the student trained alone (same seed):\n\n" + "\n".join([head, "|" + "---|" * 6, *lines]) + "\n"


def curve_table(results: list[dict]) -> str:
    """Markdown: the validation curve of every teacher run (what 'trained long enough' rests on)."""
    lines = []
    for r in sorted((r for r in results if r["method"] == "teacher" and r.get("val_curve")), key=lambda r: r["seed"]):
        points = [p for p in r["val_curve"] if not p["metric"].startswith("teacher_")]
        lines += [f"teacher seed {r['seed']}, validation {points[0]['metric'] if points else '-'} by step:", "",
                  "| step | " + " | ".join(str(p["step"]) for p in points) + " |", "|---|" + "---|" * len(points),
                  "| score | " + " | ".join(f"{p['score']:.4g}" for p in points) + " |", ""]
    return "\n".join(lines)


def claim(run: Path) -> bool:
    """Take a run for this process (several benchmark processes may share a folder); a dead owner's claim expires."""
    run.parent.mkdir(parents=True, exist_ok=True)
    lock = run.parent / f"{run.name}.lock"
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        try:
            os.kill(int(lock.read_text() or 0), 0)
            return False  # its owner is alive
        except (ProcessLookupError, ValueError):
            lock.write_text(str(os.getpid()))
            return True
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    return True


def machine(device: str) -> str:
    """The hardware the table ran on, in words."""
    cpus = f"{os.cpu_count()} CPUs"
    return f"{torch.cuda.get_device_name()} + {cpus}" if device == "cuda" else cpus


def mean_std(values: list[float], fmt: str) -> str:
    """'mean +- std' (std over seeds, n-1), or the single value."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(statistics.mean(values))} ± {fmt.format(statistics.stdev(values))}"


def table(results: list[dict], cyclegan: bool) -> str:
    """Markdown: one row per method, mean +- std over its seeds."""
    cols = [("FID", "fid", "{:.2f}", 1), ("KID x1e3", "kid_mean", "{:.2f}", 1e3)]
    if any(r.get("psnr") is not None for r in results):
        cols += [("PSNR", "psnr", "{:.2f}", 1), ("SSIM", "ssim", "{:.3f}", 1)]
    if cyclegan:
        cols.append(("FID vs train+test (papers' protocol)", "fid_train_test", "{:.2f}", 1))
    head = ["method", "seeds", "params", "MACs (G)", *[c[0] for c in cols], "train wall (s)", "selected step(s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method in METHODS:
        rows = [r for r in results if r["method"] == method]
        if not rows:
            continue
        cells = [method, ",".join(str(r["seed"]) for r in rows), f"{rows[0]['params']:,}", f"{rows[0]['macs'] / 1e9:.4f}"]
        cells += [mean_std([r.get(key) * scale if r.get(key) is not None else None for r in rows], fmt) for _, key, fmt, scale in cols]
        cells += [mean_std([r["train_s"] for r in rows], "{:.0f}"), ",".join(str(r["selected_step"]) for r in rows)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_run(results: list[dict]) -> str:
    """Markdown: every run on its own line."""
    lines = ["| method | seed | FID | KID x1e3 | PSNR | FID train+test | val metric | val score | step | train (s) |", "|" + "---|" * 10]
    fmt = lambda v, f="{:.2f}": "-" if v is None else f.format(v)  # noqa: E731
    for r in sorted(results, key=lambda r: (METHODS.index(r["method"]), r["seed"])):
        lines.append(f"| {r['method']} | {r['seed']} | {fmt(r.get('fid'))} | {fmt(r.get('kid_mean') and r['kid_mean'] * 1e3)} | "
                     f"{fmt(r.get('psnr'))} | {fmt(r.get('fid_train_test'))} | {r['val_metric'] or '-'} | {fmt(r['val_score'], '{:.4g}')} | "
                     f"{r['selected_step']} | {r['train_s']:.0f} |")
    return "\n".join(lines)


def make_parser() -> argparse.ArgumentParser:
    """The command line (device/step_rate.py parses its runs' settings with it too, so they stay the benchmark's)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", help="a recipe name or YAML file (quickstart, quickstart_unpaired, horse2zebra_128, ...)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0 .. N-1")
    parser.add_argument("--budget", type=int, required=True, help="training steps of every run (0 = the recipe's full schedule)")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS), help=f"comma-separated subset of {', '.join(METHODS)}")
    parser.add_argument("--gan-weight", type=float, default=1.0, help="distill.student_gan_weight of the dcd_gan, omgd_own and dcd_own methods")
    parser.add_argument("--val-points", type=int, default=3, help="validations per run (model selection)")
    parser.add_argument("--val-metric", default="auto", choices=("auto", "l1", "fid"), help="auto: l1 to the target when paired, fid when unpaired")
    parser.add_argument("--max-test", type=int, default=0, help="score this many test inputs, spread over the split (0 = all; the reference always uses all)")
    parser.add_argument("--runs-dir", type=Path, default=Path("bench-runs/quality"))
    parser.add_argument("--name", default="", help="folder under --runs-dir (default: the task name)")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at the same time")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                        help="train and score on this device (cuda: every run on the visible GPU; --jobs runs share it)")
    parser.add_argument("--results-dir", type=Path, default=Path(__file__).parent / "results",
                        help="where each finished run's result JSON is copied (committed; default benchmarks/results)")
    parser.add_argument("--table-only", action="store_true", help="print the table from --results-dir alone: train and score nothing")
    parser.add_argument("--teacher-budget", type=int, default=0, help="steps of the teacher runs (default: --budget)")
    parser.add_argument("--frozen-teacher", action="store_true",
                        help="train the teacher (seed 0) first, alone, then distil every student from it, frozen (model.teacher_weights)")
    parser.add_argument("--train-only", action="store_true", help="train, write <method>_seed<N>.trained.json, score nothing (rerun without it to score)")
    parser.add_argument("overrides", nargs="*", help="key=value applied to every run (e.g. data.root=..., data.crop_size=64)")
    return parser


def main() -> None:
    parser = make_parser()
    args = parser.parse_intermixed_args()  # options may come after the overrides, as in the examples above
    torch.set_num_threads(args.threads)
    if args.device == "cuda":  # test scores in plain fp32, as on CPU (cuDNN convolutions default to TF32)
        torch.backends.cudnn.allow_tf32 = False
    methods = [m for m in args.methods.split(",") if m]
    unknown = set(methods) - set(METHODS)
    if unknown:
        parser.error(f"unknown methods {', '.join(sorted(unknown))}; choose from {', '.join(METHODS)}")
    units = [(m, s) for s in range(args.seeds) for m in methods]
    if args.table_only:
        print_table_only(args, units)
        return
    bench = Bench(args)
    apply_overrides(bench.cfg, bench.overrides("dcd", 0))  # fail on a bad override before anything trains
    started = time.time()
    results: list[dict] = []
    errors: list[str] = []
    busy: list[tuple[str, int]] = []

    def work(unit: tuple[str, int], need_weights: bool = False) -> None:
        try:
            r = bench.result(*unit, need_weights=need_weights)
        except RuntimeError as err:
            errors.append(str(err))
            print(f"FAILED {unit}: {err}", flush=True)
            return
        if r is None:
            busy.append(unit)
            print(f"{unit[0]} seed {unit[1]}: another benchmark process is running it; not in this table", flush=True)
            return
        results.append(r)
        if args.train_only:
            print(f"{r['method']} seed {r['seed']}: trained {r['train_s']:.0f}s, not scored (--train-only)  [{time.time() - started:.0f}s]", flush=True)
            return
        print(f"{r['method']} seed {r['seed']}: FID {r.get('fid', float('nan')):.2f}  trained {r['train_s']:.0f}s "
              f"(step {r['selected_step']}, {r['selected']})  [{time.time() - started:.0f}s]", flush=True)

    if args.frozen_teacher:  # the teacher exists before any student reads it
        units = [u for u in units if u[0] != "teacher"]
        readers = [u for u in units if u[0] != "none"]  # the students distilled from the teacher
        to_train = [u for u in readers if not bench.finished(*u)]  # the teacher's weights matter only to these
        distilled = [f"{m} seed {s}" for m, s in readers if bench.finished(m, s)]
        if to_train and distilled and not bench.frozen_teacher().is_file():
            # trained again, the teacher would differ (float order differs across CPUs and GPUs): the table would mix
            # students of two teachers
            sys.exit(f"--frozen-teacher: {bench.frozen_teacher()} is not on this machine, and {', '.join(distilled)} "
                     f"were distilled from it; put it back, or move their results out of {bench.results_file('teacher', 0).parent.parent} "
                     "(another --name) to start the table again from a new teacher")
        if "teacher" in methods:
            work(("teacher", 0), need_weights=bool(to_train) and not bench.frozen_teacher().is_file())
        if to_train and not bench.frozen_teacher().is_file():
            sys.exit(f"--frozen-teacher: {bench.frozen_teacher()} does not exist yet; add teacher to --methods to train it first")
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        list(pool.map(work, units))
    if args.train_only:
        print(f"\n{len(results)} run(s) trained, none scored (--train-only); rerun without it to score them")
        sys.exit(1 if errors else 0)
    cfg = bench.cfg
    print(f"\n{args.task}: {cfg.task}, {cfg.data.crop_size}px, budget {args.budget} steps, seeds 0..{args.seeds - 1}, "
          f"test split {cfg.data.test_split}; machine: {machine(args.device)}, torch {torch.__version__}, {args.threads} thread(s) per run, "
          f"{args.jobs} run(s) at a time\n")
    print(table(results, TASKS[cfg.task].fid_vs_train_test))
    print()
    print(per_run(results))
    print(versus_none(results))
    print(curve_table(results))
    unfinished = bench.unfinished(units)
    if unfinished:
        print("\nunfinished (not results; rerun the same command to continue them):\n" + "\n".join(unfinished))
    if errors:
        print(f"\n{len(errors)} run(s) failed:\n" + "\n".join(errors))
        sys.exit(1)


def print_table_only(args: argparse.Namespace, units: list[tuple[str, int]]) -> None:
    """The table rebuilt from the committed result files; the units without one are named as missing."""
    task_dir = args.results_dir / (args.name or Path(args.task).stem)
    folder = task_dir / f"b{args.budget}"
    if args.frozen_teacher:  # one teacher, seed 0, that every student read
        units = [u for u in units if u[0] != "teacher" or u[1] == 0]
    results, missing = [], []
    for method, seed in units:
        budget = args.teacher_budget if method == "teacher" and args.teacher_budget else args.budget
        path = task_dir / f"b{budget}" / f"{method}_seed{seed}.json"
        if path.is_file():
            results.append(json.loads(path.read_text()))
        else:
            missing.append(f"{method} seed {seed}")
    if not results:
        sys.exit(f"{folder}: no result files for these methods and seeds")
    print(f"\n{args.task} (from {folder}): budget {args.budget} steps, seeds 0..{args.seeds - 1}\n")
    print(table(results, any(r.get("fid_train_test") is not None for r in results)))
    print()
    print(per_run(results))
    print(versus_none(results))
    print(curve_table(results))
    if missing:
        print("\nno result (unfinished or not run): " + ", ".join(missing))


if __name__ == "__main__":
    main()
