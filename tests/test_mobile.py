"""Phone formats: ExecuTorch .pte and LiteRT .tflite agree with PyTorch at two sizes (student and teacher), a
wrong conversion is refused, translate and eval run them on their own runtimes, Core ML is checked structurally,
and a missing package is one line. int8 exports stay above their PSNR bound against fp32, a badly calibrated one is
refused, and translate/eval run them at int8.

The conversions take minutes on a small CPU (ExecuTorch's XNNPACK lowering alone runs dozens of graph passes),
so every test that converts is marked ``slow``; CI installs ``.[mobile]`` and runs them as a step of their own.
"""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest
import torch
from torch import nn

from dcdgan import mobile
from dcdgan.backends import load_runner, load_torch_source
from dcdgan.cli import main
from dcdgan.errors import UserError
from dcdgan.export import export_model

SUFFIX = {"executorch": ".pte", "litert": ".tflite", "coreml": ".mlpackage"}
PACKAGE = {"executorch": "executorch", "litert": "litert_torch", "coreml": "coremltools"}


def needs(fmt: str):
    """Skip, saying why, when the format's package (the [mobile] extra) is not installed."""
    missing = importlib.util.find_spec(PACKAGE[fmt]) is None or (fmt == "litert" and importlib.util.find_spec("ai_edge_litert") is None)
    return pytest.mark.skipif(missing, reason=f'{PACKAGE[fmt]} is not installed (pip install -e ".[mobile]")')


@pytest.fixture(scope="session")
def phone_exports(tiny_run_dir, tmp_path_factory):
    """Exports made once per (format, which), shared by the tests below: {(fmt, which): (file, result)}."""
    folder = tmp_path_factory.mktemp("phone")
    made: dict = {}

    def get(fmt: str, which: str = "student", size: int = 32):
        if (fmt, which, size) not in made:
            out = folder / f"{which}{size}{SUFFIX[fmt]}"
            made[fmt, which, size] = out, export_model(tiny_run_dir, fmt, out, which=which, sizes=(size, size + 16), quiet=True)
        return made[fmt, which, size]

    return get


def runner_and_net(out, tiny_run_dir, fmt, which, result, real=True):
    """The export on its runtime, and the PyTorch net it came from; checks what both must agree on."""
    assert out.is_file() and mobile.description_file(out).is_file()
    assert result["max_abs_diff"] <= 1e-4
    assert ("max_abs_diff_real" in result) is real  # checked on the run's own (32 px) images where they fit
    net = load_torch_source(tiny_run_dir, which).net.eval()
    runner = load_runner(out)
    assert runner.backend == fmt
    assert (runner.input_nc, runner.output_nc, runner.size_multiple) == (1, 1, 4)
    assert runner.params == sum(p.numel() for p in net.parameters())
    return runner, net


def assert_matches(runner, net, shapes) -> None:
    rng = np.random.default_rng(1)
    for shape in shapes:
        x = rng.uniform(-1, 1, shape).astype(np.float32)
        with torch.no_grad():
            expected = net(torch.from_numpy(x)).numpy()
        got = runner(x)
        assert got.shape == shape
        assert np.abs(got - expected).max() <= 1e-4


@pytest.mark.slow
@needs("executorch")
@pytest.mark.parametrize("which", ["student", "teacher"])
def test_executorch_export_matches_pytorch_at_two_sizes(phone_exports, tiny_run_dir, which):
    out, result = phone_exports("executorch", which)
    runner, net = runner_and_net(out, tiny_run_dir, "executorch", which, result)
    assert_matches(runner, net, [(1, 1, 32, 32), (3, 1, 48, 48), (2, 1, 32, 48)])  # one program: dynamic H, W; batches image by image
    with pytest.raises(UserError, match=r"exported for images up to 512x512, got 516x32"):
        runner(np.zeros((1, 1, 516, 32), np.float32))


@pytest.mark.slow
@needs("litert")
@pytest.mark.parametrize("which", ["student", "teacher"])
def test_litert_exports_match_pytorch_at_two_sizes(phone_exports, tiny_run_dir, which):
    for size in (32, 48):  # a .tflite takes one size (mobile.litert_bytes says why): one export per size
        out, result = phone_exports("litert", which, size)
        assert result["size"] == size
        runner, net = runner_and_net(out, tiny_run_dir, "litert", which, result, real=size == 32)  # 48 px: the run's images do not fit
        assert_matches(runner, net, [(1, 1, size, size), (3, 1, size, size)])
        with pytest.raises(UserError, match=rf"a LiteRT export takes {size}x{size} images, got 40x40 \(export again with --size\)"):
            runner(np.zeros((1, 1, 40, 40), np.float32))


@pytest.mark.slow
@pytest.mark.parametrize("fmt", [pytest.param("executorch", marks=needs("executorch")), pytest.param("litert", marks=needs("litert"))])
def test_a_wrong_conversion_is_refused(tiny_run_dir, tmp_path, monkeypatch, fmt):
    """Inject an error: the converted network's last bias is off by 1e-3, as a faulty converter's could be."""
    real = {"executorch": mobile.inference_form, "litert": mobile.litert_form}[fmt]

    def faulty(net: nn.Module) -> nn.Module:
        form = real(net)
        last = [m for m in form.modules() if isinstance(m, nn.Conv2d)][-1]
        last.bias.data += 1e-3
        return form

    monkeypatch.setattr(mobile, "inference_form" if fmt == "executorch" else "litert_form", faulty)
    out = tmp_path / f"s{SUFFIX[fmt]}"
    with pytest.raises(UserError, match=rf"{fmt} export differs from PyTorch by .* on random input \(> 0.0001\); not written"):
        export_model(tiny_run_dir, fmt, out, sizes=(32,), quiet=True)
    assert not out.exists() and not mobile.description_file(out).exists()


@pytest.mark.slow
@pytest.mark.parametrize("fmt", [pytest.param("executorch", marks=needs("executorch")), pytest.param("litert", marks=needs("litert"))])
def test_translate_runs_the_phone_export(phone_exports, tiny_run_dir, tmp_path, capsys, fmt):
    from PIL import Image

    out, _ = phone_exports(fmt)
    images = tmp_path / "in"
    images.mkdir()
    rng = np.random.default_rng(0)
    second = (30, 45) if fmt == "executorch" else (29, 31)  # padded to 32x48 (32x32: a .tflite's one size), cropped back
    for name, size in (("a.png", (32, 32)), ("b.png", second)):
        Image.fromarray(rng.integers(0, 256, size, dtype=np.uint8), "L").save(images / name)
    assert main(["translate", str(out), str(images), str(tmp_path / "phone")]) == 0
    assert f"translated 2 image(s) into {tmp_path / 'phone'} ({fmt}, fp32)" in capsys.readouterr().out
    assert main(["translate", str(tiny_run_dir), str(images), str(tmp_path / "torch")]) == 0
    for name in ("a.png", "b.png"):
        phone = np.asarray(Image.open(tmp_path / "phone" / name), dtype=int)
        torch_ = np.asarray(Image.open(tmp_path / "torch" / name), dtype=int)
        assert phone.shape == torch_.shape
        assert np.abs(phone - torch_).max() <= 1  # 1e-4 apart before rounding to 8 bits: at most one level


@pytest.mark.slow
@pytest.mark.parametrize("fmt", [pytest.param("executorch", marks=needs("executorch")), pytest.param("litert", marks=needs("litert"))])
def test_eval_model_scores_the_phone_export_like_the_student(phone_exports, tiny_run_dir, capsys, fmt):
    out, _ = phone_exports(fmt)
    assert main(["eval", str(tiny_run_dir), "--model", str(out), "--no-fid", "--split", "test", "--max-images", "8", "--json"]) == 0
    models = json.loads(capsys.readouterr().out)["models"]
    exported, student = models["exported"], models["student_last"]
    assert exported["backend"] == fmt and exported["n_images"] == student["n_images"] == 8
    assert exported["psnr"] == pytest.approx(student["psnr"], abs=0.05)
    assert exported["ssim"] == pytest.approx(student["ssim"], abs=1e-3)
    assert (exported["params"], exported["macs"]) == (student["params"], student["macs"])


@pytest.mark.slow
@needs("coreml")
@pytest.mark.parametrize("which", ["student", "teacher"])
def test_coreml_package_has_the_networks_structure(phone_exports, tiny_run_dir, which):
    out, result = phone_exports("coreml", which)
    assert out.is_dir() and (out / "Manifest.json").is_file()
    structure = mobile.coreml_structure(out)
    (in_shape,) = structure["inputs"].values()
    (out_shape,) = structure["outputs"].values()
    assert in_shape[:2] == [1, 1] and in_shape[2:] == ["8..512", "8..512"]  # batch 1, H and W dynamic in steps of 4
    assert out_shape[:2] == [1, 1]
    net = load_torch_source(tiny_run_dir, which).net
    convs = sum(isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) for m in net.modules())
    assert structure["ops"]["conv"] + structure["ops"]["conv_transpose"] == convs  # the phase-split head is still one conv
    assert structure["ops"]["instance_norm"] == sum(isinstance(m, nn.InstanceNorm2d) for m in net.modules())
    assert json.loads(structure["metadata"]["dcdgan"])["spec"]["ngf"] == (4 if which == "student" else 8)
    assert result["op_count"] == sum(structure["ops"].values())


@pytest.mark.slow
@needs("coreml")
def test_a_coreml_package_missing_a_layer_is_refused(tiny_run_dir, tmp_path, monkeypatch):
    real = mobile.inference_form

    def without_head(net: nn.Module) -> nn.Module:  # inject an error: the converter dropped the output conv
        form = real(net)
        form.model[-2] = nn.Identity()
        return form

    monkeypatch.setattr(mobile, "inference_form", without_head)
    out = tmp_path / "s.mlpackage"
    with pytest.raises(UserError, match=r"fails its structural check: .*convolutions \(the network has"):
        export_model(tiny_run_dir, "coreml", out, quiet=True)
    assert not out.exists()


@pytest.mark.parametrize("fmt, package", [("executorch", "executorch"), ("litert", "litert_torch"), ("coreml", "coremltools")])
def test_missing_converter_is_one_line(tiny_run_dir, tmp_path, monkeypatch, capsys, fmt, package):
    monkeypatch.setitem(sys.modules, package, None)  # import now raises ImportError, installed or not
    out = tmp_path / f"s{SUFFIX[fmt]}"
    assert main(["export", str(tiny_run_dir), "--format", fmt, "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip() == f'dcdgan export: error: {package} is not installed; pip install "dcdgan[mobile]"'
    assert not out.exists()


@pytest.mark.parametrize("suffix, package", [(".pte", "executorch"), (".tflite", "ai_edge_litert")])
def test_missing_runtime_is_one_line(tmp_path, monkeypatch, capsys, suffix, package):
    monkeypatch.setitem(sys.modules, package, None)
    model = tmp_path / f"s{suffix}"
    model.write_bytes(b"\0" * 16)
    (tmp_path / "in.png").write_bytes(b"")
    assert main(["translate", str(model), str(tmp_path / "in.png"), str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip() == f'dcdgan translate: error: {package} is not installed; pip install "dcdgan[mobile]"'


def test_phone_exports_refuse_other_precisions(tiny_run_dir, tmp_path, capsys):
    assert main(["export", str(tiny_run_dir), "--format", "litert", "--precision", "bf16", "--out", str(tmp_path / "s.tflite")]) == 2
    assert "--format litert exports fp32, int8; for bf16 use --format openvino" in capsys.readouterr().err
    assert main(["export", str(tiny_run_dir), "--format", "coreml", "--precision", "int8", "--out", str(tmp_path / "s.mlpackage")]) == 2
    assert "--format coreml exports fp32; for int8 use --format openvino" in capsys.readouterr().err
    assert main(["export", str(tiny_run_dir), "--format", "executorch", "--out", str(tmp_path / "s.tflite")]) == 2
    assert capsys.readouterr().err.strip() == f"dcdgan export: error: {tmp_path / 's.tflite'}: a executorch export must end in .pte"


# ---------------------------------------------------------------- int8


@pytest.fixture(scope="session")
def int8_exports(tiny_run_dir, tmp_path_factory):
    """int8 exports at the run's 32 px made once per format: {fmt: (file, result)}."""
    folder = tmp_path_factory.mktemp("phone_int8")
    made: dict = {}

    def get(fmt: str):
        if fmt not in made:
            out = folder / f"student_int8{SUFFIX[fmt]}"
            made[fmt] = out, export_model(tiny_run_dir, fmt, out, precision="int8", sizes=(32, 48), quiet=True)
        return made[fmt]

    return get


def val_images(run_dir, count: int = 100) -> list[np.ndarray]:
    from dcdgan.conversion import run_images

    return run_images(load_torch_source(run_dir), "val", max_images=count)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", [pytest.param("executorch", marks=needs("executorch")), pytest.param("litert", marks=needs("litert"))])
def test_int8_export_stays_above_the_psnr_bound(int8_exports, phone_exports, tiny_run_dir, fmt):
    from dcdgan.parity import psnr_against, torch_outputs

    out, result = int8_exports(fmt)
    assert out.is_file() and result["bytes"] == out.stat().st_size
    description = json.loads(mobile.description_file(out).read_text())
    assert (description["precision"], description["size"], result["size"]) == ("int8", 32, 32)
    assert result["out"] == str(out) and result["precision"] == "int8"
    assert mobile.INT8_MIN_PSNR <= result["psnr_vs_fp32"] < 100  # quantized, so not identical to fp32, yet within the bound
    assert 0 < result["max_abs_diff_vs_fp32"] <= 2
    assert out.stat().st_size < phone_exports(fmt)[0].stat().st_size  # int8 weights: a smaller file than the fp32 export
    runner = load_runner(out)
    assert (runner.backend, runner.precision) == (fmt, "int8")  # the file's precision, as an OpenVINO int8 model
    images = val_images(tiny_run_dir)
    net = load_torch_source(tiny_run_dir).net.eval()
    assert psnr_against(runner, images, torch_outputs(net, images)) == pytest.approx(result["psnr_vs_fp32"], abs=1e-4)  # the same check, rerun
    with pytest.raises(UserError, match=r"takes 32x32 images, got 48x48 \(export again with --size\)"):
        runner(np.zeros((1, 1, 48, 48), np.float32))


@pytest.mark.slow
@pytest.mark.parametrize("fmt", [pytest.param("executorch", marks=needs("executorch")), pytest.param("litert", marks=needs("litert"))])
def test_an_int8_export_under_the_bound_is_refused(tiny_run_dir, tmp_path, monkeypatch, fmt):
    """Inject an error: calibration on images scaled by 0.05, as a faulty data pipeline could feed it; the input's
    int8 range then clips every real pixel beyond +-0.05."""
    real_executorch, real_litert = mobile.executorch_int8_bytes, mobile.litert_int8_bytes
    shrunk = lambda calibration: [x * 0.05 for x in calibration]
    monkeypatch.setattr(mobile, "executorch_int8_bytes", lambda net, spec, calibration: real_executorch(net, spec, shrunk(calibration)))
    monkeypatch.setattr(mobile, "litert_int8_bytes", lambda fp32, calibration: real_litert(fp32, shrunk(calibration)))
    out = tmp_path / f"s{SUFFIX[fmt]}"
    with pytest.raises(UserError, match=rf"int8 {fmt} export reaches PSNR .* dB against fp32 on validation images \(< 30 dB\); not written"):
        export_model(tiny_run_dir, fmt, out, precision="int8", sizes=(32,), quiet=True)
    assert not out.exists() and not mobile.description_file(out).exists()


@pytest.mark.slow
@pytest.mark.parametrize("fmt", [pytest.param("executorch", marks=needs("executorch")), pytest.param("litert", marks=needs("litert"))])
def test_translate_and_eval_run_an_int8_export(int8_exports, tiny_run_dir, tmp_path, capsys, fmt):
    from PIL import Image

    from dcdgan.metrics.paired import to_uint8

    out, _ = int8_exports(fmt)
    images = tmp_path / "in"
    images.mkdir()
    for i, x in enumerate(val_images(tiny_run_dir, 4)):
        Image.fromarray(to_uint8(torch.from_numpy(x))[0, 0].numpy(), "L").save(images / f"{i}.png")
    assert main(["translate", str(out), str(images), str(tmp_path / "phone")]) == 0
    assert f"translated 4 image(s) into {tmp_path / 'phone'} ({fmt}, int8)" in capsys.readouterr().out
    assert main(["translate", str(tiny_run_dir), str(images), str(tmp_path / "torch")]) == 0
    phone = np.stack([np.asarray(Image.open(tmp_path / "phone" / f"{i}.png"), dtype=float) for i in range(4)])
    torch_ = np.stack([np.asarray(Image.open(tmp_path / "torch" / f"{i}.png"), dtype=float) for i in range(4)])
    assert phone.shape == torch_.shape == (4, 32, 32)
    psnr = 10 * np.log10(255**2 / ((phone - torch_) ** 2).mean())
    assert 25 <= psnr < 100  # int8, not fp32; 25 dB over 4 images, as the export's bound is 30 dB on the mean over 100

    capsys.readouterr()
    assert main(["eval", str(tiny_run_dir), "--model", str(out), "--no-fid", "--split", "test", "--max-images", "8", "--json"]) == 0
    models = json.loads(capsys.readouterr().out)["models"]
    exported, student = models["exported"], models["student_last"]
    assert (exported["backend"], exported["precision"], exported["n_images"]) == (fmt, "int8", 8)
    # The 2-step student is ~8 dB from its targets (RMSE ~100 levels); int8's error (RMSE <= 8 levels at >= 30 dB)
    # adds in quadrature and moves that PSNR by < 0.03 dB.
    assert exported["psnr"] == pytest.approx(student["psnr"], abs=0.1)


@pytest.mark.parametrize("suffix, package", [(".pte", "executorch"), (".tflite", "ai_edge_litert")])
def test_phone_runners_refuse_int8_of_an_fp32_file_and_other_precisions(tmp_path, suffix, package):
    pytest.importorskip(package, reason=f'{package} is not installed (pip install -e ".[mobile]")')
    model = tmp_path / f"s{suffix}"
    model.write_bytes(b"\0" * 16)
    mobile.description_file(model).write_text(json.dumps({"precision": "fp32", "spec": {}}))
    with pytest.raises(UserError, match=rf"^{model}: not quantized; export it with --precision int8 \(calibrated on the run's training images\)$"):
        load_runner(model, precision="int8")
    with pytest.raises(UserError, match=rf"^{model}: phone exports run fp32 or int8 \(as exported\); for bf16 use --backend openvino$"):
        load_runner(model, precision="bf16")


@needs("litert")
def test_an_int8_export_at_another_size_than_the_runs_images_is_one_line(tiny_run_dir, tmp_path, capsys):
    out = tmp_path / "s.tflite"
    assert main(["export", str(tiny_run_dir), "--format", "litert", "--precision", "int8", "--size", "48", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("an int8 phone export takes the run's image size; its train images are 32x32, not 48x48 (--size 32)")
    assert not out.exists()


def photo_like(side: int) -> np.ndarray:
    """A 1 x 1 x side x side input in [-1, 1] with a photo's statistics: a bright, contrasty low-frequency scene,
    clipped to flat regions at -1 and 1, plus grain. Its activations' planes have means large against their spreads,
    where the old ExecuTorch norm lost precision (without the offset and clipping it missed by 2e-5 only)."""
    y, x = np.mgrid[0:side, 0:side].astype(np.float64) / side
    shading = 0.6 * np.sin(2.1 * np.pi * x + 0.4) * np.cos(1.3 * np.pi * y) + 0.3 * (x - y)
    grain = 0.1 * np.random.default_rng(0).standard_normal((side, side))
    return np.clip(0.4 + 2 * shading + grain, -1, 1).astype(np.float32)[None, None]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", [pytest.param("executorch", marks=needs("executorch")), pytest.param("litert", marks=needs("litert"))])
def test_a_256px_student_converts_within_the_parity_bound(fmt):
    """The deployed student's width (ngf 16) at the deployed size. With ExecuTorch's own instance norm kernel (sums of
    a whole 256 x 256 plane, variance as E[x^2] - E[x]^2) this export was 3.4e-4 from PyTorch on this image (PyTorch
    fp32 is 4.6e-6 from fp64 on it); the phone forms take their means per row, then over the rows."""
    from dcdgan.nets import GeneratorSpec, build_generator
    from dcdgan.parity import PARITY_TOLERANCE

    torch.manual_seed(0)
    spec = GeneratorSpec("mobile_resnet_9blocks", 16, 1, 1)
    net = build_generator(spec).eval()
    x = photo_like(256)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    if fmt == "executorch":
        from executorch.runtime import Runtime

        data = mobile.executorch_bytes(net, spec)  # kept referenced: the loaded program reads from it
        got = Runtime.get().load_program(data).load_method("forward").execute([torch.from_numpy(x)])[0].numpy()
    else:
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_content=mobile.litert_bytes(net, spec, 256))
        interpreter.allocate_tensors()
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
        interpreter.invoke()
        got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    assert got.shape == expected.shape == (1, 1, 256, 256)
    assert np.abs(got - expected).max() <= PARITY_TOLERANCE
