"""VGG16: weights travel with their preprocessing; missing or bad files never silently become random weights."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from dcdgan.errors import UserError
from dcdgan.losses import feature_loss, style_loss
from dcdgan.perceptual import AUTO_FEATURE_SCALE, VGGPerceptual, load_vgg_file, resolve_vgg, vgg16_features

from conftest import vgg_file


def test_caffe_preprocessing_by_hand():
    vgg = VGGPerceptual(vgg16_features(), "caffe")
    pixel = torch.tensor([1.0, -1.0, 0.0]).view(1, 3, 1, 1)  # RGB (255, 0, 127.5) in 0..255
    expected = torch.tensor([127.5 - 103.939, 0.0 - 116.779, 255.0 - 123.68])  # BGR minus the Caffe mean
    assert torch.allclose(vgg.normalise(pixel).flatten(), expected, atol=1e-4)
    gray = torch.zeros(1, 1, 1, 1)
    assert torch.allclose(vgg.normalise(gray).flatten(), torch.tensor([127.5 - 103.939, 127.5 - 116.779, 127.5 - 123.68]))


def test_torchvision_preprocessing_by_hand():
    vgg = VGGPerceptual(vgg16_features(), "torchvision")
    pixel = torch.tensor([1.0, -1.0, 0.0]).view(1, 3, 1, 1)
    expected = (torch.tensor([1.0, 0.0, 0.5]) - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(vgg.normalise(pixel).flatten(), expected, atol=1e-5)


def test_taps_are_relu1_2_to_relu4_3():
    vgg = VGGPerceptual(vgg16_features(), "torchvision", feature_scale=1.0)
    outs = vgg(torch.zeros(1, 3, 32, 32))
    assert [o.shape[1:] for o in outs] == [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4)]
    assert all(isinstance(vgg.features[i], torch.nn.ReLU) for i in (3, 8, 15, 22))
    assert not any(p.requires_grad for p in vgg.parameters())
    assert AUTO_FEATURE_SCALE == {"caffe": 1 / 255, "torchvision": 0.226}
    assert VGGPerceptual(vgg16_features(), "caffe").feature_scale == 1 / 255


@pytest.mark.golden(file=vgg_file)
@pytest.mark.skipif(vgg_file() is None, reason="offline VGG16 file not present (set DCDGAN_VGG16)")
def test_offline_caffe_file_loads_with_its_preprocessing():
    vgg = load_vgg_file(vgg_file())
    assert vgg.preprocess == "caffe"
    torch.manual_seed(0)
    a, b = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    fa, fb = vgg(a), vgg(b)
    assert style_loss(fa, fa).item() == 0
    # fixed values for fixed inputs and the published weights (torch 2.15, CPU)
    assert style_loss(fa, fb).item() == pytest.approx(EXPECTED_STYLE, rel=1e-3)
    assert feature_loss(fa[1], fb[1]).item() == pytest.approx(EXPECTED_FEATURE, rel=1e-3)
    # the golden numbers, recomputed without dcdgan: torchvision's VGG16 with the file's tensors, the Caffe
    # convention written out (RGB -> BGR, 0..255, minus the BGR mean), activations scaled by 1/255, Gram by hand
    import torchvision
    from safetensors.torch import load_file

    net = torchvision.models.vgg16(weights=None).features.eval()
    net.load_state_dict({k.removeprefix("features."): v for k, v in load_file(str(vgg_file())).items()})

    def taps(images):
        x = ((images + 1) / 2).flip(1) * 255 - torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1)
        out = []
        with torch.no_grad():
            for i, layer in enumerate(net[:23]):
                x = layer(x)
                if i in (3, 8, 15, 22):  # relu1_2, relu2_2, relu3_3, relu4_3
                    out.append(x / 255)
        return out

    def gram_by_hand(f):
        b, c, h, w = f.shape
        return torch.einsum("bci,bdi->bcd", f.reshape(b, c, h * w), f.reshape(b, c, h * w)) / (c * h * w)

    ta, tb = taps(a), taps(b)
    assert EXPECTED_STYLE == pytest.approx(sum((gram_by_hand(x) - gram_by_hand(y)).abs().mean().item() for x, y in zip(ta, tb)), rel=1e-3)
    assert EXPECTED_FEATURE == pytest.approx((ta[1] - tb[1]).abs().mean().item(), rel=1e-3)


def test_bad_files_are_clear_errors(tmp_path):
    with pytest.raises(UserError, match="nope.safetensors: VGG16 weights file not found"):
        load_vgg_file(tmp_path / "nope.safetensors")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00" * 64)
    with pytest.raises(UserError, match="corrupt.safetensors: not a readable safetensors file"):
        load_vgg_file(corrupt)
    bare = tmp_path / "bare.safetensors"
    save_file({f"features.{k}": v for k, v in vgg16_features().state_dict().items()}, bare)
    with pytest.raises(UserError, match="bare.safetensors: the file does not declare its preprocessing"):
        load_vgg_file(bare)
    assert load_vgg_file(bare, "torchvision").preprocess == "torchvision"
    wrong = tmp_path / "wrong.pth"
    torch.save({"features.0.weight": torch.zeros(3)}, wrong)
    with pytest.raises(UserError, match="wrong.pth: not VGG16 conv weights"):
        load_vgg_file(wrong)


def test_auto_reports_missing_weights_instead_of_random(offline):
    resolved = resolve_vgg("auto")
    assert resolved.model is None and resolved.source.startswith("not found")
    with pytest.raises(UserError, match="download from torchvision failed"):
        resolve_vgg("torchvision")


def test_auto_finds_torchvision_cache(offline, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save({f"features.{k}": v for k, v in vgg16_features().state_dict().items()}, cache / "vgg16-397923af.pth")
    resolved = resolve_vgg("auto")
    assert resolved.model is not None and resolved.model.preprocess == "torchvision" and "vgg16-397923af.pth" in resolved.source


def test_random_weights_only_on_request_and_with_a_warning():
    with pytest.warns(UserWarning, match="RANDOM weights"):
        assert resolve_vgg("random").model is not None
    assert resolve_vgg("none").model is None


EXPECTED_STYLE = 0.006730357650667429
EXPECTED_FEATURE = 1.3834089040756226
