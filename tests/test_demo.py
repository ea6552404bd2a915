"""`dcdgan demo`: model loading and image handling, the /translate API through gradio_client against a real server,
and a real browser (Playwright driving Debian's Chromium) uploading an image."""

import base64
import io
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from dcdgan.cli import main
from dcdgan.config import load_config, to_yaml
from dcdgan.data import DataRoot
from dcdgan.demo import DemoModels, InputFormat, newest_run, report_frame, sketch_style, to_array, to_image
from dcdgan.errors import UserError
from dcdgan.nets import build_generator
from dcdgan.assembly import student_spec, teacher_spec
from dcdgan.report import write_report
from dcdgan.samples import sample_grid
from dcdgan.viewing import enlarge_image, enlarge_tensor, view_scale
from dcdgan.weights import load_generator, save_generator

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]


def write_run(run: Path, recipe: str = "quickstart") -> Path:
    """A finished run as `dcdgan distill` leaves it, minus training: config.yaml, teacher/student generators (random
    init, narrow), a sample grid and report.html (all written by the package's own functions)."""
    cfg = load_config(recipe, ["model.teacher_ngf=8", "model.student_ngf=4"])
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(to_yaml(cfg))
    torch.manual_seed(0)
    info = {"image_size": cfg.data.crop_size, "direction": "AtoB", "input_range": [-1, 1], "step": 0, "task": cfg.task}
    teacher, student = build_generator(teacher_spec(cfg)), build_generator(student_spec(cfg.model, cfg.data))
    save_generator(run / "teacher.safetensors", teacher, teacher_spec(cfg), info | {"role": "teacher"})
    save_generator(run / "student.safetensors", student, student_spec(cfg.model, cfg.data), info | {"role": "student"})
    batch = {"A": torch.rand(2, cfg.data.input_nc, 32, 32) * 2 - 1, "B": torch.rand(2, cfg.data.output_nc, 32, 32) * 2 - 1}
    (run / "samples").mkdir()
    from torchvision.utils import save_image

    save_image(sample_grid(batch, teacher, student, torch.device("cpu")), run / "samples" / "step_0000001.png")
    write_report(run)
    return run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    return write_run(tmp_path_factory.mktemp("demo") / "tiny")


@pytest.fixture(scope="module")
def test_png(tiny_run) -> Path:
    """The first test-split input of the quickstart (a 28x28 edge map), as a file."""
    path = tiny_run.parent / "edge.png"
    DataRoot(load_config("quickstart").data).split("test").inputs.image(0).save(path)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_run):
    """The demo of the tiny run, served for real on a free localhost port."""
    from dcdgan.demo import serve

    app = serve([tiny_run], port=free_port(), block=False)
    yield app
    app.close()


def direct(run: Path, which: str, image: Image.Image) -> Image.Image:
    """What the generator gives on the image, computed without the demo."""
    net, _ = load_generator(run / f"{which}.safetensors")
    with torch.no_grad():
        return to_image(net(torch.from_numpy(to_array(image))).numpy())


# ---------------------------------------------------------------- display enlargement


def test_view_scale_reaches_128_px_with_integer_factors():
    assert [view_scale(32, 32), view_scale(28, 40), view_scale(128, 300), view_scale(256, 256)] == [4, 5, 1, 1]
    assert view_scale(32, 32, 256) == 8
    img = Image.fromarray(np.arange(32 * 32, dtype=np.uint8).reshape(32, 32))
    big = np.asarray(enlarge_image(img))
    assert big.shape == (128, 128)
    assert (big[4:8, 8:12] == np.asarray(img)[1, 2]).all()  # every pixel a 4x4 block
    assert enlarge_image(Image.new("L", (200, 150))).size == (200, 150)


def test_sample_grid_tiles_are_enlarged_nearest():
    a, b = torch.rand(2, 1, 32, 32) * 2 - 1, torch.rand(2, 1, 32, 32) * 2 - 1
    grid = sample_grid({"A": a, "B": b}, nn.Identity(), nn.Identity(), torch.device("cpu"))
    assert grid.shape == (3, 2 * (128 + 2) + 2, 4 * (128 + 2) + 2)  # 2 rows of input | teacher | student | target
    tile = grid[0, 2:130, 2 + 3 * 130 : 130 + 3 * 130]  # first row, target column
    assert torch.allclose(tile, enlarge_tensor((b[:1] + 1) / 2)[0, 0])


# ---------------------------------------------------------------- which run, which models


def test_newest_run_and_the_hint_when_there_is_none(tmp_path, monkeypatch, capsys):
    import os

    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="dcdgan distill"):
        newest_run()
    assert main(["demo"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no finished run under runs/" in err and "`dcdgan distill`" in err
    for i, name in enumerate(["b", "a", "c"]):
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "student.safetensors").write_bytes(b"")
        os.utime(tmp_path / "runs" / name / "student.safetensors", (1000 + i, 1000 + i))
    (tmp_path / "runs" / "unfinished").mkdir()
    assert newest_run() == Path("runs") / "c"


def test_without_gradio_one_line_says_what_to_install(tiny_run, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # makes `import gradio` raise ImportError
    assert main(["demo", str(tiny_run)]) == 2
    assert capsys.readouterr().err == 'dcdgan demo: error: the demo needs Gradio: pip install "dcdgan[demo]"\n'


def test_model_arguments(tiny_run, tmp_path):
    models = DemoModels.load([tiny_run])
    assert models.run_dir == tiny_run and models.cfg.data.crop_size == 32
    assert (models.teacher.params, models.student.params) == (37_153, 11_089)  # dcdgan profile mobile_resnet_9blocks --ngf 8 | 4 --input-nc 1 --output-nc 1
    assert models.teacher.source.endswith("teacher.safetensors") and models.student.source.endswith("student.safetensors")
    pair = DemoModels.load([tiny_run / "teacher.safetensors", tiny_run / "student.safetensors"])
    assert pair.run_dir == tiny_run  # found through config.yaml beside the files
    with pytest.raises(UserError, match="nothing to compare with"):
        DemoModels.load([tiny_run / "student.safetensors"])
    with pytest.raises(UserError, match="one run directory, or TEACHER STUDENT"):
        DemoModels.load([tiny_run, tiny_run, tiny_run])
    with pytest.raises(UserError, match="nope: not found"):
        DemoModels.load([tmp_path / "nope"])
    rgb = write_run(tmp_path / "rgb", "horse2zebra")
    with pytest.raises(UserError, match="maps 3 -> 3 channels but .* maps 1 -> 1"):
        DemoModels.load([rgb, tiny_run])
    bare = tmp_path / "bare"
    bare.mkdir()
    for which in ("teacher", "student"):
        for suffix in (".safetensors", ".json"):
            (bare / f"{which}{suffix}").write_bytes((tiny_run / f"{which}{suffix}").read_bytes())
    alone = DemoModels.load([bare / "teacher.safetensors", bare / "student.safetensors"])
    assert alone.run_dir is None and alone.fmt.size_for(70, 50) == (32, 32)  # the image_size of the .json
    (bare / "config.yaml").write_text("model:\n  no_such_key: 1\n")  # a config this dcdgan cannot read
    old = DemoModels.load([bare / "teacher.safetensors", bare / "student.safetensors"])
    assert old.run_dir == bare and old.cfg is None and old.fmt.size_for(70, 50) == (32, 32)
    assert len(old.notes) == 1 and old.notes[0].startswith(f"{bare / 'config.yaml'} not used (unknown config key 'model.no_such_key'")


def test_input_format_converts_channels_and_size():
    quickstart = InputFormat(channels=1, multiple=4, preprocess="resize_and_crop", load_size=32, crop_size=32)
    seen = quickstart.prepare(Image.new("RGBA", (70, 50), (10, 20, 30, 0)))
    assert seen.mode == "L" and seen.size == (32, 32) and np.asarray(seen).min() == 255  # transparent -> white
    as_is = InputFormat(channels=3, multiple=4)
    assert as_is.size_for(70, 50) == (48, 72)
    assert InputFormat(channels=3, multiple=256).size_for(300, 500) == (512, 256)  # unet_256 needs multiples of 256
    x = to_array(Image.fromarray(np.array([[0, 255]], dtype=np.uint8)))
    assert x.shape == (1, 1, 1, 2) and x.tolist() == [[[[-1.0, 1.0]]]]
    assert np.asarray(to_image(np.array([[[[-1.0, 0.0, 1.0, 2.0]]]]))).tolist() == [[0, 128, 255, 255]]


def test_translate_equals_the_generators_and_times_them(tiny_run, test_png):
    models = DemoModels.load([tiny_run])
    image = Image.open(test_png)
    result = models.translate(image)
    assert result.input.size == result.teacher.size == result.student.size == (32, 32) and result.student.mode == "L"
    seen = models.fmt.prepare(image)
    assert np.array_equal(np.asarray(result.teacher), np.asarray(direct(tiny_run, "teacher", seen)))
    assert np.array_equal(np.asarray(result.student), np.asarray(direct(tiny_run, "student", seen)))
    t = result.timings
    assert set(t) == {"backend", "runner", "precision", "height", "width", "teacher_ms", "student_ms", "speedup"}
    assert (t["backend"], t["runner"], t["precision"], t["height"], t["width"]) == ("torch", "eager", "fp32", 32, 32)
    assert t["teacher_ms"] > 0 and t["student_ms"] > 0
    assert models.macs("student", 32, 32) == models.student.macs(32, 32) > 0


def test_onnxruntime_backend_gives_the_torch_images(tiny_run, test_png):
    image = Image.open(test_png)
    on_torch = DemoModels.load([tiny_run], "torch").translate(image)
    models = DemoModels.load([tiny_run], "onnxruntime")
    on_ort = models.translate(image)
    assert (models.teacher.backend, models.student.backend, on_ort.timings["backend"]) == ("onnxruntime",) * 3
    assert models.student.params == 11_089 and models.macs("student", 32, 32) == 1_599_488  # dcdgan profile ... --ngf 4
    for role in ("teacher", "student"):  # float differences of 1e-5 may move a rounding by one gray level, no more
        diff = np.abs(np.asarray(getattr(on_ort, role), np.int16) - np.asarray(getattr(on_torch, role), np.int16))
        assert diff.max() <= 1 and diff.mean() < 0.01


def test_sketch_canvas_only_for_line_drawings():
    paired = DataRoot(load_config("quickstart").data).split("test").inputs
    style = sketch_style([paired.image(i) for i in range(24)])
    assert (style.paper, style.ink, style.hex(style.ink)) == (255, 0, "#000000")  # black edges on white, as the data
    photos = DataRoot(load_config("quickstart_unpaired").data).split("test").inputs
    assert sketch_style([photos.image(i) for i in range(24)]) is None
    assert sketch_style([Image.new("L", (8, 8), 0)]).paper == 0


def test_report_tab_inlines_the_run_report(tiny_run):
    frame = report_frame(tiny_run)
    assert frame.startswith('<iframe title="run report" srcdoc="')
    assert "data:image/png;base64," in frame and "src=&quot;samples/" not in frame
    assert "No run directory" in report_frame(None)


# ---------------------------------------------------------------- the real server


def test_translate_api_through_gradio_client(server, tiny_run, test_png):
    from gradio_client import Client, handle_file

    client = Client(server.local_url, verbose=False)
    api = client.view_api(print_info=False, return_format="dict")
    assert list(api["named_endpoints"]) == ["/translate"]  # the UI's own events stay private
    teacher_file, student_file, timings = client.predict(handle_file(str(test_png)), api_name="/translate")
    seen = DemoModels.load([tiny_run]).fmt.prepare(Image.open(test_png))
    teacher, student = Image.open(teacher_file), Image.open(student_file)
    assert teacher.size == student.size == (32, 32)
    assert np.array_equal(np.asarray(teacher.convert("L")), np.asarray(direct(tiny_run, "teacher", seen)))
    assert np.array_equal(np.asarray(student.convert("L")), np.asarray(direct(tiny_run, "student", seen)))
    assert timings["backend"] == "torch" and (timings["height"], timings["width"]) == (32, 32) and timings["student_ms"] > 0


def test_server_binds_localhost_and_loads_nothing_from_outside(server):
    import urllib.request

    assert server.local_url.startswith("http://127.0.0.1:")
    theme_css = urllib.request.urlopen(server.local_url + "theme.css").read().decode()
    page = urllib.request.urlopen(server.local_url).read().decode()
    for text in (theme_css, page):
        assert "fonts.googleapis" not in text and "cdn.jsdelivr" not in text and "cdnjs" not in text


@pytest.mark.browser
def test_browser_upload_sketch_and_api_page(server, test_png, tmp_path):
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} not installed (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.on("request", lambda r: requests.append(r.url))
            page.goto(server.local_url, wait_until="networkidle")
            page.locator("#upload input[type=file]").set_input_files(str(test_png))
            for role in ("input", "teacher", "student"):
                page.wait_for_selector(f"#view-{role} img", timeout=60_000)
            page.wait_for_selector("#native img.native-student", timeout=60_000)
            sizes = {
                sel: page.eval_on_selector(sel, "e => [e.complete, e.naturalWidth, e.naturalHeight]")
                for sel in ("#view-input img", "#view-teacher img", "#view-student img", "#native img.native-teacher", "#native img.native-student")
            }
            stats = page.inner_text("#stats-student")
            page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)
            uploaded = page.get_attribute("#native img.native-input", "src")
            # the sketch canvas: one stroke is translated without pressing anything
            page.get_by_role("tab", name="Sketch").click()
            canvas = page.locator("#sketch canvas").first.bounding_box()
            x, y = canvas["x"] + canvas["width"] / 2, canvas["y"] + canvas["height"] / 2
            page.mouse.move(x - 80, y + 40)
            page.mouse.down()
            for i in range(17):
                page.mouse.move(x - 80 + 10 * i, y + 40 - 5 * i, steps=2)
            page.mouse.up()
            page.wait_for_function(
                "old => { const e = document.querySelector('#native img.native-input'); return e && e.getAttribute('src') !== old; }",
                arg=uploaded, timeout=60_000,
            )
            sketched = np.asarray(Image.open(io.BytesIO(base64.b64decode(page.get_attribute("#native img.native-input", "src").split(",", 1)[1]))))
            # the API page documents /translate
            page.get_by_text("Use via API").click()
            page.wait_for_selector("text=Translate one image with the teacher and the student", timeout=30_000)
        finally:
            browser.close()
    assert sizes == {
        "#view-input img": [True, 256, 256],  # 32 px shown 8x, nearest
        "#view-teacher img": [True, 256, 256],
        "#view-student img": [True, 256, 256],
        "#native img.native-teacher": [True, 32, 32],  # and 1:1
        "#native img.native-student": [True, 32, 32],
    }
    assert "params 0.011 M" in stats and "MACs" in stats and " ms on torch fp32" in stats
    assert Image.open(tmp_path / "demo.png").width == 1280
    assert sketched.shape == (32, 32) and sketched.min() < 64 and np.median(sketched) == 255  # a dark stroke on white paper
    outside = [u for u in requests if u.split(":", 1)[0] in ("http", "https", "ws", "wss") and not u.startswith(server.local_url)]
    assert outside == []
