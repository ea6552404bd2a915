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
