"""Single optimisation steps: what each one may and may not change."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from accelerate import Accelerator

from conftest import REFERENCE_STUDENT, l1, lsgan_d, lsgan_g

from dcdgan.assembly import build_networks, dcd_taps
from dcdgan.config import load_config
from dcdgan.errors import UserError
from dcdgan.nets.discriminators import build_discriminator
from dcdgan.pool import ImagePool
from dcdgan.steps import (
    NonFiniteUpdate,
    Optimizers,
    StudentObjective,
    TaskObjective,
    Updater,
    detached,
    generate,
    judge_pair,
    pix2pix_update,
    student_update,
    task_step,
)
from dcdgan.tasks import CYCLEGAN

TINY = ["model.teacher_ngf=8", "model.student_ngf=4", "model.ndf=8", *REFERENCE_STUDENT]


class Training:
    """The pieces a step takes, built the way distill() builds them (tiny quickstart, pixel stand-in for VGG)."""

    def __init__(self, *overrides: str):
        self.cfg = cfg = load_config("quickstart", [*TINY, *overrides])
        torch.manual_seed(0)
        self.nets = nets = build_networks(cfg)
        adam = lambda *mods: torch.optim.Adam([p for m in mods for p in m.parameters() if p.requires_grad], lr=1e-3)  # noqa: E731
        self.opts = Optimizers(disc=adam(nets.disc_b), gen=adam(nets.teacher), student=adam(nets.student, nets.projector))
        self.up = Updater(Accelerator(cpu=True))
        self.taps = dcd_taps(cfg.distill)
        self.objective = StudentObjective(cfg.distill, cfg.loss.gan_mode, True, vgg=None, pixel_weight=10.0, taps=self.taps)


def training(*overrides: str) -> Training:
    return Training(*overrides)


def batch() -> dict:
    torch.manual_seed(1)
    return {"A": torch.rand(2, 1, 32, 32) * 2 - 1, "B": torch.rand(2, 1, 32, 32) * 2 - 1}


def snapshot(net: torch.nn.Module) -> dict:
    return copy.deepcopy(net.state_dict())


def changed(before: dict, net: torch.nn.Module) -> set[str]:
    return {k for k, v in net.state_dict().items() if not torch.equal(v, before[k])}


def test_student_step_leaves_discriminator_and_teacher_unchanged():
    t = training("distill.student_gan_weight=1.0")
    b = batch()
    fake, feats = generate(t.up, t.nets.teacher, b["A"], t.taps.teacher, grad=False)
    disc, teacher, student, projector = (snapshot(n) for n in (t.nets.disc_b, t.nets.teacher, t.nets.student, t.nets.projector))
    losses = student_update(t.up, t.nets, t.opts.student, t.objective, b["A"], b["B"], fake, feats)
    assert set(losses) == {"S_pixel", "S_dcd", "S_gan"}  # S_gan is hinge's -mean D(fake): any sign
    assert losses["S_pixel"] > 0 and losses["S_dcd"] > 0
    assert not changed(disc, t.nets.disc_b) and not changed(teacher, t.nets.teacher)
    assert all(p.grad is None for p in t.nets.disc_b.parameters())  # frozen during the step, not just zeroed
    assert all(p.requires_grad for p in t.nets.disc_b.parameters())  # and trainable again afterwards
    assert changed(student, t.nets.student)
    moved = changed(projector, t.nets.projector)
    assert moved and all(k.startswith("student.") for k in moved)  # teacher connectors stay at their init
    assert not any(k.startswith("teacher.") and "running" in k for k in moved)


def test_pix2pix_update_trains_disc_and_teacher_but_not_the_student():
    t = training()
    b = batch()
    fake, _ = generate(t.up, t.nets.teacher, b["A"], (), grad=True)
    disc, teacher, student = (snapshot(n) for n in (t.nets.disc_b, t.nets.teacher, t.nets.student))
    losses = pix2pix_update(t.up, t.nets.disc_b, t.opts, t.cfg.loss, b["A"], b["B"], fake)
    assert set(losses) == {"D", "G_gan", "G_L1"}
    assert changed(disc, t.nets.disc_b) and changed(teacher, t.nets.teacher) and not changed(student, t.nets.student)


# ---------------------------------------------------------------- Updater, Optimizers, detached


def test_updater_zeroes_then_steps_on_the_sum_and_records_the_terms():
    p = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    p.grad = torch.tensor([100.0, 100.0])  # left over from elsewhere: zero_grad must drop it
    up = Updater(Accelerator(cpu=True))
    up(torch.optim.SGD([p], lr=1.0), {"a": 2 * p.sum(), "b": (3 * p.sum()).to(torch.bfloat16)})
    assert torch.equal(p.detach(), torch.tensor([-4.0, -3.0]))  # gradient of 2 sum + 3 sum is 5 per element
    applied = up.applied()
    assert applied == {"a": 6.0, "b": 9.0}
    assert all(v.dtype == torch.float32 and not v.requires_grad for v in applied.values())
    assert up.applied() == {}  # emptied by reading
    up(torch.optim.SGD([p], lr=0.0), {"a": p.sum()})
    up(torch.optim.SGD([p], lr=0.0), {"c": p.sum() * 0})
    assert up.applied() == {"a": -7.0, "c": 0.0}  # every update since the last read, latest value per name


def test_updater_in_skip_mode_refuses_nonfinite_terms_before_changing_anything():
    p = torch.nn.Parameter(torch.tensor([1.0]))
    up = Updater(Accelerator(cpu=True), skip_nonfinite=True)
    assert (Updater(Accelerator(cpu=True)).skip_nonfinite, up.skip_nonfinite) == (False, True)
    terms = {"a": p.sum(), "b": p.sum() * float("nan"), "c": p.sum() * float("inf"), "d": -p.sum() * float("inf")}
    with pytest.raises(NonFiniteUpdate) as err:
        up(torch.optim.SGD([p], lr=1.0), terms)
    assert err.value.terms == ["b", "c", "d"] and str(err.value) == "b, c, d"
    assert isinstance(err.value, RuntimeError)
    assert p.item() == 1.0 and p.grad is None and up.applied() == {}
    up(torch.optim.SGD([p], lr=1.0), {"a": p.sum()})  # finite: applied
    assert p.item() == 0.0 and up.applied() == {"a": 1.0}
    up.check_finite({"x": torch.tensor(1e30, dtype=torch.float64)})  # finite in float32 too: no error
    with pytest.raises(NonFiniteUpdate, match="^x$"):
        up.check_finite({"x": torch.tensor(1e300, dtype=torch.float64)})  # overflows the float32 check: refused


def test_updater_drops_old_gradients_so_adam_leaves_unused_parameters_alone():
    p, q = torch.nn.Parameter(torch.tensor([1.0])), torch.nn.Parameter(torch.tensor([1.0]))
    adam, up = torch.optim.Adam([p, q], lr=0.1), Updater(Accelerator(cpu=True))
    up(adam, {"both": p.sum() + q.sum()})
    q_after_first = q.item()
    up(adam, {"p only": p.sum()})
    assert q.grad is None and q.item() == q_after_first  # a zero gradient would still move q by Adam's momentum


def test_generate_names_the_teacher_generator_for_a_wrong_tap():
    t = training()
    with pytest.raises(UserError, match="^teacher generator: no module at model.99"):
        generate(t.up, t.nets.teacher, batch()["A"], ("model.99",), grad=False)


def test_updater_without_skip_applies_a_nonfinite_update():
    p = torch.nn.Parameter(torch.tensor([1.0]))
    up = Updater(Accelerator(cpu=True))
    up(torch.optim.SGD([p], lr=1.0), {"b": p.sum() * float("nan")})
    assert p.isnan().all() and up.applied()["b"].isnan()


def test_updater_unwraps_wrappers_and_gives_the_accelerators_autocast():
    accelerator = Accelerator(cpu=True)
    up = Updater(accelerator)
    net = torch.nn.Linear(2, 2)
    assert up.accelerator is accelerator
    assert up.unwrap(net) is net and up.unwrap(torch.nn.DataParallel(net)) is net
    with up.autocast():
        assert (net(torch.ones(1, 2))).dtype == torch.float32  # no mixed precision on this accelerator


def test_optimizers_named_lists_the_present_ones_under_checkpoint_keys():
    adam = lambda: torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])  # noqa: E731
    disc, gen, student = adam(), adam(), adam()
    assert Optimizers(disc, gen, student).named() == {"disc": disc, "gen": gen, "student": student}
    assert list(Optimizers(disc, None, student).named().items()) == [("disc", disc), ("student", student)]
    assert Optimizers(disc, gen, None).named() == {"disc": disc, "gen": gen}
    own = adam()
    assert Optimizers(disc, None, student, own).named() == {"disc": disc, "student": student, "student_disc": own}


def test_detached_gives_fp32_tensors_without_graph():
    x = torch.tensor(1.5, requires_grad=True)
    out = detached({"a": (x * 2).to(torch.bfloat16), "b": x + 1})
    assert out == {"a": 3.0, "b": 2.5}
    assert all(v.dtype == torch.float32 and not v.requires_grad and v.grad_fn is None for v in out.values())


# ---------------------------------------------------------------- the CycleGAN task update through task_step


def cyclegan(*overrides: str):
    cfg = load_config("quickstart_unpaired", [*TINY, "distill.method=none", *overrides])
    torch.manual_seed(0)
    nets = build_networks(cfg)
    adam = lambda *mods: torch.optim.Adam([p for m in mods for p in m.parameters()], lr=1e-3)  # noqa: E731
    opts = Optimizers(disc=adam(nets.disc_a, nets.disc_b), gen=adam(nets.baseline, nets.gen_ba), student=None)
    task = TaskObjective(CYCLEGAN, cfg.loss, ImagePool(cfg.loss.pool_size, 1), ImagePool(cfg.loss.pool_size, 2))
    return nets, opts, task


def test_cyclegan_task_step_losses_and_weights_match_the_plain_formulas():
    nets, opts, task = cyclegan("loss.lambda_cycle=3", "loss.lambda_identity=0.25")
    b = batch()
    a, real_b = b["A"], b["B"]
    g_ab, g_ba, d_a, d_b = (copy.deepcopy(n) for n in (nets.baseline, nets.gen_ba, nets.disc_a, nets.disc_b))
    with torch.no_grad():
        fake_b, fake_a = g_ab(a), g_ba(real_b)
        cycle = l1(g_ba(fake_b), a) + l1(g_ab(fake_a), real_b)
        identity = l1(g_ab(real_b), real_b) + l1(g_ba(a), a)
        expected = {"G_gan_AB": lsgan_g(d_b(fake_b)), "G_gan_BA": lsgan_g(d_a(fake_a)), "G_cycle": cycle, "G_idt": identity,
                    "D_A": lsgan_d(d_a(a), d_a(fake_a)), "D_B": lsgan_d(d_b(real_b), d_b(fake_b))}  # the pools are filling: fakes pass
    before = {name: snapshot(net) for name, net in nets.named().items()}
    up = Updater(Accelerator(cpu=True))
    losses = task_step(up, nets, opts, task, b)
    assert set(losses) == set(expected)
    for name, value in expected.items():
        assert losses[name].item() == pytest.approx(value.item(), rel=1e-5), name
    applied = up.applied()  # the weighted terms the optimizers saw
    weights = {"G_cycle": 3, "G_idt": 3 * 0.25}
    assert set(applied) == set(expected)
    for name, value in expected.items():
        assert applied[name].item() == pytest.approx(weights.get(name, 1) * value.item(), rel=1e-5), name
    for net, copy_ in ((nets.disc_a, d_a), (nets.disc_b, d_b)):  # the generators' backward left the discriminators alone
        copy_.zero_grad()
    lsgan_d(d_a(a), d_a(fake_a)).backward()
    lsgan_d(d_b(real_b), d_b(fake_b)).backward()
    for net, copy_ in ((nets.disc_a, d_a), (nets.disc_b, d_b)):
        assert all(torch.allclose(p.grad, q.grad, atol=1e-6) for p, q in zip(net.parameters(), copy_.parameters()))
    assert all(changed(before[name], net) for name, net in nets.named().items())
    assert len(task.pool_a.images) == len(task.pool_b.images) == 2
    assert torch.allclose(torch.cat(task.pool_b.images), fake_b, atol=1e-6)


def test_cyclegan_without_identity_has_no_identity_term():
    nets, opts, task = cyclegan("loss.lambda_identity=0")
    losses = task_step(Updater(Accelerator(cpu=True)), nets, opts, task, batch())
    assert set(losses) == {"G_gan_AB", "G_gan_BA", "G_cycle", "D_A", "D_B"}


def test_cyclegan_with_a_frozen_teacher_trains_only_the_b_discriminator():
    nets, _, task = cyclegan()
    nets.gen_ba = nets.disc_a = None  # what a pretrained teacher assembles: no B->A side
    nets.baseline.requires_grad_(False)
    opts = Optimizers(disc=torch.optim.Adam(nets.disc_b.parameters(), lr=1e-3), gen=None, student=None)
    b = batch()
    d_b, g_ab = copy.deepcopy(nets.disc_b), copy.deepcopy(nets.baseline)
    with torch.no_grad():
        expected = lsgan_d(d_b(b["B"]), d_b(g_ab(b["A"])))
    before = snapshot(nets.disc_b)
    up = Updater(Accelerator(cpu=True))
    losses = task_step(up, nets, opts, task, b)
    assert list(up.applied()) == ["D_B"]
    assert list(losses) == ["D_B"] and losses["D_B"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert changed(before, nets.disc_b) and not changed(snapshot(g_ab), nets.baseline)
    assert len(task.pool_b.images) == 2 and task.pool_a.images == []


# ---------------------------------------------------------------- what the updates hand to the optimizers


def test_pix2pix_update_weights_l1_and_keeps_generator_gradients_out_of_the_discriminator():
    t = training("loss.lambda_recon=7")
    b = batch()
    fake, _ = generate(t.up, t.nets.teacher, b["A"], (), grad=True)
    d = copy.deepcopy(t.nets.disc_b)
    loss_d = 0.5 * (torch.relu(1 - d(torch.cat([b["A"], b["B"]], 1))).mean() + torch.relu(1 + d(torch.cat([b["A"], fake.detach()], 1))).mean())
    loss_d.backward()  # hinge, by hand: the gradient the discriminator's update must have used, and nothing more
    losses = pix2pix_update(t.up, t.nets.disc_b, t.opts, t.cfg.loss, b["A"], b["B"], fake)
    applied = t.up.applied()
    assert set(applied) == {"D", "G_gan", "G_L1"}
    assert applied["D"].item() == pytest.approx(loss_d.item(), rel=1e-6) == losses["D"].item()
    assert applied["G_gan"].item() == losses["G_gan"].item()
    assert applied["G_L1"].item() == pytest.approx(7 * l1(fake, b["B"]).item(), rel=1e-6)
    assert losses["G_L1"].item() == pytest.approx(l1(fake, b["B"]).item(), rel=1e-6)
    # The generator's backward added nothing. Not bit-equal: the update reads real and fake pairs in one batch-2 pass
    # (steps.judge_pair), whose convolutions sum in another order than the two passes above, so the gradients differ by
    # float32 rounding, relative to the largest gradient of the network (the biases before an InstanceNorm have a
    # gradient that is zero but for that rounding); a leaked generator gradient would be of the size of the gradients.
    scale = max(q.grad.abs().max().item() for q in d.parameters())
    for (name, p), q in zip(t.nets.disc_b.named_parameters(), d.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-5 * scale), name


def unconditional_student(*overrides: str):
    """A CycleGAN DCD assembly whose student learns from pixels and the GAN term only (no DCD taps)."""
    cfg = load_config("quickstart_unpaired", [*TINY, *overrides])
    torch.manual_seed(0)
    nets = build_networks(cfg)
    opts = Optimizers(disc=torch.optim.Adam(nets.disc_b.parameters()), gen=None, student=torch.optim.Adam(nets.student.parameters(), lr=1e-3))
    objective = StudentObjective(cfg.distill, "lsgan", False, vgg=None, pixel_weight=2.0, taps=None)
    return cfg, nets, opts, objective


def test_unconditional_student_update_without_taps_matches_the_plain_formula():
    cfg, nets, opts, objective = unconditional_student("distill.student_gan_weight=3")
    b = batch()
    teacher_out = torch.rand(2, 1, 32, 32)
    s, d = copy.deepcopy(nets.student), copy.deepcopy(nets.disc_b)
    with torch.no_grad():
        out = s(b["A"])
        expected = {"S_pixel": 2.0 * l1(out, teacher_out), "S_gan": 3 * lsgan_g(d(out))}  # the discriminator reads the image alone
    losses = student_update(Updater(Accelerator(cpu=True)), nets, opts.student, objective, b["A"], b["B"], teacher_out, {})
    assert set(losses) == set(expected)
    for name, value in expected.items():
        assert losses[name].item() == pytest.approx(value.item(), rel=1e-5), name


def test_joint_and_burst_steps_without_taps_train_the_student_from_the_teacher_output():
    cfg, nets, opts, objective = unconditional_student()
    nets.snapshot = copy.deepcopy(nets.teacher).requires_grad_(False)
    b = batch()
    task = TaskObjective(CYCLEGAN, cfg.loss, ImagePool(0, 1), ImagePool(0, 2))
    from dcdgan.steps import burst_student_step, joint_step

    s = copy.deepcopy(nets.student)
    with torch.no_grad():
        expected = 2.0 * l1(s(b["A"]), nets.teacher(b["A"]))
    losses = joint_step(Updater(Accelerator(cpu=True)), nets, opts, task, objective, b, update_task=False)
    assert list(losses) == ["S_pixel"] and losses["S_pixel"].item() == pytest.approx(expected.item(), rel=1e-5)
    nets.snapshot.model[-2].weight.data.zero_()  # a snapshot that differs from the teacher: the burst step must use it
    s = copy.deepcopy(nets.student)
    with torch.no_grad():
        expected = 2.0 * l1(s(b["A"]), nets.snapshot(b["A"]))
    losses = burst_student_step(Updater(Accelerator(cpu=True)), nets, opts, objective, b)
    assert list(losses) == ["S_pixel"] and losses["S_pixel"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_joint_step_adds_the_l1_to_the_real_target_when_lambda_target_is_set():
    paired = ["data.root=builtin:shoes_paired", "data.mode=paired", "distill.lambda_target=1"]
    cfg, nets, opts, objective = unconditional_student(*paired)
    b = batch()
    task = TaskObjective(CYCLEGAN, cfg.loss, ImagePool(0, 1), ImagePool(0, 2))
    from dcdgan.steps import joint_step

    s = copy.deepcopy(nets.student)
    out = s(b["A"])
    with torch.no_grad():
        teacher_out = nets.teacher(b["A"])
    expected = {"S_pixel": 2.0 * l1(out, teacher_out), "S_target": 1.0 * l1(out, b["B"])}
    losses = joint_step(Updater(Accelerator(cpu=True)), nets, opts, task, objective, b, update_task=False)
    assert set(losses) == set(expected)
    for name, value in expected.items():
        assert losses[name].item() == pytest.approx(value.item(), rel=1e-5), name
    sum(expected.values()).backward()
    grads = [p.grad.clone() for p in s.parameters()]
    torch.optim.Adam(s.parameters(), lr=1e-3).step()  # both L1 terms reach the student: the same update
    for (name, expected_p), after, g in zip(s.named_parameters(), nets.student.parameters(), grads):
        clear = g.abs() > 1e-6  # biases before an InstanceNorm get rounding noise, whose sign Adam's first step amplifies
        assert clear.any() or name.endswith("bias"), name
        assert torch.allclose(after[clear], expected_p[clear], atol=1e-6), name


def test_student_gan_term_reads_the_students_own_discriminator_which_then_learns_from_its_fakes():
    t = training("distill.student_gan_weight=2", "distill.student_gan_disc=own", "loss.gan_mode=lsgan")
    own = t.nets.student_disc
    own_opt = torch.optim.Adam(own.parameters(), lr=1e-3)
    objective = dataclasses.replace(t.objective, taps=None, own_pool=ImagePool(0, 3))
    b = batch()
    teacher_out = torch.rand(2, 1, 32, 32) * 2 - 1
    s, d, task_d = copy.deepcopy(t.nets.student), copy.deepcopy(own), snapshot(t.nets.disc_b)
    out = s(b["A"])
    expected_s = {"S_pixel": 10.0 * l1(out, teacher_out), "S_gan": 2 * lsgan_g(d(torch.cat([b["A"], out], 1)))}
    expected_d = lsgan_d(d(torch.cat([b["A"], b["B"]], 1)), d(torch.cat([b["A"], out.detach()], 1)))
    losses = student_update(t.up, t.nets, t.opts.student, objective, b["A"], b["B"], teacher_out, {}, own_opt)
    assert set(losses) == {"S_pixel", "S_gan", "D_S"}
    for name, value in expected_s.items():
        assert losses[name].item() == pytest.approx(value.item(), rel=1e-5), name
    assert losses["D_S"].item() == pytest.approx(expected_d.item(), rel=1e-5)
    assert set(t.up.applied()) == {"S_pixel", "S_gan", "D_S"}  # the update is logged under its name too
    assert not changed(task_d, t.nets.disc_b)  # the teacher's discriminator is neither read for the GAN term nor trained
    # the student's update came through its own discriminator, and that discriminator's only from its own loss
    for net, copy_, loss in ((t.nets.student, s, sum(expected_s.values())), (own, d, expected_d)):
        before = snapshot(copy_)  # the network as it was before the update
        grads = torch.autograd.grad(loss, list(copy_.parameters()))
        with torch.no_grad():
            for p, g in zip(copy_.parameters(), grads):
                p.grad = g
        torch.optim.Adam(copy_.parameters(), lr=1e-3).step()
        clear = [g.abs() > 1e-6 for g in grads]  # biases before an InstanceNorm get rounding noise (Adam amplifies its sign)
        for (name, expected_p), after, keep in zip(copy_.named_parameters(), net.parameters(), clear):
            assert torch.allclose(after[keep], expected_p[keep], atol=1e-6), name
        assert changed(before, net)


def test_unconditional_own_discriminator_reads_b_images_alone_and_needs_its_optimizer_b_and_pool():
    cfg, nets, opts, objective = unconditional_student("distill.student_gan_weight=1", "distill.student_gan_disc=own")
    own_opt = torch.optim.Adam(nets.student_disc.parameters(), lr=1e-3)
    b = batch()
    teacher_out = torch.rand(2, 1, 32, 32)
    d = copy.deepcopy(nets.student_disc)
    with torch.no_grad():
        out = copy.deepcopy(nets.student)(b["A"])
        expected = lsgan_d(d(b["B"]), d(out))  # CycleGAN: the image alone, no A beside it
    objective = dataclasses.replace(objective, own_pool=ImagePool(0, 3))
    losses = student_update(Updater(Accelerator(cpu=True)), nets, opts.student, objective, b["A"], b["B"], teacher_out, {}, own_opt)
    assert losses["D_S"].item() == pytest.approx(expected.item(), rel=1e-5)
    from dcdgan.steps import joint_step

    task = TaskObjective(CYCLEGAN, cfg.loss, ImagePool(0, 1), ImagePool(0, 2))  # the interleaved step hands over its optimizer
    own_d = copy.deepcopy(nets.student_disc)
    losses = joint_step(Updater(Accelerator(cpu=True)), nets, dataclasses.replace(opts, student_disc=own_opt), task, objective, b, update_task=False)
    assert set(losses) == {"S_pixel", "S_gan", "D_S"} and changed(snapshot(own_d), nets.student_disc)
    missing = "distill.student_gan_disc=own: the student's discriminator needs its optimizer, real B images and an image pool"
    for opt_, real_b, pool in ((None, b["B"], ImagePool(0, 3)), (own_opt, None, ImagePool(0, 3)), (own_opt, b["B"], None)):
        with pytest.raises(ValueError, match=missing):
            student_update(Updater(Accelerator(cpu=True)), nets, opts.student, dataclasses.replace(objective, own_pool=pool),
                           b["A"], real_b, teacher_out, {}, opt_)


def test_student_update_names_the_student_generator_for_a_wrong_tap():
    t = training()
    bad = StudentObjective(t.cfg.distill, t.cfg.loss.gan_mode, True, vgg=None, pixel_weight=1.0,
                           taps=dataclasses.replace(t.taps, student=("model.99",) * len(t.taps.student)))
    b = batch()
    with pytest.raises(UserError, match="^student generator: no module at model.99"):
        student_update(t.up, t.nets, t.opts.student, bad, b["A"], b["B"], torch.zeros(2, 1, 32, 32), {})


def test_dcd_alone_under_several_processes_keeps_every_student_layer_in_the_graph(monkeypatch):
    """DDP needs a gradient for every parameter: with DCD the only term, the student's output joins the loss at weight 0."""
    t = training("distill.student_gan_weight=0")
    objective = StudentObjective(t.cfg.distill, t.cfg.loss.gan_mode, True, vgg=None, pixel_weight=0.0, taps=t.taps)
    b = batch()
    fake, feats = generate(t.up, t.nets.teacher, b["A"], t.taps.teacher, grad=False)
    twin = copy.deepcopy(t)
    single = student_update(t.up, t.nets, t.opts.student, objective, b["A"], b["B"], fake, feats)
    no_grad_single = {n for n, p in t.nets.student.named_parameters() if p.grad is None}
    assert list(single) == ["S_dcd"] and no_grad_single  # one process: the layers after the last tap get no gradient
    monkeypatch.setattr(Accelerator, "num_processes", property(lambda self: 2))
    several = student_update(twin.up, twin.nets, twin.opts.student, objective, b["A"], b["B"], fake, feats)
    assert list(several) == ["S_dcd"] and several["S_dcd"].item() == single["S_dcd"].item()  # the extra term weighs 0
    assert all(twin.nets.student.get_parameter(n).grad is not None for n in no_grad_single)
    assert all(torch.count_nonzero(twin.nets.student.get_parameter(n).grad) == 0 for n in no_grad_single)


def test_finiteness_check_under_several_processes_goes_through_the_all_reduce(monkeypatch):
    monkeypatch.setattr(Accelerator, "num_processes", property(lambda self: 2))  # one process here: the all-reduce is a copy
    skip = Updater(Accelerator(cpu=True), skip_nonfinite=True)
    with pytest.raises(NonFiniteUpdate, match="^b$"):
        skip.check_finite({"a": torch.tensor(1.0), "b": torch.tensor(float("nan"))})
    skip.check_finite({"a": torch.tensor(1.0)})


# ---------------------------------------------------------------- one discriminator pass for real and fake (issue 20)


class BareUpdater:  # what judge_pair reads of the loop's Updater: unwrap
    @staticmethod
    def unwrap(net):
        return net


def test_judge_pair_reads_real_and_fake_in_one_pass_with_the_two_pass_numbers():
    torch.manual_seed(0)
    disc = build_discriminator(3, 8)  # InstanceNorm: each image normalised alone
    real, fake = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    calls = []
    disc.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    pred_real, pred_fake = judge_pair(BareUpdater, disc, real, fake)
    assert calls == [4]
    # float32 sums in another order at batch 4 than at batch 2: rounding, relative to the predictions' size
    scale = disc(real).abs().max().item()
    assert torch.allclose(pred_real, disc(real), atol=1e-5 * scale)
    assert torch.allclose(pred_fake, disc(fake), atol=1e-5 * scale)


def test_judge_pair_keeps_two_passes_for_a_batchnorm_discriminator():
    torch.manual_seed(0)
    disc = build_discriminator(3, 8, norm="batch")  # one pass would mix real and fake batch statistics
    real, fake = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32) + 3
    calls = []
    disc.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    pred_real, pred_fake = judge_pair(BareUpdater, disc, real, fake)
    assert calls == [2, 2]
    assert isinstance(disc.model[3], torch.nn.BatchNorm2d)
    assert torch.allclose(pred_real, disc(real)) and torch.allclose(pred_fake, disc(fake))  # each side read alone
