"""Milliseconds per training step of a recipe, per distill.method and per setting (precision, torch.compile).

Each setting (``--precision`` x ``--compile``) runs in its own worker process, because Accelerate's state (mixed
precision, autocast) is per process. Every worker sets its runs up exactly as ``dcdgan distill`` does
(``distill.setup``, one run per method), then waits. The parent hands out rounds of ``--steps-per-round`` steps,
alternating the settings (the order rotates every round) so that machine load hits all of them alike; inside a
worker the methods alternate too. Each step is timed alone (``train_step`` plus reading its losses, i.e. the work
of one loop iteration without logging, validation or checkpoints). The first ``--warmup`` steps of every run are
untimed (torch.compile compiles there).

The losses of the first ``--compare-steps`` steps of every run are recorded too: all settings start from the same
seed, data and weights, so each setting's losses are compared with fp32 eager's (largest relative difference).

    python benchmarks/train_speed.py --recipe horse2zebra_64 --size 64 --precision no --compile no,yes \\
        --methods none,dcd --json data.root=../shared/data/horse2zebra-128

The table gives medians per method and setting and the speed-up over fp32 eager; with ``--json`` the last line is
one JSON object: ``{"ms_per_step": {method: {setting: ms}}, "speedup": {method: {setting: x}}, "loss_rel_diff":
{method: {setting: max relative difference}}, ...}``. Without VGG16 weights (no $DCDGAN_VGG16), a recipe that
reads VGG falls back as ``perceptual.on_missing`` says.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

# only the steps are timed: no validation, samples, checkpoints or final evaluation in these runs
QUIET_RUN = ["eval.every=0", "eval.final=false", "eval.metric=l1", "train.sample_every=0", "train.checkpoint_every=0"]
BASELINE = "no/eager"
MARK = "@train_speed@"  # starts the worker's protocol lines; anything else it prints (set-up notices) is passed on


def setting_name(precision: str, compile_: str) -> str:
    """'no/eager', 'bf16/compile', ...: how a setting is named in the table and the JSON."""
    return f"{precision}/{'compile' if compile_ == 'yes' else 'eager'}"


# ---------------------------------------------------------------- worker: one setting, its runs, steps on demand


def worker(args: argparse.Namespace) -> None:
    """Set up one run per method for one setting, then time the steps the parent asks for (one JSON line per round)."""
    import torch

    from dcdgan.config import load_config
    from dcdgan.stepping import Stepper

    if args.threads:
        torch.set_num_threads(args.threads)
    workdir = Path(tempfile.mkdtemp(prefix="dcdgan-train-speed-"))
    runs = {}
    for method in args.methods.split(","):
        # compile "recipe" leaves train.compile as the recipe says (experiments/code_ab.py: code from before the key existed)
        compile_ = [] if args.compile == "recipe" else [f"train.compile={args.compile == 'yes'}"]
        overrides = [f"distill.method={method}", f"train.mixed_precision={args.precision}", *compile_,
                     *QUIET_RUN, *size_overrides(args.size), *args.overrides]
        runs[method] = Stepper(load_config(args.recipe, overrides), workdir / method)
    counters = {m: 0 for m in runs}
    print(MARK + json.dumps({"ready": True, "threads": torch.get_num_threads()}), flush=True)
    for line in sys.stdin:
        steps = int(line)
        times: dict[str, list[float]] = {m: [] for m in runs}
        losses: dict[str, list[dict]] = {m: [] for m in runs}
        for i in range(steps):
            for method in list(runs)[i % len(runs):] + list(runs)[: i % len(runs)]:
                read, elapsed = runs[method].step()
                counters[method] += 1
                if counters[method] > args.warmup:
                    times[method].append(elapsed)
                if counters[method] <= args.compare_steps:
                    losses[method].append(read)
        print(MARK + json.dumps({"times": times, "losses": losses}), flush=True)


def size_overrides(size: int) -> list[str]:
    """Train at ``size`` px: crop to it, loading at the recipe family's 286/256 ratio (0 = the recipe's own size)."""
    return [f"data.crop_size={size}", f"data.load_size={round(size * 286 / 256)}"] if size else []


# ---------------------------------------------------------------- parent: alternate the workers, summarise


def start_worker(args: argparse.Namespace, precision: str, compile_: str) -> subprocess.Popen:
    """A worker process for one setting, its runs set up (blocks until it says it is ready)."""
    cmd = [sys.executable, __file__, "--worker", "--recipe", args.recipe, "--size", str(args.size), "--methods", args.methods,
           "--warmup", str(args.warmup), "--compare-steps", str(args.compare_steps), "--threads", str(args.threads),
           "--precision-one", precision, "--compile-one", compile_, *args.overrides]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    if read_reply(proc) is None:
        raise SystemExit(f"train_speed: the {setting_name(precision, compile_)} worker failed to start (its error is above)")
    return proc


def read_reply(proc: subprocess.Popen) -> dict | None:
    """The worker's next protocol line (other lines go to stderr), or None when it has exited."""
    for line in proc.stdout:
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
        sys.stderr.write(line)
    return None


def ask(proc: subprocess.Popen, steps: int) -> dict:
    """One round of ``steps`` steps per method from a worker."""
    proc.stdin.write(f"{steps}\n")
    proc.stdin.flush()
    reply = read_reply(proc)
    if reply is None:
        raise SystemExit("train_speed: a worker died during a round (its error is above)")
    return reply


def max_rel_diff(a: list[dict], b: list[dict]) -> float | None:
    """Largest |a - b| / max(|b|, 1e-3) over the loss terms both recorded, step by step."""
    diffs = [abs(x[k] - y[k]) / max(abs(y[k]), 1e-3) for x, y in zip(a, b) for k in x.keys() & y.keys()]
    return max(diffs) if diffs else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="quickstart")
    parser.add_argument("--size", type=int, default=0, help="train at this size (data.crop_size; 0 = the recipe's)")
    parser.add_argument("--methods", default="none,omgd,dcd", help="comma-separated distill.method values (default none,omgd,dcd)")
    parser.add_argument("--precision", default="no", help="comma-separated train.mixed_precision values (no, bf16, fp16)")
    parser.add_argument("--compile", default="no", help="comma-separated: no (eager), yes (train.compile=true)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per method and setting (default 20)")
    parser.add_argument("--steps-per-round", type=int, default=5, help="steps per method in one turn of a worker (default 5)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per run first (default 3; compilation happens there)")
    parser.add_argument("--compare-steps", type=int, default=20, help="steps whose losses are compared with fp32 eager's (default 20)")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads per worker (default: torch's choice)")
    parser.add_argument("--json", action="store_true", help="end with one line of JSON: ms_per_step, speedup, loss_rel_diff")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--precision-one", help=argparse.SUPPRESS)
    parser.add_argument("--compile-one", help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="extra key=value for every run")
    args = parser.parse_intermixed_args()
    if args.worker:
        args.precision, args.compile = args.precision_one, args.compile_one
        worker(args)
        return
    if args.steps < 2:
        parser.error("--steps must be at least 2 (medians and quartiles)")
    settings = list(itertools.product(args.precision.split(","), args.compile.split(",")))
    if ("no", "no") not in settings:
        settings.insert(0, ("no", "no"))  # the baseline every speed-up is over
    methods = args.methods.split(",")
    workers = {setting_name(*s): start_worker(args, *s) for s in settings}
    times, losses = alternate_rounds(workers, methods, args.steps + args.warmup, args.steps_per_round)
    report(args, methods, times, losses)


def alternate_rounds(workers: dict[str, subprocess.Popen], methods: list[str], steps: int, steps_per_round: int) -> tuple[dict, dict]:
    """Hand out rounds of steps until each worker ran ``steps``, rotating which worker goes first every round, then
    close the workers; the step times and losses of each, per method (experiments/code_ab.py uses it too)."""
    times = {name: {m: [] for m in methods} for name in workers}
    losses = {name: {m: [] for m in methods} for name in workers}
    try:
        for r in range(-(-steps // steps_per_round)):
            names = list(workers)
            for name in names[r % len(names):] + names[: r % len(names)]:
                out = ask(workers[name], steps_per_round)
                for m in methods:
                    times[name][m] += out["times"][m]
                    losses[name][m] += out["losses"][m]
    finally:
        for proc in workers.values():
            proc.stdin.close()
            proc.wait()
    return times, losses


def report(args: argparse.Namespace, methods: list[str], times: dict, losses: dict) -> None:
    """The table (median, quartiles, speed-up over fp32 eager, loss difference) and, with --json, the JSON line."""
    import torch

    ms = {m: {s: statistics.median(times[s][m]) * 1e3 for s in times} for m in methods}
    speedup = {m: {s: ms[m][BASELINE] / ms[m][s] for s in times} for m in methods}
    rel = {m: {s: max_rel_diff(losses[s][m], losses[BASELINE][m]) for s in times} for m in methods}
    vgg = os.environ.get("DCDGAN_VGG16") or "none (the recipe's perceptual.on_missing)"
    print(f"recipe {args.recipe} at {args.size or 'its own size'} px, {args.steps} timed steps per method and setting after "
          f"{args.warmup} warm-up, rounds of {args.steps_per_round} alternated between settings; VGG16: {vgg}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, torch {torch.__version__}, threads per worker {args.threads or 'default'}, "
          f"load average {os.getloadavg()[0]:.1f} at the end\n")
    print("| method | setting | median ms/step | p25 | p75 | speed-up over no/eager | max rel. loss diff, first steps |")
    print("|---|---|---|---|---|---|---|")
    for m in methods:
        for s in times:
            q = statistics.quantiles(times[s][m], n=4)
            diff = "-" if s == BASELINE or rel[m][s] is None else f"{rel[m][s]:.2e}"
            print(f"| {m} | {s} | {ms[m][s]:.0f} | {q[0] * 1e3:.0f} | {q[2] * 1e3:.0f} | {speedup[m][s]:.2f}x | {diff} |")
    if args.json:
        print(json.dumps({"recipe": args.recipe, "size": args.size, "steps": args.steps, "ms_per_step": ms, "speedup": speedup,
                          "loss_rel_diff": rel, "cpu_capability": torch.backends.cpu.get_cpu_capability()}))


if __name__ == "__main__":
    main()
