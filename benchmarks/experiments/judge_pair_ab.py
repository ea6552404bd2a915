"""A/B of one discriminator pass over real and fake images (``steps.judge_pair``) against two passes (before).

Two runs of one recipe are set up alike; their steps alternate in one process, the two-pass run with
``steps.judge_pair`` swapped for the two-pass reading during its steps only. Prints medians and the ratio.

    python benchmarks/experiments/judge_pair_ab.py --recipe horse2zebra_64 --method none --steps 20 data.root=...
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from dcdgan import steps
from dcdgan.config import load_config
from dcdgan.distill import setup, train_step

QUIET = ["eval.every=0", "eval.final=false", "eval.metric=l1", "train.sample_every=0", "train.checkpoint_every=0"]


def two_passes(up, disc, real, fake):
    """The reading before judge_pair: one discriminator call per side."""
    return disc(real), disc(fake)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="horse2zebra_64")
    parser.add_argument("--method", default="none")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    torch.set_num_threads(1)
    one_pass = steps.judge_pair
    runs = {name: setup(load_config(args.recipe, [f"distill.method={args.method}", *QUIET, *args.overrides]),
                        Path(tempfile.mkdtemp()) / name, resume=False, quiet=True).loop for name in ("one pass", "two passes")}
    times = {name: [] for name in runs}
    for i in range(args.warmup + args.steps):
        for name in (list(runs) if i % 2 == 0 else list(runs)[::-1]):
            run = runs[name]
            steps.judge_pair = one_pass if name == "one pass" else two_passes
            phase, _, batch = next(run.batches)
            start = time.perf_counter()
            losses = train_step(run, phase, i, batch)
            run.updater.applied()
            _ = [float(v) for v in losses.values()]
            if i >= args.warmup:
                times[name].append(time.perf_counter() - start)
    steps.judge_pair = one_pass
    base = statistics.median(times["two passes"])
    print(f"{args.recipe}, method {args.method}, {args.steps} alternated steps each after {args.warmup} warm-up, 1 thread")
    print("| reading | median ms/step | ratio to two passes |\n|---|---|---|")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values) * 1e3:.0f} | {statistics.median(values) / base:.3f} |")


if __name__ == "__main__":
    main()
