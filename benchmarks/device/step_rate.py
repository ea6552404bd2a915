"""Training steps per second of one quality-benchmark run, set up as ``dcdgan distill`` sets it up.

Used on a lent GPU to size the step budget of ``benchmarks/quality.py`` before the real runs: start one of
these per (method, seed) at once, as the benchmark will, and read the slowest rate.

    python benchmarks/device/step_rate.py horse2zebra_128 --method dcd_gan --seed 0 --device cuda data.root=...
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from quality import METHODS, Bench, make_parser  # noqa: E402
from train_speed import QUIET_RUN  # noqa: E402

from dcdgan.config import load_config  # noqa: E402
from dcdgan.stepping import Stepper  # noqa: E402


def step_times(stepper: Stepper, steps: int, warmup: int) -> list[float]:
    """Seconds of each step after ``warmup`` untimed ones."""
    return [stepper.step()[1] for _ in range(warmup + steps)][warmup:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("task")
    parser.add_argument("--method", choices=METHODS, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_intermixed_args()
    with tempfile.TemporaryDirectory() as tmp:
        # the benchmark's own overrides (budget 3000: only the epoch count and validation points depend on it)
        bench_args = make_parser().parse_intermixed_args([args.task, "--budget", "3000", "--runs-dir", tmp, "--device", args.device, *args.overrides])
        overrides = Bench(bench_args).overrides(args.method, args.seed)
        cfg = load_config(args.task, [*overrides, *QUIET_RUN])
        times = step_times(Stepper(cfg, Path(tmp) / "run"), args.steps, args.warmup)
    median = statistics.median(times)
    print(json.dumps({"method": args.method, "seed": args.seed, "median_ms": median * 1e3, "steps_per_s": 1 / median}), flush=True)


if __name__ == "__main__":
    main()
