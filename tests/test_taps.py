"""Tapping activations by module path: lookup errors, channel probing, stopping a forward early."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dcdgan.errors import UserError
from dcdgan.taps import capture, forward_until, resolve_taps, tap_channels


def net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.Sequential(nn.Conv2d(3, 5, 1), nn.ReLU()), nn.Conv2d(5, 2, 1))


def test_resolve_taps_maps_paths_to_modules():
    n = net()
    found = resolve_taps(n, ["3.0", "1"], "toy")
    assert list(found) == ["3.0", "1"] and found["3.0"] is n[3][0] and found["1"] is n[1]


def test_unknown_tap_lists_nearby_paths():
    with pytest.raises(UserError) as err:
        resolve_taps(net(), ["3.7", "9"], "toy net")
    assert str(err.value) == "toy net: no module at 3.7, 9; valid paths include 3, 3.0, 3.1"
    with pytest.raises(UserError) as err:  # no dotted prefix: the first paths of the network are listed
        resolve_taps(net(), ["x"], "toy net")
    assert str(err.value) == "toy net: no module at x; valid paths include 0, 1, 2, 3, 3.0, 3.1, 4"


def test_nearby_paths_are_capped_at_twelve():
    big = nn.Sequential(*[nn.ReLU() for _ in range(20)])
    with pytest.raises(UserError) as err:
        resolve_taps(big, ["nope"], "big")
    assert str(err.value).endswith("valid paths include " + ", ".join(str(i) for i in range(12)))


def test_capture_records_every_tap_and_removes_its_hooks():
    n = net()
    x = torch.randn(2, 1, 4, 4)
    with capture(n, ["0", "3.1"]) as feats:
        out = n(x)
    assert set(feats) == {"0", "3.1"}
    assert torch.equal(feats["0"], n[0](x)) and feats["3.1"].shape == (2, 5, 4, 4)
    assert torch.equal(out, n(x))
    assert all(not m._forward_hooks for m in n.modules())


def test_tap_channels_probes_in_eval_mode_and_restores_the_mode():
    n = net().train()
    running = n[1].running_mean.clone()
    assert tap_channels(n, ["0", "3.0", "4"], (1, 1, 4, 4)) == {"0": 3, "3.0": 5, "4": 2}
    assert n.training and n[1].training  # mode restored
    assert torch.equal(n[1].running_mean, running)  # the probe did not update BatchNorm statistics
    n.eval()
    tap_channels(n, ["0"], (1, 1, 4, 4))
    assert not n.training


def test_forward_until_returns_the_tap_output_and_skips_the_rest():
    n = net()
    calls = []
    n[4].register_forward_hook(lambda *a: calls.append("last"))
    x = torch.randn(1, 1, 4, 4)
    assert torch.equal(forward_until(n, "3.0", x), n[3][0](n[2](n[1](n[0](x)))))
    assert calls == []  # layers after the tap never ran
    assert all(not m._forward_hooks for m in n[:4].modules())


class Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.used, self.unused = nn.Identity(), nn.Identity()

    def forward(self, x):
        return self.used(x)


def test_forward_until_a_module_forward_never_reaches():
    with pytest.raises(RuntimeError, match="^toy: module unused was not reached by forward\\(\\)$"):
        forward_until(Branchy(), "unused", torch.zeros(1), "toy")


def test_unknown_tap_whose_prefix_matches_nothing_lists_the_first_paths():
    with pytest.raises(UserError) as err:
        resolve_taps(net(), ["zz.1"], "toy")
    assert str(err.value) == "toy: no module at zz.1; valid paths include 0, 1, 2, 3, 3.0, 3.1, 4"
    big = nn.Sequential(*[nn.ReLU() for _ in range(20)])
    with pytest.raises(UserError) as err:
        resolve_taps(big, ["zz.1"], "big")
    assert str(err.value).endswith("valid paths include " + ", ".join(str(i) for i in range(12)))


def test_nearby_paths_share_everything_but_the_last_component():
    deep = nn.Sequential(nn.Sequential(nn.Sequential(nn.ReLU(), nn.ReLU()), nn.ReLU()), nn.ReLU())
    with pytest.raises(UserError) as err:
        resolve_taps(deep, ["0.0.7"], "deep")
    assert str(err.value) == "deep: no module at 0.0.7; valid paths include 0.0, 0.0.0, 0.0.1"


def test_errors_name_the_network_by_default():
    with pytest.raises(UserError, match="^network: no module at 9;"), capture(net(), ["9"]):
        pass
    with pytest.raises(UserError, match="^network: no module at 9;"):
        tap_channels(net(), ["9"], (1, 1, 4, 4))
    with pytest.raises(UserError, match="^network: no module at 9;"):
        forward_until(net(), "9", torch.zeros(1, 1, 4, 4))
    with pytest.raises(RuntimeError, match="^network: module unused was not reached"):
        forward_until(Branchy(), "unused", torch.zeros(1))


def test_capture_keys_each_output_by_its_own_tap_and_keeps_the_latest_forward():
    n = net()
    x1, x2 = torch.randn(1, 1, 4, 4), torch.randn(1, 1, 4, 4)
    with capture(n, ["4", "0", "2"]) as feats:
        n(x1)
        n(x2)
    assert list(feats) == ["0", "2", "4"]  # filled in forward order
    assert torch.equal(feats["4"], n(x2)) and torch.equal(feats["0"], n[0](x2))
    assert feats["2"].shape == (1, 3, 4, 4) and (feats["2"] >= 0).all()  # after the ReLU
    n(x1)  # after the block: hooks are gone, the dict no longer changes
    assert torch.equal(feats["4"], n(x2))


def test_capture_removes_its_hooks_when_the_block_raises():
    n = net()
    with pytest.raises(ValueError), capture(n, ["0", "3.1"]):
        raise ValueError("inside the block")
    assert all(not m._forward_hooks for m in n.modules())


def test_tap_channels_probes_with_zeros_of_the_given_shape():
    n = net()
    seen = []
    n[0].register_forward_pre_hook(lambda _m, inputs: seen.append((inputs[0].device, inputs[0].shape, inputs[0].abs().sum().item())))
    assert tap_channels(n, ["3.1"], (2, 1, 3, 3)) == {"3.1": 5}
    assert seen == [(torch.device("cpu"), (2, 1, 3, 3), 0.0)]  # device: the parameters' (CPU here)


def test_forward_until_returns_the_first_output_of_the_tap():
    n = net()
    x = torch.randn(1, 1, 4, 4)
    assert torch.equal(forward_until(n, "0", x, "toy"), n[0](x))
    assert all(not m._forward_hooks for m in n.modules())


class Named(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.encoder = nn.ReLU(), nn.Sequential(nn.ReLU())

    def forward(self, x):
        return self.encoder(self.a(x))


def test_a_wrong_top_level_name_lists_the_first_paths_not_its_prefix_matches():
    with pytest.raises(UserError) as err:
        resolve_taps(Named(), ["enc"], "toy")
    assert str(err.value) == "toy: no module at enc; valid paths include a, encoder, encoder.0"


def test_tap_channels_errors_name_the_given_network():
    with pytest.raises(UserError, match="^toy: no module at 9;"):
        tap_channels(net(), ["9"], (1, 1, 4, 4), "toy")


def test_unet_tap_holds_the_skip_blocks_output_as_produced_not_after_the_parents_inplace_relu():
    """The default U-Net tap is a skip block whose output the parent's ``ReLU(inplace=True)`` overwrites next: the
    tap must keep what the block returned (negative values included), equal to the block run alone on its input."""
    from dcdgan.nets import GeneratorSpec, build_generator

    torch.manual_seed(0)
    gen = build_generator(GeneratorSpec("unet_128", 4, 1, 1)).eval()
    tap = "model.model.1.model.3"
    module = resolve_taps(gen, [tap], "unet")[tap]
    inputs = []
    handle = module.register_forward_pre_hook(lambda _m, args: inputs.append(args[0].clone()))
    with torch.no_grad(), capture(gen, [tap]) as feats:
        gen(torch.randn(2, 1, 128, 128))
    handle.remove()
    with torch.no_grad():
        alone = module(inputs[0])
    assert feats[tap].shape == (2, 16, 32, 32)
    assert torch.equal(feats[tap], alone)
    assert (alone < 0).any()  # the block's output has negatives, which a ReLU applied after it would have zeroed
