"""A/B of whole training steps, old against new, alternated in one process, with the losses of both compared.

Two runs of one recipe are set up alike (same seed, weights and batches). The ``old`` run trains with the code
as it was before the changes named in ``--changes`` (kept below as reference functions and swapped in during its
steps only), the ``new`` one with the package as it is. Prints medians, quartiles, the ratio, and the largest
relative difference of each loss term over the first ``--compare-steps`` steps (float reordering only, when a
change keeps the math).

Changes:
- ``batched``: CycleGAN's generator passes in one batch per generator (``batching.forward_each``); old: one pass each.
- ``fused``: the optimizers as ``distill.make_optimizer`` builds them now; old: Adam's default (for-loop) CPU kernel.
- ``denormal``: the new run's steps with ``torch.set_flush_denormal(True)`` (a probe; not adopted, see RESULTS.md).

    python benchmarks/experiments/step_ab.py --recipe horse2zebra_64 --method dcd --changes batched,fused \\
        --steps 20 data.root=../shared/data/horse2zebra-128
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from dcdgan import distill, steps
from dcdgan.config import load_config
from dcdgan.distill import setup, train_step
from dcdgan.losses import gan_loss_d, gan_loss_g
from dcdgan.modes import frozen

QUIET = ["eval.every=0", "eval.final=false", "eval.metric=l1", "train.sample_every=0", "train.checkpoint_every=0"]


def cyclegan_update_one_pass_each(up, nets, opts, task, real_a, real_b, fake_b):
    """``steps.cyclegan_update`` before ``batched``: every generator pass on its own."""
    c, mode = task.loss, task.loss.gan_mode
    if nets.gen_ba is None:
        loss_d_b = gan_loss_d(*steps.judge_pair(up, nets.disc_b, real_b, task.pool_b.query(fake_b)), mode)
        up(opts.disc, {"D_B": loss_d_b})
        return steps.detached({"D_B": loss_d_b})
    gen_ab, gen_ba = nets.task_generator, nets.gen_ba
    disc_a, disc_b = up.unwrap(nets.disc_a), up.unwrap(nets.disc_b)
    with frozen(disc_a, disc_b):
        fake_a = gen_ba(real_b)
        gan_ab = gan_loss_g(disc_b(fake_b).float(), mode)
        gan_ba = gan_loss_g(disc_a(fake_a).float(), mode)
        cycle = F.l1_loss(gen_ba(fake_b), real_a) + F.l1_loss(gen_ab(fake_a), real_b)
        terms = {"G_gan_AB": gan_ab, "G_gan_BA": gan_ba, "G_cycle": c.lambda_cycle * cycle}
        losses = {"G_gan_AB": gan_ab, "G_gan_BA": gan_ba, "G_cycle": cycle}
        if c.lambda_identity > 0:
            identity = F.l1_loss(gen_ab(real_b), real_b) + F.l1_loss(gen_ba(real_a), real_a)
            terms["G_idt"] = c.lambda_cycle * c.lambda_identity * identity
            losses["G_idt"] = identity
        up(opts.gen, terms)
    loss_d_b = gan_loss_d(*steps.judge_pair(up, nets.disc_b, real_b, task.pool_b.query(fake_b)), mode)
    loss_d_a = gan_loss_d(*steps.judge_pair(up, nets.disc_a, real_a, task.pool_a.query(fake_a)), mode)
    up(opts.disc, {"D_A": loss_d_a, "D_B": loss_d_b})
    return steps.detached(losses | {"D_A": loss_d_a, "D_B": loss_d_b})


def adam_default(params, cfg):
    """``distill.make_optimizer`` before ``fused``."""
    return torch.optim.Adam(params, lr=cfg.train.lr, betas=(cfg.train.beta1, cfg.train.beta2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="horse2zebra_64")
    parser.add_argument("--method", default="dcd")
    parser.add_argument("--changes", default="batched", help="comma-separated: batched, fused")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--compare-steps", type=int, default=20)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    changes = set(args.changes.split(","))
    torch.set_num_threads(1)
    new_update, new_optimizer = steps.cyclegan_update, distill.make_optimizer
    runs = {}
    for name in ("old", "new"):
        distill.make_optimizer = adam_default if name == "old" and "fused" in changes else new_optimizer
        runs[name] = setup(load_config(args.recipe, [f"distill.method={args.method}", *QUIET, *args.overrides]),
                           Path(tempfile.mkdtemp()) / name, resume=False, quiet=True)
    distill.make_optimizer = new_optimizer
    times = {name: [] for name in runs}
    losses = {name: [] for name in runs}
    for i in range(args.warmup + args.steps):
        for name in (list(runs) if i % 2 == 0 else list(runs)[::-1]):
            run = runs[name]
            steps.cyclegan_update = cyclegan_update_one_pass_each if name == "old" and "batched" in changes else new_update
            if "denormal" in changes:
                torch.set_flush_denormal(name == "new")
            phase, _, batch = next(run.batches)
            start = time.perf_counter()
            values = train_step(run, phase, i, batch)
            run.updater.applied()
            read = {k: float(v) for k, v in values.items()}
            elapsed = time.perf_counter() - start
            if i >= args.warmup:
                times[name].append(elapsed)
            if i < args.compare_steps:
                losses[name].append(read)
    steps.cyclegan_update = new_update
    base = statistics.median(times["old"])
    print(f"{args.recipe}, method {args.method}, changes {','.join(sorted(changes))}: {args.steps} alternated steps each after "
          f"{args.warmup} warm-up, 1 thread, CPU capability {torch.backends.cpu.get_cpu_capability()}")
    print("| code | median ms/step | p25 | p75 | ratio new/old |\n|---|---|---|---|---|")
    for name, values in times.items():
        q = statistics.quantiles(values, n=4)
        print(f"| {name} | {statistics.median(values) * 1e3:.0f} | {q[0] * 1e3:.0f} | {q[2] * 1e3:.0f} | {statistics.median(values) / base:.3f} |")
    terms = sorted(losses["old"][0])
    print(f"largest relative loss difference new vs old per term over the first {len(losses['old'])} steps:")
    for k in terms:
        diffs = [abs(n[k] - o[k]) / max(abs(o[k]), 1e-3) for o, n in zip(losses["old"], losses["new"])]
        print(f"  {k}: {max(diffs):.2e} (step 1: {diffs[0]:.2e})")
    per_step = [max(abs(n[k] - o[k]) / max(abs(o[k]), 1e-3) for k in o) for o, n in zip(losses["old"], losses["new"])]
    print("largest relative difference per step: " + " ".join(f"{d:.1e}" for d in per_step))


if __name__ == "__main__":
    main()
