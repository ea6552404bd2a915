"""Architectures: exact sizes from the spec, checkpoint key compatibility, MAC convention."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from dcdgan.cli import main
from dcdgan.errors import UserError
from dcdgan.metrics.profile import count_macs, count_params
from dcdgan.nets import GeneratorSpec, build_discriminator, build_generator
from dcdgan.weights import load_weights_into

SPEC_SIZES = [
    # netG, ngf, params, MACs at 1x3x256x256 (spec section 1, torchprofile counts)
    ("resnet_9blocks", 64, 11_378_179, 56.80e9),
    ("mobile_resnet_9blocks", 64, 1_987_075, 18.31e9),
    ("mobile_resnet_9blocks", 16, 137_347, 1.408e9),
]


@pytest.mark.parametrize("netG, ngf, params, macs", SPEC_SIZES)
def test_spec_params_and_macs(netG, ngf, params, macs):
    gen = build_generator(GeneratorSpec(netG, ngf))
    assert count_params(gen) == params
    assert count_macs(gen, (1, 3, 256, 256)) == pytest.approx(macs, rel=0.01)


def test_exact_mac_counts_and_compression_ratio():
    teacher = build_generator(GeneratorSpec("resnet_9blocks", 64))
    student = build_generator(GeneratorSpec("mobile_resnet_9blocks", 16))
    assert count_macs(teacher, (1, 3, 256, 256)) == 56_799_264_768
    assert count_macs(student, (1, 3, 256, 256)) == 1_407_713_280
    # the paper's "over 40x MACs and 80x parameters"
    assert count_macs(teacher, (1, 3, 256, 256)) / count_macs(student, (1, 3, 256, 256)) == pytest.approx(40.3, abs=0.05)
    assert count_params(teacher) / count_params(student) == pytest.approx(82.8, abs=0.05)


@pytest.mark.parametrize("netG, ngf, size", [("unet_256", 16, 256), ("unet_128", 8, 128), ("mobile_resnet_9blocks", 8, 64)])
def test_mac_count_agrees_with_torchprofile(netG, ngf, size):
    torchprofile = pytest.importorskip("torchprofile")
    gen = build_generator(GeneratorSpec(netG, ngf)).eval()
    expected = torchprofile.profile_macs(gen, torch.zeros(1, 3, size, size))
    assert count_macs(gen, (1, 3, size, size)) == expected


def test_unet_256_size_matches_pix2pix():
    # pix2pix prints "Total number of parameters : 54.414 M" for its unet_256 generator
    gen = build_generator(GeneratorSpec("unet_256", 64, norm="batch"))
    assert count_params(gen) == 54_413_955
    assert count_macs(gen, (1, 3, 256, 256)) == 18_143_334_400
    student = build_generator(GeneratorSpec("unet_256", 16, norm="batch"))
    assert count_macs(student, (1, 3, 256, 256)) == 1_219_449_856  # OMGD's "U-Net 16": 1.219 G


def test_generators_keep_size_and_range():
    for netG, size in [("resnet_9blocks", 64), ("mobile_resnet_9blocks", 32), ("unet_128", 128), ("unet_256", 256)]:
        gen = build_generator(GeneratorSpec(netG, 4, input_nc=1, output_nc=3)).eval()
        out = gen(torch.randn(2, 1, size, size))
        assert out.shape == (2, 3, size, size)
        assert out.abs().max() <= 1.0


def test_mobile_layout_taps_and_shapes():
    gen = build_generator(GeneratorSpec("mobile_resnet_9blocks", 16))
    layers = gen.model
    assert len(layers) == 28
    assert isinstance(layers[9], nn.ReLU) and layers[7].out_channels == 64
    assert type(layers[12]).__name__ == "MobileResnetBlock" and type(layers[18]).__name__ == "MobileResnetBlock"
    assert isinstance(layers[27], nn.Tanh)
    norms = [m for m in gen.modules() if isinstance(m, nn.InstanceNorm2d)]
    assert norms and all(not m.affine and not m.track_running_stats for m in norms)


def test_discriminator_tap_is_penultimate_leaky_relu():
    disc = build_discriminator(6, 128)
    assert isinstance(disc.model[10], nn.LeakyReLU)
    assert disc.model[8].stride == (1, 1) and disc.model[11].out_channels == 1
    assert count_params(build_discriminator(6, 64)) == 2_767_809  # pix2pix: 2.769 M
    assert disc(torch.zeros(1, 6, 256, 256)).shape == (1, 1, 30, 30)  # the 70x70 PatchGAN on 256 inputs


def public_resnet_keys(ngf: int = 64, input_nc: int = 3, output_nc: int = 3) -> dict[str, tuple]:
    """Key -> shape of a public CycleGAN ``latest_net_G.pth`` (resnet_9blocks, no dropout), written out independently."""
    keys = {"model.1.weight": (ngf, input_nc, 7, 7), "model.1.bias": (ngf,)}
    keys |= {"model.4.weight": (2 * ngf, ngf, 3, 3), "model.4.bias": (2 * ngf,)}
    keys |= {"model.7.weight": (4 * ngf, 2 * ngf, 3, 3), "model.7.bias": (4 * ngf,)}
    for block in range(10, 19):
        for conv in (1, 5):
            keys[f"model.{block}.conv_block.{conv}.weight"] = (4 * ngf, 4 * ngf, 3, 3)
            keys[f"model.{block}.conv_block.{conv}.bias"] = (4 * ngf,)
    keys |= {"model.19.weight": (4 * ngf, 2 * ngf, 3, 3), "model.19.bias": (2 * ngf,)}
    keys |= {"model.22.weight": (2 * ngf, ngf, 3, 3), "model.22.bias": (ngf,)}
    keys |= {"model.26.weight": (output_nc, ngf, 7, 7), "model.26.bias": (output_nc,)}
    return keys


def test_loads_public_cyclegan_checkpoint(tmp_path):
    keys = public_resnet_keys()
    state = {k: torch.randn(shape) for k, shape in keys.items()}
    # PyTorch < 0.4 checkpoints also hold InstanceNorm running stats; the public loader drops them, so do we
    state["model.2.running_mean"] = torch.zeros(64)
    state["model.10.conv_block.2.running_var"] = torch.ones(256)
    path = tmp_path / "latest_net_G.pth"
    torch.save(state, path)
    gen = build_generator(GeneratorSpec("resnet_9blocks", 64))
    load_weights_into(gen, path)
    assert torch.equal(gen.state_dict()["model.26.weight"], state["model.26.weight"])
    assert set(gen.state_dict()) == set(keys)


def test_loads_dataparallel_prefixed_unet_checkpoint(tmp_path):
    gen = build_generator(GeneratorSpec("unet_256", 8, norm="batch", dropout=0.5))
    keys = set(gen.state_dict())
    # key names of the public pix2pix unet_256 (with dropout): outermost down/up convs and nested levels
    assert {"model.model.0.weight", "model.model.3.weight", "model.model.3.bias", "model.model.1.model.1.weight",
            "model.model.1.model.2.running_mean", "model.model.1.model.6.weight"} <= keys
    innermost_downconv = "model.model.1.model.3.model.3.model.3.model.3.model.3.model.3.model.1.weight"
    assert gen.state_dict()[innermost_downconv].shape == (64, 64, 4, 4)
    source = build_generator(GeneratorSpec("unet_256", 8, norm="batch", dropout=0.5))
    path = tmp_path / "latest_net_G.pth"
    torch.save({f"module.{k}": v for k, v in source.state_dict().items()}, path)
    load_weights_into(gen, path)
    assert all(torch.equal(gen.state_dict()[k], v) for k, v in source.state_dict().items())


def test_mismatched_checkpoint_is_a_one_line_error(tmp_path):
    path = tmp_path / "latest_net_G.pth"
    torch.save({k: torch.randn(s) for k, s in public_resnet_keys(ngf=32).items()}, path)
    with pytest.raises(UserError, match="latest_net_G.pth: does not fit the configured generator .*size mismatch"):
        load_weights_into(build_generator(GeneratorSpec("resnet_9blocks", 64)), path)
    torch.save({"model.1.weight": torch.zeros(64, 3, 7, 7)}, path)
    with pytest.raises(UserError, match=r"missing 47 keys \(e.g. model.1.bias\)"):
        load_weights_into(build_generator(GeneratorSpec("resnet_9blocks", 64)), path)


def test_code_carrying_pickle_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pth"
    torch.save({"model.1.weight": Evil()}, path)
    with pytest.raises(UserError, match="evil.pth: not a loadable state dict"):
        load_weights_into(build_generator(GeneratorSpec("resnet_9blocks", 8)), path)


def test_profile_cli_json(capsys):
    assert main(["profile", "mobile_resnet_9blocks", "--ngf", "16", "--size", "256", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"params": 137_347, "macs": 1_407_713_280}
    assert main(["profile", "resnet_9blocks", "--ngf", "64"]) == 0
    assert "11,378,179 params, 56.799 GMACs" in capsys.readouterr().out


def test_profile_and_bench_give_a_bare_name_the_same_width(capsys):
    """One default per architecture: `profile mobile_resnet_9blocks` measures the ngf 16 that `bench mobile_resnet_9blocks` runs."""
    from dcdgan.metrics.latency import parse_architecture as parse_arch

    assert main(["profile", "mobile_resnet_9blocks", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"params": 137_347, "macs": 1_407_713_280}  # the --ngf 16 numbers above
    assert main(["profile", "mobile_resnet_9blocks"]) == 0
    assert capsys.readouterr().out.startswith("mobile_resnet_9blocks ngf 16 at 256x256")
    assert parse_arch("mobile_resnet_9blocks", 3).ngf == 16
    assert main(["profile", "resnet_9blocks"]) == 0
    assert "ngf 64" in capsys.readouterr().out and parse_arch("resnet_9blocks", 3).ngf == 64
