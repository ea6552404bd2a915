"""Loss values on fixed inputs, and where gradients must and must not flow."""

from __future__ import annotations

import pytest
import torch

from dcd_formula import connector_by_hand, dcd_by_hand, tap_outputs

from dcdgan.errors import UserError
from dcdgan.losses import dcd_loss, dcd_loss_per_tap, feature_loss, gan_loss_d, gan_loss_g, gram, mixes_samples, style_loss
from dcdgan.nets import DCDProjector, DCDTaps, GeneratorSpec, build_discriminator, build_generator
from dcdgan.taps import capture, forward_until, tap_channels

TAPS = ("model.9", "model.12", "model.15", "model.18")


def dcd_setup(size: int, teacher_ngf: int = 8, student_ngf: int = 4, min_size: int = 32, conditional: bool = True):
    """Seeded teacher/student/discriminator/projector and one input batch."""
    torch.manual_seed(0)
    teacher = build_generator(GeneratorSpec("mobile_resnet_9blocks", teacher_ngf))
    student = build_generator(GeneratorSpec("mobile_resnet_9blocks", student_ngf))
    c_d = 6 if conditional else 3
    disc = build_discriminator(c_d, 8)
    taps = DCDTaps(TAPS, TAPS, "model.10", min_size)
    shape = (2, 3, size, size)
    projector = DCDProjector(taps, tap_channels(teacher, list(TAPS), shape), tap_channels(student, list(TAPS), shape), c_d)
    x = torch.randn(shape)
    return teacher, student, disc, projector, taps, x


def run_dcd(teacher, student, disc, projector, taps, x):
    with capture(teacher, list(taps.teacher)) as t_feats:
        teacher(x)
    with capture(student, list(taps.student)) as s_feats:
        student(x)
    return dcd_loss(disc, taps.disc, projector(t_feats, s_feats))


def by_hand_dcd_tensor(teacher, student, disc, projector, pairs, x, min_size=32) -> torch.Tensor:
    """L_DCD written out from the spec with plain torch ops (tests/dcd_formula.py): explicit (teacher tap, student tap)
    pairs, the connectors applied from their parameters, bilinear upsampling, the discriminator run up to model.10."""
    _, feats_t = tap_outputs(teacher, [t for t, _ in pairs], x)
    _, feats_s = tap_outputs(student, [s for _, s in pairs], x)
    return dcd_by_hand(disc, "model.10", projector, feats_t, feats_s, pairs, min_size)


def by_hand_dcd(teacher, student, disc, projector, pairs, x, min_size=32) -> float:
    return by_hand_dcd_tensor(teacher, student, disc, projector, pairs, x, min_size).item()


def test_dcd_loss_fixed_value():
    teacher, student, disc, projector, taps, x = dcd_setup(64)
    loss = run_dcd(teacher, student, disc, projector, taps, x)
    assert loss.item() == pytest.approx(EXPECTED_DCD_64, rel=1e-4)
    # the golden number is not just what the code once printed: the spec's formula, by hand, gives it too
    assert EXPECTED_DCD_64 == pytest.approx(by_hand_dcd(teacher, student, disc, projector, list(zip(TAPS, TAPS)), x), rel=1e-4)


def test_dcd_loss_by_hand_in_eval_mode():
    # connectors in eval mode normalise with their running statistics, not the batch's; 16x16 taps are upsampled
    # to the 32x32 minimum before the discriminator reads them
    teacher, student, disc, projector, taps, x = dcd_setup(64)
    with torch.no_grad():
        for bn in [m for m in projector.modules() if isinstance(m, torch.nn.BatchNorm2d)]:
            bn.running_mean.uniform_(-0.5, 0.5)  # statistics unlike the batch's, so the two modes give different values
            bn.running_var.uniform_(0.5, 2.0)
    projector.eval()
    expected = by_hand_dcd(teacher, student, disc, projector, list(zip(TAPS, TAPS)), x)
    assert run_dcd(teacher, student, disc, projector, taps, x).item() == pytest.approx(expected, rel=1e-5)
    projector.train()
    assert abs(by_hand_dcd(teacher, student, disc, projector, list(zip(TAPS, TAPS)), x) - expected) > 1e-3 * expected


def test_dcd_gradients_reach_student_and_its_connectors_only():
    teacher, student, disc, projector, taps, x = dcd_setup(32)
    for p in disc.parameters():
        p.requires_grad_(False)  # the student step freezes D
    run_dcd(teacher, student, disc, projector, taps, x).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in projector.student.parameters())
    tapped_student = [p for name, p in student.named_parameters() if int(name.split(".")[1]) <= 18]
    assert all(p.grad is not None for p in tapped_student)
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is None for p in projector.teacher.parameters())
    assert all(p.grad is None for p in disc.parameters())
    assert not projector.teacher.training and projector.student.training


def test_trainable_teacher_connectors_get_gradients():
    teacher, student, disc, _, taps, x = dcd_setup(32)
    shape = (2, 3, 32, 32)
    projector = DCDProjector(taps, tap_channels(teacher, list(TAPS), shape), tap_channels(student, list(TAPS), shape), 6, train_teacher=True)
    run_dcd(teacher, student, disc, projector, taps, x).backward()
    assert all(p.grad is not None for p in projector.teacher.parameters())
    assert all(p.grad is None for p in teacher.parameters())


@pytest.mark.parametrize("size", [32, 64, 128, 256, 512])
def test_dcd_finite_and_nonzero_from_32_to_512(size):
    loss = run_dcd(*dcd_setup(size, teacher_ngf=4, student_ngf=2))
    assert torch.isfinite(loss) and loss.item() > 1e-4


def test_dcd_impossible_size_fails_clearly():
    # 16x16 inputs give 4x4 taps; without upsampling the PatchGAN's stride-1 layer has nothing left to read
    with pytest.raises(ValueError, match="DCD: the discriminator .* raise distill.dcd_min_size"):
        run_dcd(*dcd_setup(16, teacher_ngf=4, student_ngf=2, min_size=1))


def test_dcd_pairs_taps_by_position_with_unequal_channels():
    teacher, student, disc, _, _, x = dcd_setup(32, teacher_ngf=8, student_ngf=2)
    # configured order is not sorted order on either side ("model.9" > "model.12" as strings), and the two taps
    # of each side differ in channels (model.6: 2 ngf after the first downsampling, model.9/12: 4 ngf), so a
    # lexicographic pairing (the reference code's bug) cannot even run, let alone give the same value
    taps = DCDTaps(("model.9", "model.6"), ("model.12", "model.6"), "model.10", 32)
    shape = (2, 3, 32, 32)
    t_ch, s_ch = tap_channels(teacher, list(taps.teacher), shape), tap_channels(student, list(taps.student), shape)
    assert t_ch == {"model.9": 32, "model.6": 16} and s_ch == {"model.12": 8, "model.6": 4}
    projector = DCDProjector(taps, t_ch, s_ch, 6)
    assert projector.student["model_9"][0].in_channels == 8 and projector.teacher["model_9"][0].in_channels == 32
    assert projector.student["model_6"][0].in_channels == 4 and projector.teacher["model_6"][0].in_channels == 16
    loss = run_dcd(teacher, student, disc, projector, taps, x).item()
    assert loss == pytest.approx(by_hand_dcd(teacher, student, disc, projector, [("model.9", "model.12"), ("model.6", "model.6")], x), rel=1e-5)


def test_dcd_pairs_taps_by_position_with_equal_channels():
    # all four resnet-block taps have 4 ngf channels, so any pairing runs: only the value tells position from sorting
    teacher, student, disc, _, _, x = dcd_setup(32, teacher_ngf=8, student_ngf=2)
    taps = DCDTaps(("model.9", "model.18"), ("model.18", "model.9"), "model.10", 32)
    shape = (2, 3, 32, 32)
    projector = DCDProjector(taps, tap_channels(teacher, list(taps.teacher), shape), tap_channels(student, list(taps.student), shape), 6)
    loss = run_dcd(teacher, student, disc, projector, taps, x).item()
    positional = by_hand_dcd(teacher, student, disc, projector, [("model.9", "model.18"), ("model.18", "model.9")], x)
    lexicographic = by_hand_dcd(teacher, student, disc, projector, [("model.18", "model.18"), ("model.9", "model.9")], x)
    assert abs(positional - lexicographic) > 1e-3 * positional  # the two pairings are distinguishable here
    assert loss == pytest.approx(positional, rel=1e-5)


def test_unknown_tap_is_a_clear_error():
    teacher = build_generator(GeneratorSpec("mobile_resnet_9blocks", 4))
    with pytest.raises(UserError, match=r"teacher generator: no module at model\.99; valid paths include"):
        with capture(teacher, ["model.99"], "teacher generator"):
            pass


def test_forward_until_stops_at_the_tap():
    disc = build_discriminator(3, 8)
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(forward_until(disc, "model.10", x), disc.model[:11](x))
    # 8x8 inputs: the tap map (0x0 after stride-2 x3 and a 4x4 kernel) cannot exist; the full forward would crash
    with pytest.raises((RuntimeError, ValueError)):
        disc(torch.randn(1, 3, 8, 8))


def test_gan_losses_fixed_values():
    real, fake = torch.tensor([0.5, 2.0]), torch.tensor([-1.5, 0.25])
    assert gan_loss_d(real, fake, "lsgan").item() == pytest.approx(0.5 * ((0.25 + 1) / 2 + (2.25 + 0.0625) / 2))
    assert gan_loss_d(real, fake, "hinge").item() == pytest.approx(0.5 * (0.25 + 0.625))
    assert gan_loss_g(fake, "hinge").item() == pytest.approx(0.625)
    assert gan_loss_g(fake, "lsgan").item() == pytest.approx((6.25 + 0.5625) / 2)
    bce = torch.nn.functional.softplus
    assert gan_loss_g(fake, "vanilla").item() == pytest.approx(bce(-fake).mean().item())
    with pytest.raises(ValueError, match="unknown GAN mode"):
        gan_loss_g(fake, "wgan")


def test_gram_and_style_feature_values():
    f = torch.arange(8, dtype=torch.float32).reshape(1, 2, 2, 2)
    g = gram(f)
    # rows [0,1,2,3] and [4,5,6,7]: F F^T = [[14, 38], [38, 126]], divided by C*H*W = 8
    assert torch.allclose(g, torch.tensor([[[14.0, 38.0], [38.0, 126.0]]]) / 8)
    assert style_loss([f, f], [f * 0, f * 0]).item() == pytest.approx(2 * (14 + 38 + 38 + 126) / 8 / 4)
    assert feature_loss(f, f + 2).item() == pytest.approx(2.0)


def vgg_like_half(raw_peak: float, channels: int = 8, side: int = 128, seed: int = 0) -> torch.Tensor:
    """Non-negative (post-ReLU) fp16 activations whose raw F F^T diagonal reaches about ``raw_peak``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, channels, side, side, generator=g).abs()
    scale = (raw_peak / (x.double() ** 2).sum(dim=(2, 3)).max()).sqrt()
    return (x * scale).half()


# the raw F F^T peaks measured on two horse2zebra images at 256 px with the Caffe VGG16 (issue 7)
RAW_PEAKS = (1.08e5, 1.64e5, 7.1e4)


def test_gram_of_half_activations_is_fp32_and_matches():
    for peak in RAW_PEAKS:
        half = vgg_like_half(peak)
        flat = half.float().reshape(2, 8, -1)
        assert torch.bmm(flat, flat.transpose(1, 2)).max() > 65504  # the magnitudes fp16 cannot hold
        reference = gram(half.float())
        for autocast in (False, True):
            with torch.autocast("cpu", dtype=torch.float16, enabled=autocast):
                g = gram(half)
                g_from_fp32 = gram(half.float())  # autocast would run this bmm in fp16
            assert g.dtype == torch.float32 and g_from_fp32.dtype == torch.float32
            assert torch.isfinite(g).all()
            assert torch.allclose(g, reference, rtol=1e-3, atol=0) and torch.allclose(g_from_fp32, reference, rtol=1e-3, atol=0)


def test_style_loss_on_half_activations_equals_fp32():
    student = [vgg_like_half(peak, seed=1) for peak in RAW_PEAKS]
    teacher = [vgg_like_half(peak * 0.7, seed=2) for peak in RAW_PEAKS]
    reference = style_loss([s.float() for s in student], [t.float() for t in teacher])
    with torch.autocast("cpu", dtype=torch.float16):
        loss = style_loss(student, teacher)
        loss_fp32_inputs = style_loss([s.float() for s in student], [t.float() for t in teacher])
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert loss.item() == pytest.approx(reference.item(), rel=1e-3)
    assert loss_fp32_inputs.item() == pytest.approx(reference.item(), rel=1e-3)
    # the same product in fp16, as before the fix, overflows: the test can fail
    flat = student[1].reshape(2, 8, -1)
    assert not torch.isfinite(torch.bmm(flat, flat.transpose(1, 2))).all()


def dcd_grads(loss: torch.Tensor, *nets: torch.nn.Module) -> list[torch.Tensor | None]:
    params = [p for n in nets for p in n.parameters() if p.requires_grad]
    return list(torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True))


@pytest.mark.parametrize("train_teacher", [False, True])
def test_dcd_one_pass_per_side_equals_per_tap_loss_and_gradients(train_teacher):
    teacher, student, disc, _, taps, x = dcd_setup(32)
    # taps of two spatial sizes: model.3 (32x32) and the 8x8 residual taps (upsampled to min_size 24): two groups
    taps = DCDTaps(("model.3", "model.9", "model.15"), ("model.3", "model.12", "model.18"), "model.10", 24)
    shape = tuple(x.shape)
    projector = DCDProjector(taps, tap_channels(teacher, list(taps.teacher), shape), tap_channels(student, list(taps.student), shape), 6, train_teacher)
    disc.requires_grad_(False)
    with capture(teacher, list(taps.teacher)) as tf, capture(student, list(taps.student)) as sf:
        teacher(x)
        student(x)
    projections = projector(tf, sf)
    assert {p_t.shape[-1] for _, p_t, _ in projections} == {32, 24}
    batched, by_tap = dcd_loss(disc, taps.disc, projections), dcd_loss_per_tap(disc, taps.disc, projections)
    by_hand = by_hand_dcd_tensor(teacher, student, disc, projector, taps.pairs(), x, min_size=24)
    # float32 throughout: the batched pass sums in another order than one pass per tap, a few ulps apart (rel 1e-5)
    assert batched.item() == pytest.approx(by_hand.item(), rel=1e-5)
    assert by_tap.item() == pytest.approx(by_hand.item(), rel=1e-5)
    nets = (student, projector.student) + ((projector.teacher,) if train_teacher else ())
    grads_batched, grads_by_tap, grads_by_hand = dcd_grads(batched, *nets), dcd_grads(by_tap, *nets), dcd_grads(by_hand, *nets)
    assert sum(g is not None for g in grads_batched) > len(list(projector.student.parameters()))
    # A gradient element is a float32 sum of many products; summed in another order it moves by a few ulps of the
    # largest terms in the chain, whatever its own size. Some are zero in exact arithmetic (a conv bias before an
    # InstanceNorm) and come out as round-off, so the absolute tolerance is on the scale of all the gradients.
    scale = max(g.abs().max() for g in grads_by_hand if g is not None)
    for g_batched, g_by_tap, g_by_hand in zip(grads_batched, grads_by_tap, grads_by_hand, strict=True):
        assert (g_batched is None) == (g_by_tap is None) == (g_by_hand is None)  # layers after the last tap get none
        if g_batched is not None:
            assert torch.allclose(g_batched, g_by_hand, rtol=1e-4, atol=1e-5 * scale)
            assert torch.allclose(g_by_tap, g_by_hand, rtol=1e-4, atol=1e-5 * scale)


def test_dcd_with_a_batch_statistics_discriminator_keeps_one_pass_per_projection():
    teacher, student, _, projector, taps, x = dcd_setup(32)
    disc = build_discriminator(6, 8, norm="batch")
    assert mixes_samples(disc) and not mixes_samples(disc.eval()) and not mixes_samples(build_discriminator(6, 8))
    disc.train()
    with capture(teacher, list(TAPS)) as tf, capture(student, list(TAPS)) as sf:
        teacher(x)
        student(x)
    projections = projector(tf, sf)
    # batch statistics: the discriminator must see each projection alone (as the formula by hand does), not the
    # teacher's and student's maps stacked into one batch
    expected = by_hand_dcd(teacher, student, disc, projector, list(zip(TAPS, TAPS)), x)
    assert dcd_loss(disc, "model.10", projections).item() == pytest.approx(expected, rel=1e-5)
    assert dcd_loss_per_tap(disc, "model.10", projections).item() == pytest.approx(expected, rel=1e-5)
    _, ft = tap_outputs(teacher, TAPS, x)
    _, fs = tap_outputs(student, TAPS, x)
    stacked = 0.0  # what one pass over both sides would give: the test can tell the two apart
    for tap in TAPS:
        key = tap.replace(".", "_")
        both = disc.model[:11](torch.cat([connector_by_hand(projector.teacher[key], ft[tap], 32), connector_by_hand(projector.student[key], fs[tap], 32)]))
        stacked += (both[: len(x)] - both[len(x):]).abs().mean().item()
    assert abs(stacked - expected) > 1e-3 * expected


# computed once with torch 2.15 on CPU; guards against silent changes to the loss, connectors or tap pairing
EXPECTED_DCD_64 = 2.4440314769744873


def test_discriminator_gan_losses_for_every_mode():
    real, fake = torch.tensor([0.5, 2.0]), torch.tensor([-1.5, 0.25])
    softplus = torch.nn.functional.softplus  # BCE with logits: -log sigmoid(x) = softplus(-x)
    vanilla = 0.5 * (softplus(-real).mean() + softplus(fake).mean())
    assert gan_loss_d(real, fake, "vanilla").item() == pytest.approx(vanilla.item(), rel=1e-6)
    # hinge clips: real predictions above 1 and fake ones below -1 cost nothing
    assert gan_loss_d(torch.tensor([3.0]), torch.tensor([-3.0]), "hinge").item() == 0
    assert gan_loss_d(torch.tensor([1.0]), torch.tensor([-1.0]), "lsgan").item() == pytest.approx(0.5 * (0 + 1))
    assert gan_loss_g(torch.tensor([1.0, 1.0]), "lsgan").item() == 0
    with pytest.raises(ValueError, match="unknown GAN mode 'wgan'; choose one of lsgan, vanilla, hinge"):
        gan_loss_d(real, fake, "wgan")
    with pytest.raises(ValueError, match="unknown GAN mode 'wgan'; choose one of lsgan, vanilla, hinge"):
        gan_loss_g(fake, "wgan")


def test_style_loss_needs_matching_tap_lists():
    f = torch.ones(1, 2, 2, 2)
    with pytest.raises(ValueError):
        style_loss([f, f], [f])


def test_gram_is_per_sample():
    f = torch.stack([torch.ones(1, 2, 2), 2 * torch.ones(1, 2, 2)])  # (2, 1, 2, 2)
    assert gram(f).flatten().tolist() == [1.0, 4.0]


class Shrinking(torch.nn.Module):
    """A 'discriminator' whose tap sees an empty map for small inputs, or raises an unrelated error."""

    def __init__(self, fail: str = "") -> None:
        super().__init__()
        self.fail = fail
        self.pool = torch.nn.AvgPool2d(4, ceil_mode=False)

    def forward(self, x):
        if self.fail:
            raise RuntimeError(self.fail)
        return self.pool(x)


def test_disc_view_errors():
    from dcdgan.losses import disc_view

    p = torch.zeros(1, 3, 4, 4)
    assert disc_view(Shrinking(), "pool", p, "student tap x").shape == (1, 3, 1, 1)
    with pytest.raises(ValueError) as err:
        disc_view(Shrinking(fail="Calculated padded input size per channel: (2 x 2). Kernel size: (4 x 4)."), "pool", p, "student tap model.9")
    assert str(err.value) == ("DCD: the discriminator cannot read the (4, 4) projection of student tap model.9 before reaching pool; "
                              "raise distill.dcd_min_size or train on larger crops")
    with pytest.raises(ValueError, match="cannot read the"):
        disc_view(Shrinking(fail="Expected more than 1 spatial element when training"), "pool", p, "t")
    with pytest.raises(RuntimeError, match="^something else$"):  # unrelated failures are not disguised as size problems
        disc_view(Shrinking(fail="something else"), "pool", p, "t")
    empty = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(0))
    with pytest.raises(ValueError) as err:
        disc_view(empty, "0", p, "teacher tap model.12")
    assert str(err.value) == ("DCD: the discriminator's 0 map is empty for the (4, 4) projection of teacher tap model.12; "
                              "raise distill.dcd_min_size or train on larger crops")


def test_dcd_loss_sums_over_pairs():
    disc = torch.nn.Sequential(torch.nn.Identity())
    a, b, c = torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2), torch.full((1, 1, 2, 2), 3.0)
    assert dcd_loss(disc, "0", [("x", a, b), ("y", a, c)]).item() == pytest.approx(1 + 3)
    assert dcd_loss(disc, "0", [("x", b, b)]).item() == 0


class FailsOnStudentSide(Shrinking):
    """Reads a teacher projection, but raises a size error for anything that carries gradients (the student side)."""

    def forward(self, x):
        if x.requires_grad:
            raise RuntimeError("Calculated padded input size per channel: (2 x 2). Kernel size: (4 x 4).")
        return self.pool(x)


def test_dcd_errors_name_the_side_and_taps_that_cannot_be_read():
    p = torch.zeros(1, 3, 4, 4)
    s = torch.zeros(1, 3, 4, 4, requires_grad=True)
    failing = Shrinking(fail="Calculated padded input size per channel: (2 x 2). Kernel size: (4 x 4).")
    with pytest.raises(ValueError, match=r"^DCD: the discriminator cannot read the \(4, 4\) projection of teacher taps a, b before reaching pool;"):
        dcd_loss(failing, "pool", [("a", p, s), ("b", p, s)])
    with pytest.raises(ValueError, match=r"^DCD: the discriminator cannot read the \(4, 4\) projection of student taps a, b before reaching pool;"):
        dcd_loss(FailsOnStudentSide(), "pool", [("a", p, s), ("b", p, s)])
    with pytest.raises(ValueError, match=r"projection of teacher tap a before"):
        dcd_loss_per_tap(failing, "pool", [("a", p, s)])
    with pytest.raises(ValueError, match=r"projection of student tap a before"):
        dcd_loss_per_tap(FailsOnStudentSide(), "pool", [("a", p, s)])
    with pytest.raises(UserError, match="^discriminator: no module at nope;"):
        dcd_loss_per_tap(Shrinking(), "nope", [("a", p, s)])


def test_dcd_loss_per_tap_of_a_single_pair():
    torch.manual_seed(0)
    p_t, p_s = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8, requires_grad=True)
    pool = torch.nn.AvgPool2d(4)
    expected = (pool(p_t) - pool(p_s)).abs().mean()
    for loss in (dcd_loss_per_tap, dcd_loss):
        value = loss(Shrinking(), "pool", [("a", p_t, p_s)])
        assert value.dtype == torch.float32 and value.item() == pytest.approx(expected.item(), rel=1e-6)
