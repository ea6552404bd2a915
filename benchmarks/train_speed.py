"""Milliseconds per training step of the quickstart for distill.method none, omgd and dcd, timed side by side.

All three runs are set up in one process exactly as ``dcdgan distill`` sets them up (``distill.setup``), then
their steps are interleaved (none, omgd, dcd, omgd, dcd, none, ...: the order rotates every round) so that
machine load hits all three alike. Each step is timed alone (``train_step`` plus draining its losses, i.e. the
work of one loop iteration without logging, validation or checkpoints); the table gives medians and
the ratio to OMGD. The goal of issue 7: a DCD step costs at most 1.1x an OMGD step.

    DCDGAN_VGG16=../shared/weights/vgg16_imagenet_caffe_features.safetensors python benchmarks/train_speed.py --steps 30

Without VGG16 weights (no $DCDGAN_VGG16), omgd and dcd use the quickstart's weight-free setting (L1 to the
teacher output instead of the VGG losses), which is what a fresh offline machine runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from dcdgan import steps as step_module
from dcdgan.config import load_config
from dcdgan.distill import setup, train_step
from dcdgan.losses import dcd_loss, dcd_loss_per_tap

METHODS = ("none", "omgd", "dcd")
# --per-tap adds "dcd_per_tap": DCD with two discriminator passes per tap pair, as before issue 7 (same loss value)
PER_TAP = "dcd_per_tap"
# only the steps are timed: no validation, samples, checkpoints or final evaluation in these runs
QUIET_RUN = ["eval.every=0", "eval.final=false", "eval.metric=l1", "train.sample_every=0", "train.checkpoint_every=0"]


def time_steps(runs: dict, steps: int, warmup: int) -> dict[str, list[float]]:
    """Interleaved single-step timings (seconds) per method, after ``warmup`` untimed steps each."""
    times: dict[str, list[float]] = {m: [] for m in runs}
    counters = {m: 0 for m in runs}
    order = list(runs)
    for round_ in range(warmup + steps):
        rotated = order[round_ % len(order):] + order[: round_ % len(order)]
        for method in rotated:
            run = runs[method]
            phase, _, batch = next(run.batches)
            step_module.dcd_loss = dcd_loss_per_tap if method == PER_TAP else dcd_loss  # the step module's loss, for this step
            start = time.perf_counter()
            losses = train_step(run, phase, counters[method], batch)
            run.updater.applied()
            _ = {k: float(v) for k, v in losses.items()}  # what a log step reads; forces the work to be done
            elapsed = time.perf_counter() - start
            counters[method] += 1
            if round_ >= warmup:
                times[method].append(elapsed)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per method (default 30)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per method first (default 3)")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--recipe", default="quickstart")
    parser.add_argument("--per-tap", action="store_true", help="also time DCD with one discriminator pass per tap and side (before issue 7)")
    parser.add_argument("overrides", nargs="*", help="extra key=value for all three runs")
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps must be at least 2 (medians and quartiles)")
    if args.threads:
        torch.set_num_threads(args.threads)
    workdir = Path(tempfile.mkdtemp(prefix="dcdgan-train-speed-"))
    runs = {}
    for method in METHODS + ((PER_TAP,) if args.per_tap else ()):
        cfg = load_config(args.recipe, [f"distill.method={'dcd' if method == PER_TAP else method}", *QUIET_RUN, *args.overrides])
        runs[method] = setup(cfg, workdir / method, resume=False, quiet=True)
    try:
        times = time_steps(runs, args.steps, args.warmup)
    finally:
        step_module.dcd_loss = dcd_loss
    vgg = os.environ.get("DCDGAN_VGG16") or "none (weight-free setting)"
    print(f"recipe {args.recipe}, batch {runs['dcd'].cfg.train.batch_size}, {args.steps} timed steps per method after {args.warmup} "
          f"warm-up, interleaved; VGG16: {vgg}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f} at the end\n")
    omgd = statistics.median(times["omgd"])
    print("| method | median ms/step | p25 | p75 | ratio to omgd |")
    print("|---|---|---|---|---|")
    for method, values in times.items():
        q = statistics.quantiles(values, n=4)
        median = statistics.median(values)
        print(f"| {method} | {median * 1e3:.0f} | {q[0] * 1e3:.0f} | {q[2] * 1e3:.0f} | {median / omgd:.2f} |")


if __name__ == "__main__":
    main()
