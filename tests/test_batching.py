"""Several passes of one network as one batched pass: when it is allowed, and that it gives the separate passes' numbers."""

from __future__ import annotations

import copy

import torch
from accelerate import Accelerator
from conftest import l1, lsgan_g
from test_steps import batch, cyclegan
from torch import nn

from dcdgan.batching import forward_each, per_image
from dcdgan.nets.discriminators import build_discriminator
from dcdgan.nets.generators import GeneratorSpec, build_generator
from dcdgan.pool import ImagePool
from dcdgan.steps import Updater, task_step


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal up to float32 summation order (a batch-3 kernel sums in another order than three batch-1 ones)."""
    return torch.allclose(a, b, rtol=1e-4, atol=1e-5 * b.abs().max().item())


def same_gradients(net: nn.Module, ref: nn.Module) -> bool:
    """Gradients equal up to summation order, relative to the network's largest: biases before a non-affine
    InstanceNorm have exactly zero gradient in exact arithmetic, so theirs is rounding noise around 0."""
    scale = max(q.grad.abs().max().item() for q in ref.parameters())
    return all(torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-5 * scale) for p, q in zip(net.parameters(), ref.parameters()))


def test_per_image_accepts_instance_norm_and_inactive_dropout_and_refuses_what_couples_or_draws_per_image():
    assert per_image(build_generator(GeneratorSpec("mobile_resnet_9blocks", 8)))  # InstanceNorm, Dropout(0) in every block
    assert per_image(build_discriminator(3, 8))
    assert not per_image(build_discriminator(3, 8, norm="batch"))  # batch statistics mix the images
    assert per_image(build_discriminator(3, 8, norm="batch").eval())  # running statistics: each image alone
    assert not per_image(nn.Sequential(nn.Conv2d(1, 1, 1), nn.Dropout(0.5)))  # one mask for the group, other draws
    assert per_image(nn.Sequential(nn.Conv2d(1, 1, 1), nn.Dropout(0.5)).eval())
    assert not per_image(nn.InstanceNorm2d(4, track_running_stats=True))  # running statistics updated per group


def test_forward_each_gives_the_separate_passes_outputs_and_gradients_in_one_pass():
    torch.manual_seed(0)
    net = build_generator(GeneratorSpec("mobile_resnet_9blocks", 8, input_nc=1, output_nc=1))
    twin = copy.deepcopy(net)
    inputs = [torch.randn(2, 1, 32, 32) for _ in range(3)]
    calls = []
    net.register_forward_hook(lambda m, i, o: calls.append(len(i[0])))
    outs = forward_each(net, net, *inputs)
    assert calls == [6] and [o.shape for o in outs] == [x.shape for x in inputs]
    sum(o.square().mean() * (k + 1) for k, o in enumerate(outs)).backward()
    expected = [twin(x) for x in inputs]
    sum(o.square().mean() * (k + 1) for k, o in enumerate(expected)).backward()
    assert all(close(o, e) for o, e in zip(outs, expected))
    assert same_gradients(net, twin)


def test_forward_each_keeps_one_pass_per_input_when_images_are_not_independent():
    net = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2))
    calls = []
    net.register_forward_hook(lambda m, i, o: calls.append(len(i[0])))
    x, y = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4) + 5
    _, out_y = forward_each(net, net, x, y)
    assert calls == [2, 2]
    assert torch.allclose(out_y.mean(dim=(0, 2, 3)), torch.zeros(2), atol=1e-5)  # normalised by y's statistics alone


def test_cyclegan_update_batches_each_generator_and_gives_the_separate_passes_gradients():
    nets, opts, task = cyclegan("loss.lambda_cycle=3", "loss.lambda_identity=0.25")
    b = batch()
    a, real_b = b["A"], b["B"]
    g_ab, g_ba, d_a, d_b = (copy.deepcopy(n) for n in (nets.baseline, nets.gen_ba, nets.disc_a, nets.disc_b))
    d_a.requires_grad_(False), d_b.requires_grad_(False)
    fake_b, fake_a = g_ab(a), g_ba(real_b)  # the definition: one pass per generator call
    loss = (lsgan_g(d_b(fake_b)) + lsgan_g(d_a(fake_a)) + 3 * (l1(g_ba(fake_b), a) + l1(g_ab(fake_a), real_b))
            + 3 * 0.25 * (l1(g_ab(real_b), real_b) + l1(g_ba(a), a)))
    loss.backward()
    calls = {"ab": [], "ba": []}
    nets.baseline.register_forward_hook(lambda m, i, o: calls["ab"].append(len(i[0])))
    nets.gen_ba.register_forward_hook(lambda m, i, o: calls["ba"].append(len(i[0])))
    task_step(Updater(Accelerator(cpu=True)), nets, opts, task, b)
    assert calls == {"ab": [2, 4], "ba": [6]}  # A->B: generate, then cycle + identity; B->A: fake, cycle, identity
    for net, ref in ((nets.baseline, g_ab), (nets.gen_ba, g_ba)):  # the gradients the generator update applied
        assert same_gradients(net, ref)
    assert torch.allclose(torch.cat(task.pool_a.images), fake_a.detach(), atol=1e-5)


def test_cyclegan_update_without_identity_batches_only_what_it_reads():
    nets, opts, task = cyclegan("loss.lambda_identity=0")
    calls = {"ab": [], "ba": []}
    nets.baseline.register_forward_hook(lambda m, i, o: calls["ab"].append(len(i[0])))
    nets.gen_ba.register_forward_hook(lambda m, i, o: calls["ba"].append(len(i[0])))
    task_step(Updater(Accelerator(cpu=True)), nets, opts, task, batch())
    assert calls == {"ab": [2, 2], "ba": [4]}


def test_pool_stores_copies_not_views_of_the_batch_it_was_handed():
    pool = ImagePool(4, 0)
    batch_of_three = torch.randn(3, 1, 4, 4)
    pool.query(batch_of_three[:1])
    assert pool.images[0].untyped_storage().nbytes() == 16 * 4  # one image, not the three of the batch behind the view
