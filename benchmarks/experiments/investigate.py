"""Controlled student ablations: several students learn from ONE online teacher trajectory, on the same batches.

In the interleaved schedule the teacher and its discriminator never see the student, so every student
variant can share them: each variant differs only in its own loss settings, with identical init, data
order and teacher. That makes small differences measurable on a shared 2-core CPU at a fraction of the cost of
separate runs. Variants are scored on the VALIDATION split only (FID/KID with the TF Inception, L1 and PSNR to
the target when paired, L1 to the teacher), plus a checkerboard index: the share of spectral energy of the
outputs near the Nyquist frequency, divided by the same share for real target images (1 = like real images).
Every ``--probe-every`` steps the gradient norm of each loss term w.r.t. the student's weights is logged.

    python benchmarks/experiments/investigate.py quickstart --steps 300 --variants none,omgd,dcd,dcd_l10
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader, Subset

from dcdgan.config import apply_overrides, load_config
from dcdgan.data import DataRoot, EpochSampler
from dcdgan.distill import make_optimizer, trainable
from dcdgan.evaluate import batches
from dcdgan.losses import dcd_loss, feature_loss, gan_loss_g, style_loss
from dcdgan.metrics.fid import ReferenceStats, frechet_distance, kernel_inception_distance
from dcdgan.metrics.inception import load_inception
from dcdgan.metrics.paired import psnr_ssim, to_uint8
from dcdgan.perceptual import setup_perceptual
from dcdgan.assembly import Networks, build_networks, dcd_taps, uses_dcd
from dcdgan.config import Config
from dcdgan.modes import eval_mode, frozen
from dcdgan.pool import ImagePool
from dcdgan.steps import Optimizers, StudentObjective, TaskObjective, Updater, generate, student_update, task_step, task_update
from dcdgan.taps import capture
from dcdgan.tasks import TASKS

# name -> overrides on top of the recipe (method none trains the task networks at the student's size, alone)
VARIANTS: dict[str, list[str]] = {
    "none": ["distill.method=none"],
    "omgd": ["distill.method=omgd"],
    "dcd": ["distill.method=dcd"],
    "dcd_only": ["distill.method=dcd", "distill.lambda_style=0", "distill.lambda_feat=0", "perceptual.weights=none"],
    "dcd_l0.1": ["distill.method=dcd", "distill.lambda_dcd=0.1"],
    "dcd_l10": ["distill.method=dcd", "distill.lambda_dcd=10"],
    "dcd_tconn": ["distill.method=dcd", "distill.train_teacher_connectors=true"],
    "dcd_gan": ["distill.method=dcd", "distill.student_gan_weight=1"],
    "dcd_min16": ["distill.method=dcd", "distill.dcd_min_size=16"],
    "dcd_min64": ["distill.method=dcd", "distill.dcd_min_size=64"],
    "omgd_nostyle": ["distill.method=omgd", "distill.lambda_style=0"],
    "omgd_nofeat": ["distill.method=omgd", "distill.lambda_feat=0"],
    "dcd_nostyle": ["distill.method=dcd", "distill.lambda_style=0"],
    "dcd_style0.1": ["distill.method=dcd", "distill.lambda_style=1000"],
    "dcd_style0.01": ["distill.method=dcd", "distill.lambda_style=100"],
    "pixel": ["distill.method=omgd", "perceptual.weights=none", "distill.lambda_style=0", "distill.lambda_feat=0"],
    "dcd_pixel": ["distill.method=dcd", "perceptual.weights=none", "distill.lambda_style=0", "distill.lambda_feat=0"],
    "dcd_fs0.1": ["distill.method=dcd", "perceptual.feature_scale=0.000392"],
    "dcd_pix": ["distill.method=dcd"],  # VGG + DCD + 10 x L1 to the teacher output (PIXEL_WEIGHT)
    "dcd_pix100": ["distill.method=dcd"],  # VGG + DCD + 100 x L1 to the teacher output
}
# variants whose weight-free pixel term is explicit (perceptual.weights=none disables VGG and the stand-in)
PIXEL_WEIGHT = {"pixel": 10.0, "dcd_pixel": 10.0, "dcd_pix": 10.0, "dcd_pix100": 100.0}


@dataclass
class Learner:
    """One variant (or the shared teacher): its config and what its steps take."""

    cfg: Config
    nets: Networks
    opts: Optimizers
    task: TaskObjective | None
    objective: StudentObjective | None

    @property
    def taps(self):
        return self.objective.taps

    @property
    def vgg(self):
        return self.objective.vgg

    @property
    def pixel_weight(self):
        return self.objective.pixel_weight


def term_grad_norms(t: Learner, real_a, teacher_out, teacher_feats) -> dict[str, float]:
    """||d term / d student weights|| for each loss term of the student objective (no update)."""
    nets, d = t.nets, t.cfg.distill
    params = [p for p in nets.student.parameters() if p.requires_grad]
    with frozen(nets.disc_b):
        taps = list(t.taps.student) if t.taps else []
        with capture(nets.student, taps, "student") as feats:
            out = nets.student(real_a)
        terms = {}
        if t.vgg is not None:
            with torch.no_grad():
                v_t = t.vgg(teacher_out)
            v_s = t.vgg(out)
            terms["style"] = d.lambda_style * style_loss(v_s, v_t)
            terms["feat"] = d.lambda_feat * feature_loss(v_s[1], v_t[1])
        if t.pixel_weight > 0:
            terms["pixel"] = t.pixel_weight * F.l1_loss(out, teacher_out)
        if t.taps is not None:
            terms["dcd"] = d.lambda_dcd * dcd_loss(nets.disc_b, t.taps.disc, nets.projector(teacher_feats, feats))
        if d.student_gan_weight > 0:
            image = torch.cat([real_a, out], 1) if TASKS[t.cfg.task].conditional_disc else out
            terms["gan"] = d.student_gan_weight * gan_loss_g(nets.disc_b(image), t.cfg.loss.gan_mode)
        norms = {}
        for name, term in terms.items():
            grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
            norms[name] = float(torch.sqrt(sum((g.float() ** 2).sum() for g in grads if g is not None)))
    return norms


def spread(n: int, k: int) -> list[int]:
    """k indices evenly spread over range(n) (the embedded splits are ordered by class)."""
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, min(k, n))})


def nyquist_share(images: torch.Tensor) -> float:
    """Share of the non-DC spectral power at |frequency| >= 3/8 cycles/pixel on either axis (checkerboard energy)."""
    x = images.float()
    x = x - x.mean(dim=(-2, -1), keepdim=True)
    power = torch.fft.fft2(x).abs() ** 2
    h, w = x.shape[-2:]
    fy = torch.fft.fftfreq(h).abs().view(h, 1)
    fx = torch.fft.fftfreq(w).abs().view(1, w)
    high = ((fy >= 0.375) | (fx >= 0.375)).to(power.dtype)
    return float((power * high).sum() / power.sum().clamp_min(1e-12))


@torch.no_grad()
def score(gen, dataset, device, inception, reference, teacher=None, paired=True) -> dict:
    """Validation scores of one generator."""
    feats, outs, l1, l1_t, psnr = [], [], [], [], []
    with eval_mode(gen, teacher):
        for batch in batches(dataset, 50):
            a = batch["A"].to(device)
            y = gen(a)
            outs.append(y)
            if teacher is not None:
                l1_t.append((y - teacher(a)).abs().mean(dim=(1, 2, 3)))
            if paired:
                l1.append((y - batch["B"]).abs().mean(dim=(1, 2, 3)))
                psnr.append(psnr_ssim(to_uint8(y), to_uint8(batch["B"]))[0])
            if inception is not None:
                feats.append(inception(to_uint8(y)).cpu().numpy())
    out = {"checker": nyquist_share(torch.cat(outs))}
    if paired:
        out["l1"] = float(torch.cat(l1).mean())
        out["psnr"] = float(torch.cat(psnr).mean())
    if teacher is not None:
        out["l1_teacher"] = float(torch.cat(l1_t).mean())
    if inception is not None:
        f = np.concatenate(feats).astype(np.float64)
        s = ReferenceStats.from_features(f, keep_features=False)
        out["fid"] = frechet_distance(s.mu, s.sigma, reference.mu, reference.sigma)
        out["kid"] = kernel_inception_distance(reference.features, f)[0]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", default="none,omgd,dcd")
    parser.add_argument("--probe-every", type=int, default=50)
    parser.add_argument("--eval-at", default="", help="comma-separated extra steps to score at (always at the end)")
    parser.add_argument("--out", type=Path, default=None, help="JSON lines of results")
    parser.add_argument("--max-val", type=int, default=0, help="score on this many validation images, evenly spread (0 = all)")
    parser.add_argument("--no-fid", action="store_true", help="skip FID/KID (Inception is the costly part on CPU)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()

    base = load_config(args.recipe, [*args.overrides, f"train.seed={args.seed}"])
    if base.distill.schedule != "interleaved":
        raise SystemExit("investigate.py shares one teacher across students: interleaved schedule only")
    acc = Accelerator(cpu=True)
    device = acc.device
    names = args.variants.split(",")
    cfgs = {n: apply_overrides(copy.deepcopy(base), VARIANTS[n]) for n in names}

    # the teacher: the task networks of a distillation config (identical for every variant: same seed, built first)
    teacher_cfg = apply_overrides(copy.deepcopy(base), ["distill.method=omgd"])
    set_seed(args.seed)
    tnets = build_networks(teacher_cfg)
    pool_size = TASKS[base.task].pool_size(base.loss.pool_size)
    up = Updater(acc)
    teacher = Learner(teacher_cfg, Networks(tnets.disc_b, teacher=tnets.teacher, gen_ba=tnets.gen_ba, disc_a=tnets.disc_a),
                      Optimizers(make_optimizer(trainable(tnets.disc_b, tnets.disc_a), base.train), make_optimizer(trainable(tnets.teacher, tnets.gen_ba), base.train), None),
                      TaskObjective(TASKS[base.task], teacher_cfg.loss, ImagePool(pool_size, args.seed + 1), ImagePool(pool_size, args.seed + 2)), None)
    students: dict[str, Learner] = {}
    for n, cfg in cfgs.items():
        set_seed(args.seed)
        nets = build_networks(cfg)
        if cfg.distill.method == "none":
            students[n] = Learner(cfg, nets, Optimizers(make_optimizer(trainable(nets.disc_b, nets.disc_a), cfg.train),
                                                        make_optimizer(trainable(nets.baseline, nets.gen_ba), cfg.train), None),
                                  TaskObjective(TASKS[cfg.task], cfg.loss, ImagePool(pool_size, args.seed + 1), ImagePool(pool_size, args.seed + 2)), None)
            continue
        vgg, pixel = setup_perceptual(cfg.distill, cfg.perceptual, acc.device, print)
        pixel = PIXEL_WEIGHT.get(n, pixel)
        shared = Networks(tnets.disc_b, teacher=tnets.teacher, gen_ba=tnets.gen_ba, disc_a=tnets.disc_a, student=nets.student, projector=nets.projector)
        objective = StudentObjective(cfg.distill, cfg.loss.gan_mode, TASKS[cfg.task].conditional_disc, vgg, pixel, dcd_taps(cfg.distill) if uses_dcd(cfg.distill) else None)
        students[n] = Learner(cfg, shared, Optimizers(teacher.opts.disc, None, make_optimizer(trainable(nets.student, nets.projector), cfg.train)), None, objective)

    data = DataRoot(base.data)
    train_set = data.train_dataset()
    paired = base.data.mode == "paired"
    val_name = "holdout" if base.data.val_split == "holdout" else base.data.val_split
    val_set = data.eval_dataset(val_name) if paired else data.eval_inputs(val_name)
    targets = data.eval_targets(val_name)
    if args.max_val:
        val_set = Subset(val_set, spread(len(val_set), args.max_val))
        targets = Subset(targets, spread(len(targets), args.max_val))
    inception = reference = None
    if not args.no_fid:
        inception = load_inception("auto").to(device)
        ref_feats = np.concatenate([inception(to_uint8(b["A"])).cpu().numpy() for b in batches(targets, 50)]).astype(np.float64)
        reference = ReferenceStats.from_features(ref_feats)
    real_checker = nyquist_share(torch.cat([b["A"] for b in batches(targets, 500)]))
    taps_all = tuple(dcd_taps(base.distill).teacher)

    sampler = EpochSampler(len(train_set), args.seed)
    loader = DataLoader(train_set, base.train.batch_size, sampler=sampler)
    eval_at = {int(s) for s in args.eval_at.split(",") if s} | {args.steps}
    log = open(args.out, "a") if args.out else None

    def emit(record: dict) -> None:
        print(json.dumps(record), flush=True)
        if log:
            log.write(json.dumps(record) + "\n")
            log.flush()

    step, epoch, started = 0, 0, time.time()
    times = {n: 0.0 for n in ["teacher", *names]}
    while step < args.steps:
        sampler.begin(epoch)
        for batch in loader:
            real_a, real_b = batch["A"], batch["B"]
            t0 = time.perf_counter()
            fake_b, feats = generate(up, tnets.teacher, real_a, taps_all, grad=True)
            task_update(up, teacher.nets, teacher.opts, teacher.task, real_a, real_b, fake_b)
            fake_b, feats = fake_b.detach(), {k: v.detach() for k, v in feats.items()}
            times["teacher"] += time.perf_counter() - t0
            probe = args.probe_every and step % args.probe_every == 0
            for n, t in students.items():
                t0 = time.perf_counter()
                if t.cfg.distill.method == "none":
                    losses = task_step(up, t.nets, t.opts, t.task, batch)
                else:
                    if probe:
                        emit({"step": step, "variant": n, "grad_norm": term_grad_norms(t, real_a, fake_b, feats)})
                    losses = student_update(up, t.nets, t.opts.student, t.objective, real_a, real_b, fake_b, feats)
                losses = {k: v.item() for k, v in losses.items()}
                times[n] += time.perf_counter() - t0
                if probe:
                    emit({"step": step, "variant": n, "losses": losses})
            step += 1
            if step in eval_at:
                for n, t in students.items():
                    gen = t.nets.deliverable
                    emit({"step": step, "variant": n, "val": score(gen, val_set, device, inception, reference, tnets.teacher, paired)})
                emit({"step": step, "variant": "teacher", "val": score(tnets.teacher, val_set, device, inception, reference, None, paired),
                      "real_checker": real_checker})
                emit({"step": step, "seconds": {k: round(v, 1) for k, v in times.items()}, "wall": round(time.time() - started, 1)})
            if step >= args.steps:
                break
        epoch += 1


if __name__ == "__main__":
    main()
