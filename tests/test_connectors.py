"""DCD connectors: layer shapes, initialisation, which side trains, upsampling of small maps, pairing errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dcdgan.errors import UserError
from dcdgan.nets import DCDProjector, DCDTaps
from dcdgan.nets.connectors import connector, tap_key, upsample_to


def test_connector_is_conv1x1_batchnorm_relu_with_pix2pix_init():
    torch.manual_seed(0)
    net = connector(64, 6)
    conv, bn, relu = net
    assert isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1) and conv.bias is None
    assert (conv.in_channels, conv.out_channels) == (64, 6)
    assert isinstance(bn, nn.BatchNorm2d) and bn.num_features == 6 and isinstance(relu, nn.ReLU)
    assert abs(conv.weight.std().item() - 0.02) < 0.004 and abs(conv.weight.mean().item()) < 0.004
    assert (bn.weight - 1).abs().max() < 0.1 and not torch.equal(bn.weight, torch.ones(6))  # N(1, 0.02), not the default 1
    assert torch.equal(bn.bias, torch.zeros(6))


def test_tap_key():
    assert tap_key("model.9") == "model_9" and tap_key("model.model.1.model.3") == "model_model_1_model_3"


def test_upsample_to_the_minimum_size():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    assert upsample_to(x, 4) is x and upsample_to(x, 3) is x  # large enough: untouched
    up = upsample_to(x, 8)
    assert up.shape == (1, 1, 8, 8)
    assert torch.equal(up, nn.functional.interpolate(x, size=(8, 8), mode="bilinear", align_corners=False))
    wide = upsample_to(torch.zeros(1, 2, 4, 6), 10)  # the shorter side reaches the minimum, the aspect ratio stays
    assert wide.shape == (1, 2, 10, 15)
    assert upsample_to(torch.zeros(1, 1, 3, 5), 4).shape == (1, 1, 4, 7)  # 5 * 4/3 = 6.67 rounds to 7


def projector(train_teacher: bool = False) -> DCDProjector:
    taps = DCDTaps(("a", "b"), ("c", "d"), "disc.tap", 8)
    torch.manual_seed(0)
    return DCDProjector(taps, {"a": 4, "b": 6}, {"c": 2, "d": 3}, 5, train_teacher)


def test_projector_layout_and_frozen_teacher_side():
    p = projector()
    assert list(p.teacher) == ["a", "b"] and list(p.student) == ["a", "b"]  # keyed by the teacher tap
    assert [p.teacher[k][0].in_channels for k in "ab"] == [4, 6] and [p.student[k][0].in_channels for k in "ab"] == [2, 3]
    assert all(p.student[k][0].out_channels == 5 == p.teacher[k][0].out_channels for k in "ab")
    assert not any(q.requires_grad for q in p.teacher.parameters()) and all(q.requires_grad for q in p.student.parameters())
    p.train()
    assert p.training and p.student.training and not p.teacher.training
    assert p.train(False) is p and not p.student.training


def test_trainable_teacher_side():
    p = projector(train_teacher=True)
    assert all(q.requires_grad for q in p.teacher.parameters())
    p.train()
    assert p.teacher.training


def test_projector_output():
    p = projector()
    t_feats = {"a": torch.randn(2, 4, 4, 4, requires_grad=True), "b": torch.randn(2, 6, 8, 8, requires_grad=True)}
    s_feats = {"c": torch.randn(2, 2, 4, 4), "d": torch.randn(2, 3, 8, 8)}
    out = p(t_feats, s_feats)
    assert [o[0] for o in out] == ["a", "b"]
    for tap, p_t, p_s in out:
        assert p_t.shape == p_s.shape == (2, 5, 8, 8)
        assert not p_t.requires_grad and p_s.requires_grad  # teacher features are detached
    with torch.no_grad():
        p.teacher.eval()
        assert torch.equal(out[1][1], p.teacher["b"](t_feats["b"]))
        assert torch.equal(out[0][2], upsample_to(p.student["a"](s_feats["c"]), 8))


def test_paired_taps_of_different_sizes_are_refused():
    p = projector()
    with pytest.raises(UserError) as err:
        p({"a": torch.randn(1, 4, 8, 8), "b": torch.randn(1, 6, 8, 8)}, {"c": torch.randn(1, 2, 16, 16), "d": torch.randn(1, 3, 8, 8)})
    assert str(err.value) == "DCD: teacher tap a gives a (8, 8) map but student tap c a (16, 16) one; paired taps need the same spatial size"


def test_pairs_must_match_in_number():
    assert DCDTaps(("a", "b"), ("c", "d"), "t", 1).pairs() == [("a", "c"), ("b", "d")]
    with pytest.raises(ValueError):
        DCDTaps(("a", "b"), ("c",), "t", 1).pairs()


def test_connector_relu_is_in_place_and_batchnorm_keeps_defaults():
    _, bn, relu = connector(3, 2)
    assert relu.inplace is True
    assert (bn.eps, bn.momentum, bn.affine, bn.track_running_stats) == (1e-5, 0.1, True, True)


def test_new_projector_has_a_frozen_eval_teacher_side_by_default():
    taps = DCDTaps(("a",), ("c",), "disc.tap", 8)
    p = DCDProjector(taps, {"a": 4}, {"c": 2}, 5)  # train_teacher defaults to False (reference CycleGAN)
    assert p.train_teacher is False and p.taps is taps
    assert p.training and p.student.training and not p.teacher.training  # eval from construction, before any train()
    assert not any(q.requires_grad for q in p.teacher.parameters())
    trained = DCDProjector(taps, {"a": 4}, {"c": 2}, 5, True)
    assert trained.teacher.training and all(q.requires_grad for q in trained.teacher.parameters())


def test_teacher_side_in_eval_uses_running_statistics():
    p = projector()
    feats = {"a": torch.randn(2, 4, 8, 8) * 3 + 2, "b": torch.randn(2, 6, 8, 8)}
    out = p(feats, {"c": torch.randn(2, 2, 8, 8), "d": torch.randn(2, 3, 8, 8)})
    conv, bn, _ = p.teacher["a"]
    expected = torch.relu((conv(feats["a"]) - bn.running_mean.view(1, -1, 1, 1)) / torch.sqrt(bn.running_var.view(1, -1, 1, 1) + bn.eps)
                          * bn.weight.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1))
    assert torch.allclose(out[0][1], expected, atol=1e-6)
    assert torch.equal(bn.running_mean, torch.zeros(5))  # eval: the running statistics did not move
    assert not torch.equal(p.student["a"][1].running_mean, torch.zeros(5))  # the student side is in train mode
