"""Online distillation: the task networks train from scratch (or a pretrained teacher stays frozen) beside the student.

``distill(cfg)`` sets a run up, walks the plan from ``schedule.py`` step by step, and leaves a run
directory: config.yaml, checkpoints/{last,best}.ckpt, student.safetensors (+ .json), teacher.safetensors,
samples/, metrics.jsonl, TensorBoard events, metrics.json and report.html.
"""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from dcdgan import runs
from dcdgan.checkpoint import load_checkpoint, load_network_state, rng_state, save_checkpoint, set_rng_state
from dcdgan.config import Config, to_dict
from dcdgan.data import DataRoot, EpochSampler
from dcdgan.errors import UserError
from dcdgan.evaluate import batches, l1_distance, score_generator
from dcdgan.metrics.fid import ReferenceStats
from dcdgan.metrics.inception import FIDInception, inception_available, load_inception
from dcdgan.networks import Networks, build_networks, dcd_taps, pretrained_teacher, student_spec, teacher_spec, uses_dcd
from dcdgan.perceptual import ENV_VAR as VGG_ENV_VAR
from dcdgan.perceptual import VGGPerceptual, resolve_vgg
from dcdgan.pool import ImagePool
from dcdgan.samples import save_sample_grid
from dcdgan.scan import check_before_training
from dcdgan.schedule import JOINT, STUDENT, TASK, build_plan, locate, phase_lr_factor, total_steps
from dcdgan.steps import Training, burst_student_step, joint_step, task_step
from dcdgan.weights import save_generator


@dataclass
class Selection:
    """Model-selection state: validation metric and the best scores so far (lower is better)."""

    metric: str | None  # "fid", "l1" or None when nothing can be measured
    best_score: float | None = None
    best_step: int | None = None
    teacher_best_score: float | None = None
    teacher_best_step: int | None = None
    history: list[dict] = field(default_factory=list)

    def state(self) -> dict:
        """Checkpoint form."""
        return dict(vars(self))


class StopRequest:
    """First Ctrl-C/SIGTERM: finish the current step, save, stop. A second one interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        tqdm.write("stopping after this step and saving checkpoints/last.ckpt (press Ctrl-C again to abort at once)")

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def say(accelerator: Accelerator, message: str) -> None:
    """One line to the console from the main process, without breaking the progress bar."""
    if accelerator.is_main_process:
        tqdm.write(message)


def setup_perceptual(cfg: Config, accelerator: Accelerator) -> tuple[VGGPerceptual | None, float]:
    """(VGG or None, weight of the pixel stand-in); the one-line notice when the weight-free setting applies."""
    d = cfg.distill
    if d.method == "none" or (d.lambda_style == 0 and d.lambda_feat == 0) or cfg.perceptual.weights == "none":
        return None, 0.0
    resolved = resolve_vgg(cfg.perceptual.weights, cfg.perceptual.preprocess)
    if resolved.model is None:
        if cfg.perceptual.on_missing == "error":
            raise UserError(
                f"VGG16 weights {resolved.source}; set perceptual.weights=FILE or ${VGG_ENV_VAR}, "
                "or perceptual.on_missing=pixel for the weight-free setting"
            )
        say(
            accelerator,
            f"VGG16 weights {resolved.source}: using the weight-free setting (L1 to the teacher output x{cfg.perceptual.fallback_lambda:g} "
            f"instead of VGG style/feature losses); set ${VGG_ENV_VAR} or perceptual.weights=FILE to use them",
        )
        return None, cfg.perceptual.fallback_lambda
    vgg = resolved.model
    if cfg.perceptual.feature_scale:
        vgg.feature_scale = cfg.perceptual.feature_scale
    say(accelerator, f"VGG16 weights: {resolved.source} (preprocessing: {vgg.preprocess}, feature scale {vgg.feature_scale:.4g})")
    return vgg.to(accelerator.device), 0.0


def choose_metric(cfg: Config, unpaired: bool) -> str | None:
    """The validation metric: FID when its weights are at hand (or asked for), else L1 when a target exists."""
    metric = cfg.eval.metric
    if metric == "auto":
        metric = "fid" if inception_available(cfg.eval.inception) else "l1"
    if metric == "l1" and unpaired and cfg.distill.method == "none":
        return None  # no ground truth and no teacher: nothing to compare against without FID
    return metric


def make_optimizer(params: list, cfg: Config) -> torch.optim.Optimizer:
    """Adam with the configured learning rate and betas."""
    return torch.optim.Adam(params, lr=cfg.train.lr, betas=(cfg.train.beta1, cfg.train.beta2))


def trainable(*modules) -> list:
    """Parameters that require grad, of the given (possibly None) modules."""
    return [p for m in modules if m is not None for p in m.parameters() if p.requires_grad]


def distill(cfg: Config, run_dir: Path, resume: bool = False, quiet: bool = False) -> Path:
    """Run (or continue) the configured distillation in ``run_dir``; returns the run directory."""
    state = load_checkpoint(runs.last_checkpoint(run_dir)) if resume else None
    bad_images = check_before_training(cfg, run_dir, quiet)  # every image of every split, before compute is spent
    accelerator = Accelerator(
        mixed_precision=cfg.train.mixed_precision, cpu=cfg.train.cpu, log_with="tensorboard", project_dir=str(run_dir)
    )
    if accelerator.is_main_process:
        runs.prepare_run_dir(run_dir, cfg, resume)
    set_seed(cfg.train.seed)
    started = time.time()

    # ---- data
    data = DataRoot(cfg.data, exclude=bad_images)
    train_set = data.train_dataset()
    student_set = data.train_inputs() if cfg.distill.schedule == "burst" and cfg.distill.method != "none" else None
    val_name = "holdout" if cfg.data.val_split == "holdout" else cfg.data.val_split
    unpaired = cfg.data.mode == "unpaired"
    plan = build_plan(cfg, len(train_set), len(student_set) if student_set is not None else 0, accelerator.num_processes)
    global_batch = cfg.train.batch_size * accelerator.num_processes

    # ---- networks, losses, optimizers
    nets = build_networks(cfg)
    vgg, pixel_weight = setup_perceptual(cfg, accelerator)
    if cfg.distill.method != "none" and vgg is None and pixel_weight == 0 and not uses_dcd(cfg) and cfg.distill.student_gan_weight == 0:
        raise UserError("the student has no loss: enable VGG (distill.lambda_style/lambda_feat), dcd, or distill.student_gan_weight")
    opt_disc = make_optimizer(trainable(nets.disc_b, nets.disc_a), cfg)
    opt_gen = None if pretrained_teacher(cfg) else make_optimizer(trainable(nets.gen_ab, nets.gen_ba), cfg)
    opt_student = None
    if nets.student is not None:
        opt_student = make_optimizer(trainable(nets.student, nets.projector), cfg)

    nets = prepare_networks(accelerator, nets)
    opt_disc, opt_gen, opt_student = (accelerator.prepare(o) if o is not None else None for o in (opt_disc, opt_gen, opt_student))
    pool_size = cfg.loss.pool_size if cfg.task == "cyclegan" else 0
    t = Training(
        cfg=cfg,
        accelerator=accelerator,
        nets=nets,
        opt_disc=opt_disc,
        opt_gen=opt_gen,
        opt_student=opt_student,
        taps=dcd_taps(cfg) if uses_dcd(cfg) else None,
        vgg=vgg,
        pixel_weight=pixel_weight,
        pool_a=ImagePool(pool_size, cfg.train.seed + 1),
        pool_b=ImagePool(pool_size, cfg.train.seed + 2),
    )

    # ---- validation
    selection = Selection(choose_metric(cfg, unpaired))
    inception: FIDInception | None = None
    val_reference: ReferenceStats | None = None
    if selection.metric == "fid":
        inception = load_inception(cfg.eval.inception).to(accelerator.device)
        val_reference = runs.reference_stats(run_dir, data, val_name, inception, cfg.eval.batch_size, cfg.eval.max_images, quiet)
    if selection.metric is None:
        say(accelerator, "validation: unpaired data, no teacher and no FID weights: nothing to select on; no best.ckpt, the last student is the result")

    # ---- data loaders: one per step kind; the sampler picks the pass and where to resume, Accelerate shards
    # its batches across processes and places them on the device
    samplers = {JOINT: EpochSampler(len(train_set), cfg.train.seed)}
    samplers[TASK] = samplers[JOINT]
    loaders = {JOINT: DataLoader(train_set, cfg.train.batch_size, sampler=samplers[JOINT], num_workers=cfg.data.num_workers)}
    if student_set is not None:
        samplers[STUDENT] = EpochSampler(len(student_set), cfg.train.seed)
        loaders[STUDENT] = DataLoader(student_set, cfg.train.batch_size, sampler=samplers[STUDENT], num_workers=cfg.data.num_workers)
    loaders = {kind: accelerator.prepare_data_loader(loader) for kind, loader in loaders.items()}
    loaders[TASK] = loaders[JOINT]

    step = 0
    if state is not None:
        step = restore(state, t, selection, len(train_set))
        say(accelerator, f"resumed {run_dir} at step {step}")
    accelerator.init_trackers("tb", config=runs.flat_config(cfg))
    metrics_log = runs.MetricsLog(run_dir / "metrics.jsonl", enabled=accelerator.is_main_process)
    metrics_log.truncate_after(step)
    sample_batch = next(iter(batches(data.eval_dataset(val_name), 4)))

    def save(path: Path, at_step: int) -> None:
        """Checkpoint the run as it is now (main process only)."""
        if accelerator.is_main_process:
            save_checkpoint(path, checkpoint_state(t, selection, at_step, len(train_set)))

    def validate(at_step: int) -> None:
        """Score the deliverable on validation; keep best.ckpt."""
        if selection.metric is None:
            return
        score = validation_score(t, data, val_name, selection.metric, inception, val_reference, nets.deliverable, unpaired)
        selection.history.append({"step": at_step, f"val_{selection.metric}": score})
        metrics_log.write({"step": at_step, f"val/{selection.metric}": score})
        accelerator.log({f"val/{selection.metric}": score}, step=at_step)
        if selection.best_score is None or score < selection.best_score:
            selection.best_score, selection.best_step = score, at_step
            save(runs.best_checkpoint(run_dir), at_step)

    def select_snapshot(at_step: int) -> None:
        """Burst schedule: the student's teacher becomes the best-on-validation (or latest) teacher so far."""
        gen = t.unwrap(nets.gen_ab)
        metric = selection.metric if not (unpaired and selection.metric == "l1") else None  # no target for an unpaired teacher
        if cfg.distill.teacher_snapshot == "latest" or metric is None:
            nets.snapshot.load_state_dict(gen.state_dict())
            return
        score = validation_score(t, data, val_name, metric, inception, val_reference, nets.gen_ab, unpaired, teacher=True)
        metrics_log.write({"step": at_step, f"val/teacher_{metric}": score})
        if selection.teacher_best_score is None or score < selection.teacher_best_score:
            selection.teacher_best_score, selection.teacher_best_step = score, at_step
            nets.snapshot.load_state_dict(gen.state_dict())

    # ---- the loop
    stop = min(total_steps(plan), cfg.train.max_steps) if cfg.train.max_steps > 0 else total_steps(plan)
    position, offset = locate(plan, step)
    bar = tqdm(total=stop, initial=step, desc=f"{cfg.task}/{cfg.distill.method}", disable=True if quiet else None, dynamic_ncols=True)
    with StopRequest() as stop_request:
        while step < stop:
            phase = plan[position]
            if phase.kind == STUDENT and offset == 0 and plan[position - 1].kind == TASK:
                select_snapshot(step)
            factor = phase_lr_factor(cfg, phase)
            for opt in (opt_disc, opt_gen, opt_student):
                if opt is not None:
                    for group in opt.param_groups:
                        group["lr"] = cfg.train.lr * factor
            samplers[phase.kind].begin(phase.index, skip=offset * global_batch)
            for batch in loaders[phase.kind]:
                if phase.kind == JOINT:
                    losses = joint_step(t, batch, update_task=step % cfg.distill.n_dis == 0)
                elif phase.kind == TASK:
                    losses = task_step(t, batch)
                else:
                    losses = burst_student_step(t, batch)
                step += 1
                bar.update(1)
                bar.set_postfix({k: f"{v:.3g}" for k, v in losses.items()}, refresh=False)
                if step % cfg.train.log_every == 0 or step == stop:
                    record = {"step": step, "phase": phase.kind, "epoch": phase.epoch, "lr": cfg.train.lr * factor, **losses}
                    metrics_log.write(record)
                    accelerator.log({f"train/{k}": v for k, v in losses.items()}, step=step)
                if cfg.train.sample_every and step % cfg.train.sample_every == 0 and accelerator.is_main_process:
                    save_sample_grid(run_dir, step, sample_batch, t.unwrap(nets.gen_ab), nets.student and t.unwrap(nets.student), accelerator)
                if cfg.eval.every and step % cfg.eval.every == 0:
                    validate(step)
                if cfg.train.checkpoint_every and step % cfg.train.checkpoint_every == 0:
                    save(runs.last_checkpoint(run_dir), step)
                if stop_request.requested:
                    save(runs.last_checkpoint(run_dir), step)
                    bar.close()
                    say(accelerator, f"stopped at step {step}; saved {runs.last_checkpoint(run_dir)}; continue with: dcdgan distill --resume {run_dir}")
                    raise KeyboardInterrupt
                if step >= stop:
                    break
            position, offset = position + 1, 0
    bar.close()

    # ---- the end: last validation, checkpoint, deliverables, final evaluation and report
    if not selection.history or selection.history[-1]["step"] != step:
        validate(step)
    save(runs.last_checkpoint(run_dir), step)
    if accelerator.is_main_process:
        save_sample_grid(run_dir, step, sample_batch, t.unwrap(nets.gen_ab), nets.student and t.unwrap(nets.student), accelerator)
        info = {"image_size": cfg.data.crop_size, "direction": cfg.data.direction, "input_range": [-1, 1], "step": step, "task": cfg.task}
        save_generator(run_dir / "student.safetensors", t.unwrap(nets.deliverable), student_spec(cfg), info | {"role": "student"})
        if nets.teacher is not None:
            save_generator(run_dir / "teacher.safetensors", t.unwrap(nets.teacher), teacher_spec(cfg), info | {"role": "teacher"})
        say(accelerator, f"trained {step} steps in {time.time() - started:.0f}s; run directory: {run_dir}")
        if cfg.eval.final:
            metrics = runs.evaluate_run(run_dir, split=cfg.data.test_split, quiet=quiet, device=accelerator.device)
            say(accelerator, runs.format_table(metrics))
        runs.write_report(run_dir)
    accelerator.end_training()
    return run_dir


def prepare_networks(accelerator: Accelerator, nets: Networks) -> Networks:
    """Hand trainable networks to Accelerate (device, DDP, autocast); move frozen ones to the device."""
    prepared = {}
    for name, net in nets.named().items():
        if any(p.requires_grad for p in net.parameters()):
            prepared[name] = accelerator.prepare(net)
        else:
            prepared[name] = net.to(accelerator.device)
    return Networks(**prepared)


@torch.no_grad()
def validation_score(
    t: Training,
    data: DataRoot,
    split: str,
    metric: str,
    inception: FIDInception | None,
    reference: ReferenceStats | None,
    gen: torch.nn.Module,
    unpaired: bool,
    teacher: bool = False,
) -> float:
    """Lower-is-better validation score of ``gen``: FID against the split's targets, or L1 (to B, or to the teacher when unpaired)."""
    cfg = t.cfg
    device = t.accelerator.device
    if metric == "fid":
        scores = score_generator(gen, data.eval_inputs(split), device, cfg.eval.batch_size, cfg.eval.max_images, inception, reference, quiet_bar=True)
        return scores["fid"]
    if unpaired:
        return l1_distance(gen, data.eval_inputs(split), device, cfg.eval.batch_size, reference=t.nets.gen_ab, max_images=cfg.eval.max_images)
    return l1_distance(gen, data.eval_dataset(split), device, cfg.eval.batch_size, max_images=cfg.eval.max_images)


def checkpoint_state(t: Training, selection: Selection, step: int, train_size: int) -> dict:
    """Everything needed to continue exactly: networks, optimizers, pools, RNG, selection, config, step."""
    optimizers = {"disc": t.opt_disc, "gen": t.opt_gen, "student": t.opt_student}
    return {
        "config": to_dict(t.cfg),
        "step": step,
        "train_size": train_size,
        "networks": {name: t.unwrap(net).state_dict() for name, net in t.nets.named().items()},
        "optimizers": {name: opt.state_dict() for name, opt in optimizers.items() if opt is not None},
        "pools": {"a": t.pool_a.state_dict(), "b": t.pool_b.state_dict()},
        "rng": rng_state(),
        "selection": selection.state(),
    }


def restore(state: dict, t: Training, selection: Selection, train_size: int) -> int:
    """Load a checkpoint into the run's objects; returns the step to continue from."""
    if state["train_size"] != train_size:
        raise UserError(f"the training set has {train_size} items but the checkpoint was made with {state['train_size']}; resume needs the same data")
    names = t.nets.named()
    if set(state["networks"]) != set(names):
        raise UserError(f"checkpoint networks {sorted(state['networks'])} do not match this config's {sorted(names)}")
    for name, net in names.items():
        load_network_state(t.unwrap(net), state["networks"][name], runs.last_checkpoint(t.accelerator.project_dir), name)
    optimizers = {"disc": t.opt_disc, "gen": t.opt_gen, "student": t.opt_student}
    for name, opt in optimizers.items():
        if opt is not None:
            opt.load_state_dict(state["optimizers"][name])
    t.pool_a.load_state_dict(state["pools"]["a"], t.accelerator.device)
    t.pool_b.load_state_dict(state["pools"]["b"], t.accelerator.device)
    saved = state["selection"]
    if saved["metric"] == selection.metric:
        for key, value in saved.items():
            setattr(selection, key, value)
    set_rng_state(state["rng"])
    return int(state["step"])

