"""Whole training steps of two code trees side by side: ``train_speed.py`` workers, one per tree, alternated.

Each worker is ``benchmarks/train_speed.py --worker`` run with ``PYTHONPATH`` set to one tree's ``src`` (e.g. a
``git archive`` of the base commit unpacked under /tmp, against this checkout's ``src``), so the same recipe, seed,
data and step timing run on both codes. Rounds alternate between the trees (the order rotates every round).
Prints medians, quartiles, the ratio to the first tree and the largest relative loss difference over the first
steps (trajectories: GAN training amplifies float reordering, see RESULTS.md).

    python benchmarks/experiments/code_ab.py --tree base=/tmp/speed-base/src --tree new=src --methods dcd,none \\
        --steps 20 data.root=../shared/data/horse2zebra-128
    python benchmarks/experiments/code_ab.py --tree morning=/tmp/morning/src --tree new=src --tree new_bf16=src@bf16 ...

A tree from before ``dcdgan.stepping`` (commit ada53ab) runs from a temporary copy with ``legacy_stepping.py`` added.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import train_speed


def with_stepping(src: str) -> str:
    """``src`` itself, or for a tree from before ``dcdgan.stepping`` a temporary copy with the backport in it."""
    if (Path(src) / "dcdgan" / "stepping.py").is_file():
        return str(Path(src).resolve())
    copy = Path(tempfile.mkdtemp(prefix="code-ab-tree-")) / "src"
    shutil.copytree(src, copy, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(Path(__file__).with_name("legacy_stepping.py"), copy / "dcdgan" / "stepping.py")
    return str(copy)


def start(args: argparse.Namespace, src: str, precision: str) -> subprocess.Popen:
    """A train_speed worker (``precision`` = train.mixed_precision; train.compile as the recipe says, off in the photo
    recipes) importing dcdgan from ``src``; blocks until it is ready."""
    cmd = [sys.executable, train_speed.__file__, "--worker", "--recipe", args.recipe, "--size", str(args.size), "--methods", args.methods,
           "--warmup", str(args.warmup), "--compare-steps", str(args.compare_steps), "--threads", "1",
           "--precision-one", precision, "--compile-one", "recipe", *args.overrides]
    env = {**os.environ, "PYTHONPATH": with_stepping(src)}
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    if train_speed.read_reply(proc) is None:
        raise SystemExit(f"code_ab: the worker for {src} failed to start (its error is above)")
    return proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", action="append", required=True,
                        help="NAME=SRC_DIR[@PRECISION] (twice or more; the first is the baseline; PRECISION is a "
                             "train.mixed_precision value, default no)")
    parser.add_argument("--recipe", default="horse2zebra_64")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--methods", default="dcd")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--steps-per-round", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--compare-steps", type=int, default=20)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_intermixed_args()
    trees = {name: (spec.split("@") + ["no"])[:2] for name, spec in (t.split("=", 1) for t in args.tree)}
    methods = args.methods.split(",")
    workers = {name: start(args, src, precision) for name, (src, precision) in trees.items()}
    times, losses = train_speed.alternate_rounds(workers, methods, args.steps + args.warmup, args.steps_per_round)
    import torch

    base = next(iter(trees))
    print(f"recipe {args.recipe} at {args.size} px, eager, precision per tree ({', '.join(f'{n}: {p}' for n, (_, p) in trees.items())}), 1 thread per worker, {len(times[base][methods[0]])} timed steps per "
          f"method and tree after {args.warmup} warm-up, rounds of {args.steps_per_round} alternated between trees")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, torch {torch.__version__}, load average {os.getloadavg()[0]:.1f} at the end\n")
    print(f"| method | code | median ms/step | p25 | p75 | speed-up over {base} | max rel. loss diff, first {args.compare_steps} steps |")
    print("|---|---|---|---|---|---|---|")
    for m in methods:
        ref = statistics.median(times[base][m])
        for name in trees:
            q = statistics.quantiles(times[name][m], n=4)
            med = statistics.median(times[name][m])
            diff = "-" if name == base else f"{train_speed.max_rel_diff(losses[name][m], losses[base][m]):.2e}"
            print(f"| {m} | {name} | {med * 1e3:.0f} | {q[0] * 1e3:.0f} | {q[2] * 1e3:.0f} | {ref / med:.2f}x | {diff} |")


if __name__ == "__main__":
    main()
