"""`dcdgan export --format web`: the static folder (page, ONNX model, the onnxruntime-web files it loads), the one-line
errors, and the page itself in Debian's Chromium, served by `python -m http.server`, against PyTorch and `dcdgan translate`."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dcdgan.assembly import student_spec
from dcdgan.cli import main
from dcdgan.config import load_config
from dcdgan.nets import build_generator
from dcdgan.translate import pad_to_multiple, to_array
from dcdgan.weights import load_generator, save_generator
from dcdgan.web import ORT_WEB_VERSION, RUNTIME_ENV, RUNTIME_FILES, SHIPPED_MB, WASM_FILES, WEBGPU_FILES, fetch_runtime

from test_demo import CHROMIUM, CHROMIUM_ARGS, write_run

# onnxruntime-web's wasm kernels (MLAS, SIMD) against PyTorch's: the float outputs agree as the CPU exports must
# (the export's parity bound, 1e-4); the images written from them differ by at most one level of 255 where a value
# sits on a rounding boundary.
WEB_PARITY = 1e-4
# Set by .ci/run: a machine without npm or Chromium fails these tests instead of skipping them.
REQUIRED = os.environ.get("DCDGAN_REQUIRE_WEB") == "1"


def unavailable(reason: str):
    (pytest.fail if REQUIRED else pytest.skip)(f"{reason} (DCDGAN_REQUIRE_WEB=1 makes this a failure)" if REQUIRED else reason)


@pytest.fixture(scope="session")
def runtime(tmp_path_factory) -> Path:
    """The pinned onnxruntime-web files, fetched once per session with npm (as the command does on a fresh machine)."""
    if os.environ.get(RUNTIME_ENV):
        return Path(os.environ[RUNTIME_ENV])
    if shutil.which("npm") is None:
        unavailable("npm is not on PATH: the web export fetches onnxruntime-web with it")
    folder = tmp_path_factory.mktemp("ort-web") / f"onnxruntime-web-{ORT_WEB_VERSION}"
    fetch_runtime(folder, quiet=True)
    return folder


@pytest.fixture
def with_runtime(runtime, monkeypatch) -> Path:
    monkeypatch.setenv(RUNTIME_ENV, str(runtime))
    return runtime


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    return write_run(tmp_path_factory.mktemp("web") / "tiny")


def rgb_student(path: Path) -> Path:
    """The horse2zebra recipe's student (3 channels, random init) as a generator file outside any run."""
    cfg = load_config("horse2zebra")
    spec = student_spec(cfg.model, cfg.data)
    torch.manual_seed(0)
    save_generator(path, build_generator(spec), spec, {"role": "student", "input_range": [-1, 1]})
    return path


def odd_rgb_image(path: Path, h: int, w: int) -> Path:
    """A smooth colour picture with texture, of a size no stride multiple divides."""
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    rng = np.random.default_rng(0)
    pixels = np.stack([np.sin(6 * x) * 0.5 + 0.5, y, (x + y) / 2], -1) * 200 + rng.uniform(0, 55, (h, w, 3))
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path)
    return path


# ---------------------------------------------------------------- the folder, without a browser


def test_folder_holds_the_page_the_checked_model_and_only_the_runtime_files_it_loads(tiny_run, with_runtime, tmp_path, capsys):
    site = tmp_path / "site"
    assert main(["export", str(tiny_run), "--format", "web", "--out", str(site)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"parity fp32 onnx vs PyTorch, random input \(3 batches, 32x32, 32x36, 40x40\): max abs diff \d", out)
    assert f"wrote {site}/ (" in out and f"python -m http.server -d {site}" in out
    files = sorted(str(p.relative_to(site)) for p in site.rglob("*") if p.is_file())
    assert files == sorted(["app.js", "index.html", "model.json", "model.onnx", "sw.js", *(f"ort/{n}" for n in RUNTIME_FILES)])
    assert all(p.stat().st_mode & 0o444 == 0o444 for p in site.rglob("*") if p.is_file())  # any static server can read them
    runtime_mb = sum((site / "ort" / n).stat().st_size for n in RUNTIME_FILES) / 1e6
    assert abs(runtime_mb - SHIPPED_MB) < 0.05  # what the README states
    # the page imports one build; each build loads its own wasm module, and nothing else of the package is shipped
    app = (site / "app.js").read_text()
    assert '"./ort/ort.wasm.min.mjs"' in app and '"./ort/ort.webgpu.min.mjs"' in app and 'register("sw.js")' in app
    for build in (WASM_FILES, WEBGPU_FILES):  # the build loads its module (.mjs), which loads its .wasm
        assert f'"{build[1]}"' in (site / "ort" / build[0]).read_text() and f'"{build[2]}"' in (site / "ort" / build[1]).read_text()
    assert 'src="app.js"' in (site / "index.html").read_text()
    assert json.loads((site / "model.json").read_text()) == {
        "netG": "mobile_resnet_9blocks", "ngf": 4, "input_nc": 1, "output_nc": 1, "size_multiple": 4,
        "params": 11089, "macs_256": 102367232, "input_range": [-1, 1], "model": "model.onnx", "onnxruntime_web": ORT_WEB_VERSION,
    }
    # the model is the checked ONNX export: same outputs as the run's student
    import onnxruntime as ort

    x = np.random.default_rng(1).uniform(-1, 1, (1, 1, 28, 36)).astype(np.float32)
    session = ort.InferenceSession(str(site / "model.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = load_generator(tiny_run / "student.safetensors")[0].eval()(torch.from_numpy(x)).numpy()
    assert np.abs(session.run(None, {"input": x})[0] - expected).max() < 1e-4


def test_without_npm_one_line_says_what_to_install(tiny_run, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(RUNTIME_ENV, raising=False)
    monkeypatch.setenv("DCDGAN_CACHE_DIR", str(tmp_path / "cache"))  # nothing fetched before
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    assert main(["export", str(tiny_run), "--format", "web", "--out", str(tmp_path / "site")]) == 2
    captured = capsys.readouterr()
    assert captured.err == (
        f"dcdgan export: error: --format web needs the onnxruntime-web {ORT_WEB_VERSION} runtime, fetched with npm, which is not on PATH: "
        f"install Node.js with npm (e.g. apt-get install npm), or set {RUNTIME_ENV} to a folder with its dist files\n"
    )
    assert not (tmp_path / "site").exists()


def test_a_runtime_folder_without_the_files_is_named_in_one_line(tiny_run, tmp_path, monkeypatch, capsys):
    (tmp_path / "dist").mkdir()
    (tmp_path / "dist" / WASM_FILES[0]).write_text("// only one of them")
    monkeypatch.setenv(RUNTIME_ENV, str(tmp_path / "dist"))
    assert main(["export", str(tiny_run), "--format", "web", "--out", str(tmp_path / "site")]) == 2
    missing = ", ".join(RUNTIME_FILES[1:])
    assert capsys.readouterr().err == f"dcdgan export: error: {RUNTIME_ENV}={tmp_path / 'dist'}: missing {missing} (the dist files of onnxruntime-web {ORT_WEB_VERSION})\n"


@pytest.mark.parametrize(("extra", "line"), [
    (["--precision", "int8"], "--format web exports fp32 (onnxruntime-web runs the ONNX graph as stored), not int8"),
    (["--out", "page.html"], "page.html: --format web writes a folder (e.g. --out site/), not a file"),
])
def test_web_refuses_what_it_cannot_write(tiny_run, tmp_path, monkeypatch, capsys, extra, line):
    monkeypatch.chdir(tmp_path)
    args = ["export", str(tiny_run), "--format", "web", "--out", "site", *extra]
    assert main(args) == 2
    assert capsys.readouterr().err == f"dcdgan export: error: {line}\n"


# ---------------------------------------------------------------- the page in Chromium


@contextlib.contextmanager
def static_server(folder: Path):
    """``python -m http.server`` on a free localhost port serving ``folder``: no Python of ours behind the page."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(folder)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("python -m http.server did not start")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.terminate()
        server.wait(timeout=10)


def translate_in_page(browser, url: str, image: Path, timeout_ms: int = 120_000, max_side: str = "1024") -> dict:
    """Open the page, pick ``image``, wait for the output and the timing; the page's state, input and output arrays."""
    page = browser.new_page()
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(url)
    page.wait_for_function("window.dcdgan && (window.dcdgan.ready || window.dcdgan.error)", timeout=timeout_ms)
    assert page.evaluate("dcdgan.error") is None
    page.select_option("#max-side", max_side)
    page.set_input_files("#file", str(image))
    page.wait_for_function("window.dcdgan.done", timeout=timeout_ms)
    state = page.evaluate("""() => ({error: dcdgan.error, backend: dcdgan.backend, webgpu: dcdgan.webgpu, threads: dcdgan.threads, isolated: dcdgan.isolated,
        reason: dcdgan.threads_reason, ms: dcdgan.ms, input: Array.from(dcdgan.input.data), input_dims: dcdgan.input.dims,
        output: Array.from(dcdgan.output.data), output_dims: dcdgan.output.dims})""")
    state["timing"] = page.inner_text("#timing")
    state["caption"] = page.inner_text("#input-caption")
    state["runtime"] = page.inner_text("#runtime")
    state["shown"] = page.eval_on_selector("#output", "c => Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)")
    state["requests"] = requests
    page.close()
    assert state["error"] is None, state["error"]
    return state


def check_against_pytorch(state: dict, weights: Path, image: Path, translated: Path, channels: int) -> dict:
    """The page's input equals translate's preprocessing; its output equals PyTorch on that input; its picture equals translate's."""
    net = load_generator(weights)[0].eval()
    x = np.asarray(state["input"], np.float32).reshape(state["input_dims"])
    expected_x = pad_to_multiple(to_array(Image.open(image), channels), 4)[None]
    assert x.shape == expected_x.shape
    assert np.abs(x - expected_x).max() <= 1e-6  # float32 rounding of v / 127.5 - 1 (JS computes it in float64)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    y = np.asarray(state["output"], np.float32).reshape(state["output_dims"])
    diff = float(np.abs(y - expected).max())
    assert diff <= WEB_PARITY, f"page output differs from PyTorch by {diff:.2e}"
    # what the page shows, against `dcdgan translate` with ONNX Runtime on the same model file
    w, h = Image.open(image).size
    shown = np.asarray(state["shown"], np.uint8).reshape(h, w, 4)[..., :3].astype(int)
    written = np.asarray(Image.open(translated).convert("RGB")).astype(int)
    assert np.abs(shown - written).max() <= 1
    mse = float(((shown - written) ** 2).mean())
    psnr = 100.0 if mse == 0 else 10 * np.log10(255**2 / mse)
    assert psnr >= 40
    return {"max_abs_diff": diff, "psnr_vs_translate": psnr}


def launch(playwright, *extra: str):
    if not CHROMIUM.is_file():
        unavailable(f"{CHROMIUM} not installed (apt-get install -y chromium)")
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=[*CHROMIUM_ARGS, *extra])


@pytest.mark.browser
def test_page_translates_in_chromium_like_pytorch_and_reports_ms(tiny_run, with_runtime, tmp_path, record_property):
    from playwright.sync_api import sync_playwright

    # two sites: the 3-channel student of the photo recipes, and the 1-channel quickstart one (grayscale path); the
    # 256 px latency is benchmarks/web_latency.py's
    sites = {"rgb": tmp_path / "rgb", "gray": tmp_path / "gray"}
    weights = {"rgb": rgb_student(tmp_path / "student.safetensors"), "gray": tiny_run / "student.safetensors"}
    images = {"rgb": odd_rgb_image(tmp_path / "photo.png", 62, 59), "gray": tmp_path / "edge.png"}
    Image.open(odd_rgb_image(tmp_path / "rgb-source.png", 30, 27)).convert("L").save(images["gray"])
    for name in sites:
        assert main(["export", str(weights[name]), "--format", "web", "--out", str(sites[name]), "--json"]) == 0
        assert main(["translate", str(sites[name] / "model.onnx"), str(images[name]), str(tmp_path / f"{name}-translated.png"), "--quiet"]) == 0
    results = {}
    with sync_playwright() as p:
        browser = launch(p)
        try:
            for name in sites:
                with static_server(sites[name]) as url:
                    results[name] = state = translate_in_page(browser, url, images[name])
                    channels = 3 if name == "rgb" else 1
                    state |= check_against_pytorch(state, weights[name], images[name], tmp_path / f"{name}-translated.png", channels)
                    outside = [u for u in state["requests"] if not u.startswith(url) and not u.startswith(("data:", "blob:"))]
                    assert outside == []
                    if name == "gray":  # a large RGBA picture is shrunk to the chosen side first, then translated
                        big = Image.new("RGBA", (1500, 1000), (0, 0, 0, 0))
                        big.paste(Image.open(images["rgb"]).convert("RGBA").resize((1000, 800)), (250, 100))
                        big.save(tmp_path / "big.png")
                        shrunk = translate_in_page(browser, url, tmp_path / "big.png", max_side="256")
                        assert shrunk["caption"] == "input 256x171, shrunk from 1500x1000"
                        assert shrunk["output_dims"] == [1, 1, 172, 256] and len(shrunk["shown"]) == 256 * 171 * 4
        finally:
            browser.close()
    rgb = results["rgb"]
    # headless Chromium without a GPU offers no WebGPU adapter (the slow test forces one: SwiftShader), so wasm ran
    adapter = rgb["webgpu"]
    assert adapter in ("no adapter", "no navigator.gpu") and rgb["backend"] == "wasm"
    # python -m http.server sends no COOP/COEP headers: sw.js adds them after one reload, so threads are allowed
    assert rgb["isolated"] is True and rgb["reason"] == ""
    assert rgb["output_dims"] == [1, 3, 64, 60] and len(rgb["ms"]["runs"]) == 3 and rgb["ms"]["median"] > 0
    assert re.fullmatch(r"[\d.]+ ms per image \(59x62, median of 3 runs after the first, which took [\d.]+ ms\) on wasm, \d threads?", rgb["timing"])
    assert rgb["runtime"].startswith(f"onnxruntime-web {ORT_WEB_VERSION}, wasm SIMD, {rgb['threads']} thread")
    line = (f"web page, {rgb['output_dims'][2]}x{rgb['output_dims'][3]} RGB student: {rgb['ms']['median']:.1f} ms per image on wasm SIMD, "
            f"{rgb['threads']} thread(s), max abs diff {rgb['max_abs_diff']:.1e} vs PyTorch; WebGPU adapter: {adapter}")
    print(line)
    record_property("web_ms_per_image", line)


@pytest.mark.browser
@pytest.mark.slow  # SwiftShader compiles the WebGPU shaders on the CPU: about a minute for the tiny net
def test_page_on_webgpu_swiftshader_matches_pytorch(tiny_run, with_runtime, tmp_path, record_property):
    from playwright.sync_api import sync_playwright

    image = tmp_path / "edge.png"
    Image.open(odd_rgb_image(tmp_path / "rgb-source.png", 30, 27)).convert("L").save(image)
    assert main(["export", str(tiny_run), "--format", "web", "--out", str(tmp_path / "site"), "--json"]) == 0
    assert main(["translate", str(tmp_path / "site" / "model.onnx"), str(image), str(tmp_path / "translated.png"), "--quiet"]) == 0
    with sync_playwright() as p:
        browser = launch(p, "--enable-unsafe-webgpu")  # exposes Chromium's software adapter (SwiftShader)
        try:
            with static_server(tmp_path / "site") as url:
                state = translate_in_page(browser, url, image, timeout_ms=300_000)
        finally:
            browser.close()
    assert state["backend"] == "webgpu" and state["runtime"].startswith(f"onnxruntime-web {ORT_WEB_VERSION}, WebGPU")
    state |= check_against_pytorch(state, tiny_run / "student.safetensors", image, tmp_path / "translated.png", 1)
    h, w = state["output_dims"][2:]
    line = f"web page on WebGPU (SwiftShader, CPU emulation): {state['ms']['median']:.0f} ms per {w}x{h} input, max abs diff {state['max_abs_diff']:.1e}"
    print(line)
    record_property("webgpu_ms_per_image", line)
