"""The objectives inside each update: loss values and weights, checked against the formulas written out here.

Every update runs with plain SGD at learning rate 1, so a network's parameter change is exactly minus the
gradient of the loss the update optimised; the test recomputes that loss from the spec's formula (on copies
of the networks taken before the update) and compares gradients. A dropped or misplaced weight shows.
This file is the one place the tests reach the step functions directly.
"""

from __future__ import annotations

import copy

import pytest
import torch
from accelerate import Accelerator

from conftest import REFERENCE_STUDENT, l1, lsgan_d, lsgan_g
from dcd_formula import dcd_by_hand, tap_outputs

from dcdgan import steps
from dcdgan.assembly import build_networks, dcd_taps
from dcdgan.config import load_config
from dcdgan.errors import UserError
from dcdgan.perceptual import VGGPerceptual, vgg16_features
from dcdgan.pool import ImagePool
from dcdgan.tasks import TASKS

TINY = ["model.teacher_ngf=8", "model.student_ngf=4", "model.ndf=8", *REFERENCE_STUDENT]


def sgd(*modules) -> torch.optim.SGD | None:
    trainable = [p for m in modules if m is not None for p in m.parameters() if p.requires_grad]
    return torch.optim.SGD(trainable, lr=1.0) if trainable else None  # None: a frozen pretrained teacher


class Training:
    """The pieces distill() hands the steps (SGD at lr 1 instead of Adam), and their settings for the formulas below."""

    def __init__(self, cfg, nets, opts: steps.Optimizers, task: steps.TaskObjective, objective: steps.StudentObjective):
        self.cfg, self.nets, self.opts, self.task, self.objective = cfg, nets, opts, task, objective
        self.up = steps.Updater(Accelerator(cpu=True))
        self.opt_gen, self.pool_a, self.pool_b = opts.gen, task.pool_a, task.pool_b
        self.taps, self.vgg, self.pixel_weight = objective.taps, objective.vgg, objective.pixel_weight


def training(recipe: str, *overrides: str, pixel_weight: float = 0.0, vgg: VGGPerceptual | None = None, pool_size: int = 0) -> Training:
    cfg = load_config(recipe, [*TINY, *overrides])
    torch.manual_seed(0)
    nets = build_networks(cfg)
    opts = steps.Optimizers(disc=sgd(nets.disc_b, nets.disc_a), gen=sgd(nets.teacher, nets.gen_ba), student=sgd(nets.student, nets.projector))
    task = steps.TaskObjective(TASKS[cfg.task], cfg.loss, ImagePool(pool_size, 1), ImagePool(pool_size, 2))
    objective = steps.StudentObjective(cfg.distill, cfg.loss.gan_mode, TASKS[cfg.task].conditional_disc, vgg, pixel_weight,
                                       dcd_taps(cfg.distill) if cfg.distill.method == "dcd" else None)
    return Training(cfg, nets, opts, task, objective)


# The step functions, called with what distill() gives them; losses read back as numbers.
def numbers(losses: dict) -> dict[str, float]:
    return {k: v.item() for k, v in losses.items()}


def generate(t: Training, gen, a, taps, grad):
    return steps.generate(t.up, gen, a, taps, grad)


def pix2pix_update(t: Training, a, b, fake):
    return numbers(steps.pix2pix_update(t.up, t.nets.disc_b, t.opts, t.cfg.loss, a, b, fake))


def cyclegan_update(t: Training, a, b, fake):
    return numbers(steps.cyclegan_update(t.up, t.nets, t.opts, t.task, a, b, fake))


def student_update(t: Training, a, b, teacher_out, feats):
    return numbers(steps.student_update(t.up, t.nets, t.opts.student, t.objective, a, b, teacher_out, feats))


def burst_student_step(t: Training, batch):
    return numbers(steps.burst_student_step(t.up, t.nets, t.opts, t.objective, batch))


def task_step(t: Training, batch):
    return numbers(steps.task_step(t.up, t.nets, t.opts, t.task, batch))


def joint_step(t: Training, batch, update_task):
    return numbers(steps.joint_step(t.up, t.nets, t.opts, t.task, t.objective, batch, update_task))


def batch(seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"A": torch.rand(2, 1, 32, 32, generator=g) * 2 - 1, "B": torch.rand(2, 1, 32, 32, generator=g) * 2 - 1}


def params(*nets) -> list[torch.Tensor]:
    return [p for n in nets for p in n.parameters() if p.requires_grad]


def flat(tensors) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def grad(loss: torch.Tensor, wrt: list[torch.Tensor]) -> list[torch.Tensor]:
    """d loss / d wrt, zeros for parameters the loss does not reach (e.g. student layers after the last DCD tap)."""
    grads = torch.autograd.grad(loss, wrt, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(wrt, grads)]


def assert_update_is_minus_gradient(before: list[torch.Tensor], after: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
    delta, grad = flat(b - a for b, a in zip(before, after)), flat(grads)
    assert grad.norm() > 0
    assert (delta - grad).norm() <= 1e-3 * grad.norm(), f"relative error {((delta - grad).norm() / grad.norm()).item():.3g}"


# ---------------------------------------------------------------- pix2pix


def test_pix2pix_update_weights_l1_by_lambda_recon():
    t = training("quickstart", "loss.lambda_recon=7")
    b = batch()
    gen0, disc0 = copy.deepcopy(t.nets.teacher), copy.deepcopy(t.nets.disc_b)
    before = [p.detach().clone() for p in params(t.nets.teacher)]
    fake, _ = generate(t, t.nets.teacher, b["A"], (), grad=True)
    losses = pix2pix_update(t, b["A"], b["B"], fake)

    # the discriminator step: hinge, 0.5 * (relu(1 - D(a, b)) + relu(1 + D(a, G(a)))), on the pre-update D
    with torch.no_grad():
        out0 = gen0(b["A"])
        real_pred, fake_pred = disc0(torch.cat([b["A"], b["B"]], 1)), disc0(torch.cat([b["A"], out0], 1))
    assert losses["D"] == pytest.approx(0.5 * (torch.relu(1 - real_pred).mean() + torch.relu(1 + fake_pred).mean()).item(), rel=1e-5)
    assert losses["G_L1"] == pytest.approx(l1(out0, b["B"]).item(), rel=1e-5)

    # the generator step: -mean D'(a, G(a)) + 7 |G(a) - b|, with the discriminator D' just updated
    out = gen0(b["A"])
    gan = -t.nets.disc_b(torch.cat([b["A"], out], 1)).mean()
    assert losses["G_gan"] == pytest.approx(gan.item(), rel=1e-5)
    grads = grad(gan + 7 * l1(out, b["B"]), params(gen0))
    assert_update_is_minus_gradient(before, params(t.nets.teacher), grads)
    wrong = grad(-t.nets.disc_b(torch.cat([b["A"], gen0(b["A"])], 1)).mean() + 100 * l1(gen0(b["A"]), b["B"]), params(gen0))
    assert (flat(wrong) - flat(grads)).norm() > 0.05 * flat(grads).norm()  # the weight matters at this scale


# ---------------------------------------------------------------- CycleGAN


def test_cyclegan_update_weights_cycle_and_identity():
    t = training("quickstart_unpaired", "loss.lambda_cycle=3", "loss.lambda_identity=0.25", pool_size=0)
    b = batch()
    a, real_b = b["A"], b["B"]
    g_ab, g_ba, d_a, d_b = (copy.deepcopy(n) for n in (t.nets.teacher, t.nets.gen_ba, t.nets.disc_a, t.nets.disc_b))
    before = [p.detach().clone() for p in params(t.nets.teacher, t.nets.gen_ba)]
    fake_b, _ = generate(t, t.nets.teacher, a, (), grad=True)
    losses = cyclegan_update(t, a, real_b, fake_b)

    # generators first, discriminators frozen at their pre-update weights (lsgan)
    fb, fa = g_ab(a), g_ba(real_b)
    gan_ab, gan_ba = lsgan_g(d_b(fb)), lsgan_g(d_a(fa))
    cycle = l1(g_ba(fb), a) + l1(g_ab(fa), real_b)
    identity = l1(g_ab(real_b), real_b) + l1(g_ba(a), a)
    assert losses["G_gan_AB"] == pytest.approx(gan_ab.item(), rel=1e-5)
    assert losses["G_gan_BA"] == pytest.approx(gan_ba.item(), rel=1e-5)
    assert losses["G_cycle"] == pytest.approx(cycle.item(), rel=1e-5)
    assert losses["G_idt"] == pytest.approx(identity.item(), rel=1e-5)
    grads = grad(gan_ab + gan_ba + 3 * cycle + 3 * 0.25 * identity, params(g_ab, g_ba))
    assert_update_is_minus_gradient(before, params(t.nets.teacher, t.nets.gen_ba), grads)

    # then both discriminators on the (unpooled, pool_size=0) fakes of the pre-update generators
    with torch.no_grad():
        assert losses["D_B"] == pytest.approx(lsgan_d(d_b(real_b), d_b(g_ab(a))).item(), rel=1e-5)
        assert losses["D_A"] == pytest.approx(lsgan_d(d_a(a), d_a(g_ba(real_b))).item(), rel=1e-5)


def test_cyclegan_without_identity_term():
    t = training("quickstart_unpaired", "loss.lambda_identity=0")
    b = batch()
    g_ab, g_ba, d_a, d_b = (copy.deepcopy(n) for n in (t.nets.teacher, t.nets.gen_ba, t.nets.disc_a, t.nets.disc_b))
    before = [p.detach().clone() for p in params(t.nets.teacher, t.nets.gen_ba)]
    fake_b, _ = generate(t, t.nets.teacher, b["A"], (), grad=True)
    losses = cyclegan_update(t, b["A"], b["B"], fake_b)
    assert "G_idt" not in losses
    fb, fa = g_ab(b["A"]), g_ba(b["B"])
    loss = lsgan_g(d_b(fb)) + lsgan_g(d_a(fa)) + 10 * (l1(g_ba(fb), b["A"]) + l1(g_ab(fa), b["B"]))
    assert_update_is_minus_gradient(before, params(t.nets.teacher, t.nets.gen_ba), grad(loss, params(g_ab, g_ba)))


def test_cyclegan_discriminators_see_replayed_fakes_from_the_pool():
    t = training("quickstart_unpaired", pool_size=2)
    old = torch.full((2, 1, 32, 32), 0.5)
    t.pool_a.query(old)
    t.pool_b.query(-old)  # both pools full of known earlier fakes
    b = batch()
    g_ab, g_ba, d_a, d_b = (copy.deepcopy(n) for n in (t.nets.teacher, t.nets.gen_ba, t.nets.disc_a, t.nets.disc_b))
    pool_a, pool_b = copy.deepcopy(t.pool_a), copy.deepcopy(t.pool_b)
    fake_b, _ = generate(t, t.nets.teacher, b["A"], (), grad=True)
    losses = cyclegan_update(t, b["A"], b["B"], fake_b)
    with torch.no_grad():
        fb, fa = g_ab(b["A"]), g_ba(b["B"])
        shown_b, shown_a = pool_b.query(fb), pool_a.query(fa)  # the same draws the update's pools made
    replayed = [i for i in range(2) if torch.equal(shown_b[i], -old[i])] + [i for i in range(2) if torch.equal(shown_a[i], old[i])]
    assert replayed, "with seeds 1 and 2 at least one stored fake is replayed"
    with torch.no_grad():
        assert losses["D_B"] == pytest.approx(lsgan_d(d_b(b["B"]), d_b(shown_b)).item(), rel=1e-5)
        assert losses["D_A"] == pytest.approx(lsgan_d(d_a(b["A"]), d_a(shown_a)).item(), rel=1e-5)
        fresh = lsgan_d(d_b(b["B"]), d_b(fb)).item() + lsgan_d(d_a(b["A"]), d_a(fa)).item()
    assert abs(losses["D_B"] + losses["D_A"] - fresh) > 1e-4  # the replay changed what the discriminators saw


def test_pretrained_cyclegan_teacher_trains_only_the_b_discriminator(tmp_path):
    from dcdgan.nets import build_generator
    from dcdgan.assembly import teacher_spec
    from dcdgan.weights import save_generator

    cfg = load_config("quickstart_unpaired", TINY)
    teacher_file = tmp_path / "teacher.safetensors"
    save_generator(teacher_file, build_generator(teacher_spec(cfg)), teacher_spec(cfg), {"role": "teacher"})
    t = training("quickstart_unpaired", f"model.teacher_weights={teacher_file}")
    assert t.opt_gen is None
    assert t.nets.gen_ba is None and t.nets.disc_a is None
    b = batch()
    d_b, teacher = copy.deepcopy(t.nets.disc_b), copy.deepcopy(t.nets.teacher)
    fake_b, _ = generate(t, t.nets.teacher, b["A"], (), grad=False)
    losses = cyclegan_update(t, b["A"], b["B"], fake_b)
    assert set(losses) == {"D_B"}
    with torch.no_grad():
        assert losses["D_B"] == pytest.approx(lsgan_d(d_b(b["B"]), d_b(teacher(b["A"]))).item(), rel=1e-5)
    assert all(torch.equal(p, q) for p, q in zip(teacher.parameters(), t.nets.teacher.parameters()))
    assert any(not torch.equal(p, q) for p, q in zip(d_b.parameters(), t.nets.disc_b.parameters()))


# ---------------------------------------------------------------- the student


def student_terms(t: Training, student, projector, a, b, teacher_out, teacher_feats, disc) -> dict[str, torch.Tensor]:
    """The student objective's terms from the spec, on copies of the networks."""
    d = t.cfg.distill
    terms = {}
    out, feats = tap_outputs(student, list(t.taps.student) if t.taps else [], a)
    if t.vgg is not None:
        vs, vt = t.vgg(out), t.vgg(teacher_out)

        def gram(f):
            b, c, h, w = f.shape
            f = f.reshape(b, c, h * w)
            return f @ f.transpose(1, 2) / (c * h * w)

        terms["style"] = d.lambda_style * sum((gram(s) - gram(q)).abs().mean() for s, q in zip(vs, vt))
        terms["feat"] = d.lambda_feat * (vs[1] - vt[1]).abs().mean()
    if t.pixel_weight:
        terms["pixel"] = t.pixel_weight * l1(out, teacher_out)
    if d.lambda_target:
        terms["target"] = d.lambda_target * l1(out, b)
    if t.taps is not None:
        terms["dcd"] = d.lambda_dcd * dcd_by_hand(disc, t.taps.disc, projector, teacher_feats, feats, t.taps.pairs(), t.taps.min_size)
    if d.student_gan_weight:
        terms["gan"] = d.student_gan_weight * -disc(torch.cat([a, out], 1)).mean()
    return terms


def test_student_objective_weights_every_term():
    vgg = VGGPerceptual(vgg16_features(), "torchvision")  # random weights: the formula, not the features, is under test
    t = training("quickstart", "distill.lambda_dcd=0.3", "distill.lambda_style=2000", "distill.lambda_feat=4",
                 "distill.student_gan_weight=0.7", "distill.lambda_target=3", pixel_weight=5.0, vgg=vgg)
    b = batch()
    teacher_out, feats = generate(t, t.nets.teacher, b["A"], t.taps.teacher, grad=False)
    student, projector = copy.deepcopy(t.nets.student), copy.deepcopy(t.nets.projector)
    before = [p.detach().clone() for p in params(t.nets.student, t.nets.projector)]
    losses = student_update(t, b["A"], b["B"], teacher_out, feats)
    with torch.no_grad():
        teacher_out_by_hand, teacher_feats = tap_outputs(t.nets.teacher, list(t.taps.teacher), b["A"])
    terms = student_terms(t, student, projector, b["A"], b["B"], teacher_out_by_hand, teacher_feats, t.nets.disc_b)
    assert set(losses) == {"S_style", "S_feat", "S_pixel", "S_target", "S_dcd", "S_gan"}
    for name, value in terms.items():
        assert losses[f"S_{name}"] == pytest.approx(value.item(), rel=1e-4), name
    grads = grad(sum(terms.values()), params(student, projector))
    assert_update_is_minus_gradient(before, params(t.nets.student, t.nets.projector), grads)


@pytest.mark.parametrize("lambda_dcd", [0.1, 1.0])
def test_dcd_term_is_scaled_by_lambda_dcd(lambda_dcd):
    t = training("quickstart_unpaired", f"distill.lambda_dcd={lambda_dcd}")  # DCD alone: no VGG, no pixel, no GAN
    b = batch()
    teacher_out, feats = generate(t, t.nets.teacher, b["A"], t.taps.teacher, grad=False)
    student, projector = copy.deepcopy(t.nets.student), copy.deepcopy(t.nets.projector)
    before = [p.detach().clone() for p in params(t.nets.student, t.nets.projector)]
    losses = student_update(t, b["A"], b["B"], teacher_out, feats)
    with torch.no_grad():
        _, t_feats = tap_outputs(t.nets.teacher, list(t.taps.teacher), b["A"])
    _, s_feats = tap_outputs(student, list(t.taps.student), b["A"])
    raw = dcd_by_hand(t.nets.disc_b, t.taps.disc, projector, t_feats, s_feats, t.taps.pairs(), t.taps.min_size)
    assert set(losses) == {"S_dcd"}
    assert losses["S_dcd"] == pytest.approx(lambda_dcd * raw.item(), rel=1e-5)
    grads = grad(lambda_dcd * raw, params(student, projector))
    assert_update_is_minus_gradient(before, params(t.nets.student, t.nets.projector), grads)


def perturbed(net: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)


def test_burst_student_step_learns_from_the_snapshot_not_the_live_teacher():
    t = training("quickstart_unpaired", "distill.schedule=burst", pixel_weight=1.0)
    perturbed(t.nets.teacher, 3)  # the live teacher moved on after the snapshot was taken
    a = batch()["A"]
    student0, projector0, snapshot0, live0 = (copy.deepcopy(n) for n in (t.nets.student, t.nets.projector, t.nets.snapshot, t.nets.teacher))
    losses = burst_student_step(t, {"A": a})
    with torch.no_grad():
        snap_out, snap_feats = tap_outputs(snapshot0, list(t.taps.teacher), a)
        s_out, s_feats = tap_outputs(student0, list(t.taps.student), a)
        live_out = live0(a)
        dcd = t.cfg.distill.lambda_dcd * dcd_by_hand(t.nets.disc_b, t.taps.disc, projector0, snap_feats, s_feats, t.taps.pairs(), t.taps.min_size)
    assert losses["S_pixel"] == pytest.approx(l1(s_out, snap_out).item(), rel=1e-5)
    assert abs(losses["S_pixel"] - l1(s_out, live_out).item()) > 1e-3
    assert losses["S_dcd"] == pytest.approx(dcd.item(), rel=1e-4)
    assert all(torch.equal(p, q) for p, q in zip(snapshot0.state_dict().values(), t.nets.snapshot.state_dict().values()))
    assert all(torch.equal(p, q) for p, q in zip(live0.state_dict().values(), t.nets.teacher.state_dict().values()))


def test_joint_step_student_learns_from_the_pre_update_teacher():
    t = training("quickstart", pixel_weight=1.0)
    b = batch()
    student0, teacher0 = copy.deepcopy(t.nets.student), copy.deepcopy(t.nets.teacher)
    losses = joint_step(t, b, update_task=True)
    with torch.no_grad():
        assert losses["S_pixel"] == pytest.approx(l1(student0(b["A"]), teacher0(b["A"])).item(), rel=1e-5)
    assert {"D", "G_gan", "G_L1"} <= set(losses)
    assert any(not torch.equal(p, q) for p, q in zip(teacher0.parameters(), t.nets.teacher.parameters()))


def test_joint_step_without_task_update_leaves_the_task_networks_alone():
    t = training("quickstart", pixel_weight=1.0)
    teacher0, disc0 = copy.deepcopy(t.nets.teacher), copy.deepcopy(t.nets.disc_b)
    losses = joint_step(t, batch(), update_task=False)
    assert set(losses) == {"S_pixel", "S_dcd"}
    assert all(torch.equal(p, q) for p, q in zip(teacher0.state_dict().values(), t.nets.teacher.state_dict().values()))
    assert all(torch.equal(p, q) for p, q in zip(disc0.state_dict().values(), t.nets.disc_b.state_dict().values()))


def test_task_step_trains_the_task_networks_only():
    t = training("quickstart", "loss.lambda_recon=7", pixel_weight=1.0)
    b = batch()
    gen0, disc0, student0 = (copy.deepcopy(n) for n in (t.nets.teacher, t.nets.disc_b, t.nets.student))
    before = [p.detach().clone() for p in params(t.nets.teacher)]
    losses = task_step(t, b)
    assert set(losses) == {"D", "G_gan", "G_L1"}
    with torch.no_grad():
        out0 = gen0(b["A"])
        assert losses["D"] == pytest.approx(0.5 * (torch.relu(1 - disc0(torch.cat([b["A"], b["B"]], 1))).mean()
                                                   + torch.relu(1 + disc0(torch.cat([b["A"], out0], 1))).mean()).item(), rel=1e-5)
    out = gen0(b["A"])
    loss = -t.nets.disc_b(torch.cat([b["A"], out], 1)).mean() + 7 * l1(out, b["B"])
    assert_update_is_minus_gradient(before, params(t.nets.teacher), grad(loss, params(gen0)))
    assert all(torch.equal(p, q) for p, q in zip(student0.state_dict().values(), t.nets.student.state_dict().values()))


def frozen_teacher(tmp_path) -> str:
    """A saved quickstart teacher (TINY widths); the override that loads it, frozen."""
    from dcdgan.assembly import teacher_spec
    from dcdgan.nets import build_generator
    from dcdgan.weights import save_generator

    spec = teacher_spec(load_config("quickstart", TINY))
    save_generator(tmp_path / "t.safetensors", build_generator(spec), spec, {"role": "teacher"})
    return f"model.teacher_weights={tmp_path / 't.safetensors'}"


def quickstart_discriminator(ndf: int, seed: int) -> torch.nn.Module:
    """A freshly initialised discriminator shaped for the quickstart (conditional: 2 input channels)."""
    from dcdgan.nets.discriminators import build_discriminator

    torch.manual_seed(seed)
    return build_discriminator(2, ndf, 3)


def test_pretrained_teacher_discriminator_is_loaded_and_keeps_training(tmp_path):
    teacher = frozen_teacher(tmp_path)
    trained_d = quickstart_discriminator(8, seed=123)
    # the public code's layout: a .pth state dict saved from DataParallel (``module.`` prefix)
    torch.save({f"module.{k}": v for k, v in trained_d.state_dict().items()}, tmp_path / "latest_net_D.pth")
    t = training("quickstart", teacher, f"model.teacher_disc_weights={tmp_path / 'latest_net_D.pth'}")
    loaded = t.nets.disc_b.state_dict()
    assert loaded.keys() == trained_d.state_dict().keys()
    assert all(torch.equal(loaded[k], v) for k, v in trained_d.state_dict().items())
    scratch = training("quickstart", teacher).nets.disc_b.state_dict()
    assert not torch.equal(scratch["model.0.weight"], loaded["model.0.weight"])  # without the option: from scratch
    before = copy.deepcopy(t.nets.disc_b)
    task_step(t, batch())
    assert any(not torch.equal(p, q) for p, q in zip(before.parameters(), t.nets.disc_b.parameters()))


def test_pretrained_teacher_discriminator_of_another_width_is_refused_in_one_line(tmp_path):
    teacher = frozen_teacher(tmp_path)
    torch.save(quickstart_discriminator(16, seed=0).state_dict(), tmp_path / "d.pth")
    with pytest.raises(UserError) as err:
        training("quickstart", teacher, f"model.teacher_disc_weights={tmp_path / 'd.pth'}")
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'd.pth'}: does not fit the configured discriminator (size mismatch for model.0.weight")
    assert "\n" not in message


def test_pretrained_teacher_batchnorm_discriminator_is_refused_in_one_line(tmp_path):
    from dcdgan.nets.discriminators import build_discriminator

    teacher = frozen_teacher(tmp_path)
    torch.save(build_discriminator(2, 8, 3, norm="batch").state_dict(), tmp_path / "latest_net_D.pth")  # pix2pix's default D
    with pytest.raises(UserError) as err:
        training("quickstart", teacher, f"model.teacher_disc_weights={tmp_path / 'latest_net_D.pth'}")
    assert str(err.value) == f"{tmp_path / 'latest_net_D.pth'}: does not fit the configured discriminator: missing 3 keys (e.g. model.2.bias); 6 unexpected keys (e.g. model.3.weight)"


def test_pretrained_teacher_discriminator_from_a_dcdgan_checkpoint(tmp_path):
    from dcdgan.checkpoint import save_checkpoint

    teacher = frozen_teacher(tmp_path)
    trained_d = quickstart_discriminator(8, seed=7)
    save_checkpoint(tmp_path / "best.ckpt", {"networks": {"disc_b": trained_d.state_dict(), "gen_ab": {}}})
    loaded = training("quickstart", teacher, f"model.teacher_disc_weights={tmp_path / 'best.ckpt'}").nets.disc_b.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in trained_d.state_dict().items())
    for name, state in {"no_d.ckpt": {"networks": {"gen_ab": {}}}, "no_networks.ckpt": {"step": 3}}.items():
        save_checkpoint(tmp_path / name, state)
        with pytest.raises(UserError, match=rf"{name}: the checkpoint holds no discriminator of B$"):
            training("quickstart", teacher, f"model.teacher_disc_weights={tmp_path / name}")
    save_checkpoint(tmp_path / "wide.ckpt", {"networks": {"disc_b": quickstart_discriminator(16, seed=0).state_dict()}})
    with pytest.raises(UserError) as err:
        training("quickstart", teacher, f"model.teacher_disc_weights={tmp_path / 'wide.ckpt'}")
    assert str(err.value).startswith(f"{tmp_path / 'wide.ckpt'}: does not fit the configured discriminator (size mismatch for model.0.weight")


def test_task_step_with_a_frozen_teacher_trains_the_discriminator_only(tmp_path):
    from dcdgan.nets import build_generator
    from dcdgan.assembly import teacher_spec
    from dcdgan.weights import save_generator

    cfg = load_config("quickstart", TINY)
    save_generator(tmp_path / "t.safetensors", build_generator(teacher_spec(cfg)), teacher_spec(cfg), {"role": "teacher"})
    t = training("quickstart", f"model.teacher_weights={tmp_path / 't.safetensors'}")
    teacher0 = copy.deepcopy(t.nets.teacher)
    losses = task_step(t, batch())
    assert set(losses) == {"D"} and t.opt_gen is None
    assert all(torch.equal(p, q) for p, q in zip(teacher0.state_dict().values(), t.nets.teacher.state_dict().values()))
