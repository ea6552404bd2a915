"""``dcdgan export --format web``: a static folder that translates images in the visitor's browser.

The folder holds index.html (with app.js and sw.js), the generator as ONNX (the ONNX export with its parity
check) plus model.json (channels, stride multiple, sizes), and the onnxruntime-web files the page loads:
the plain wasm build (SIMD, threads) and the WebGPU build, of which a visitor downloads one. No Python serves it.

The runtime comes from npm: ``npm pack onnxruntime-web@ORT_WEB_VERSION`` (checked against the pinned
integrity), of which only RUNTIME_FILES are kept, in ``~/.cache/dcdgan/`` (or ``$DCDGAN_WEB_RUNTIME``, a folder
holding those files, e.g. ``node_modules/onnxruntime-web/dist`` of an offline machine).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from importlib import resources
from pathlib import Path

from dcdgan.errors import UserError

ORT_WEB_VERSION = "1.31.1"
ORT_WEB_INTEGRITY = "sha512-5GeH+bWQ+HxM10z7erGlsWqryrwMbSvm/1tkIsKTT48g0fI19VXVVC435t4t7VsPdSQeS7NmuZPXrQ73k82URw=="
# What the page loads, of the package's 151 MB: the wasm build (ort.wasm.min.mjs loads the plain SIMD+threads
# module, 14.8 MB) and the WebGPU build (ort.webgpu.min.mjs loads the asyncify module, 28.7 MB, which also runs
# the CPU kernels a WebGPU session leaves to wasm). 43.8 MB in all; a visitor fetches one of the two sets.
WASM_FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
WEBGPU_FILES = ("ort.webgpu.min.mjs", "ort-wasm-simd-threaded.asyncify.mjs", "ort-wasm-simd-threaded.asyncify.wasm")
RUNTIME_FILES = WASM_FILES + WEBGPU_FILES
SHIPPED_MB = 43.8  # sum of RUNTIME_FILES of 1.31.1 (the fast test checks it)
RUNTIME_ENV = "DCDGAN_WEB_RUNTIME"
PAGE_FILES = ("index.html", "app.js", "sw.js")
MODEL_FILE = "model.onnx"
RUNTIME_FOLDER = "ort"


def runtime_cache() -> Path:
    """Where the fetched runtime files are kept: onnxruntime-web-VERSION in dcdgan's cache folder ($DCDGAN_CACHE_DIR,
    else $XDG_CACHE_HOME/dcdgan, else ~/.cache/dcdgan)."""
    from dcdgan.scan import cache_dir

    return cache_dir() / f"onnxruntime-web-{ORT_WEB_VERSION}"


def missing_files(folder: Path) -> list[str]:
    """The runtime files absent from ``folder``."""
    return [name for name in RUNTIME_FILES if not (folder / name).is_file()]


def find_runtime(quiet: bool = False) -> Path:
    """The folder holding RUNTIME_FILES: $DCDGAN_WEB_RUNTIME, else the cache, fetched from npm when empty."""
    given = os.environ.get(RUNTIME_ENV)
    if given:
        missing = missing_files(Path(given))
        if missing:
            raise UserError(f"{RUNTIME_ENV}={given}: missing {', '.join(missing)} (the dist files of onnxruntime-web {ORT_WEB_VERSION})")
        return Path(given)
    cache = runtime_cache()
    if not missing_files(cache):
        return cache
    fetch_runtime(cache, quiet=quiet)
    return cache


def fetch_runtime(dest: Path, quiet: bool = False) -> None:
    """``npm pack`` the pinned onnxruntime-web, check its integrity, and keep only RUNTIME_FILES in ``dest``."""
    npm = shutil.which("npm")
    if npm is None:
        raise UserError(
            f"--format web needs the onnxruntime-web {ORT_WEB_VERSION} runtime, fetched with npm, which is not on PATH: "
            f"install Node.js with npm (e.g. apt-get install npm), or set {RUNTIME_ENV} to a folder with its dist files"
        )
    if not quiet:
        print(f"fetching onnxruntime-web {ORT_WEB_VERSION} with npm (35 MB download; {SHIPPED_MB} MB of it kept in {dest})")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".ort-web.") as tmp:
        done = subprocess.run(
            [npm, "pack", f"onnxruntime-web@{ORT_WEB_VERSION}", "--json", "--pack-destination", tmp],
            capture_output=True, text=True, cwd=tmp,
        )
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise UserError(f"npm pack onnxruntime-web@{ORT_WEB_VERSION} failed (exit {done.returncode}): {last}")
        packed = json.loads(done.stdout)[0]
        if packed.get("integrity") != ORT_WEB_INTEGRITY:
            raise UserError(f"npm pack onnxruntime-web@{ORT_WEB_VERSION}: integrity {packed.get('integrity')} is not the pinned {ORT_WEB_INTEGRITY}")
        staged = Path(tmp) / "files"
        staged.mkdir()
        with tarfile.open(Path(tmp) / packed["filename"]) as tar:
            for name in RUNTIME_FILES:  # read by name into our own paths: nothing in the archive chooses a path
                member = tar.extractfile(f"package/dist/{name}")
                if member is None:
                    raise UserError(f"onnxruntime-web {ORT_WEB_VERSION}: the package has no dist/{name}")
                (staged / name).write_bytes(member.read())
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(staged, dest)


def page_source(name: str) -> str:
    """A file of the page (index.html, app.js, sw.js) as packaged."""
    return resources.files("dcdgan.assets").joinpath("web").joinpath(name).read_text(encoding="utf-8")


def model_description(spec) -> dict:
    """What the page needs to know about the generator (model.json)."""
    from dcdgan.backends import size_multiple_of
    from dcdgan.evaluate import size_of
    from dcdgan.nets import build_generator

    sizes = size_of(build_generator(spec), spec.input_nc, 256)
    return {
        "netG": spec.netG,
        "ngf": spec.ngf,
        "input_nc": spec.input_nc,
        "output_nc": spec.output_nc,
        "size_multiple": size_multiple_of(spec),
        "params": sizes["params"],
        "macs_256": sizes["macs"],
        "input_range": [-1, 1],
        "model": MODEL_FILE,
        "onnxruntime_web": ORT_WEB_VERSION,
    }


def export_web(model: str | Path, out: str | Path, precision: str = "fp32", which: str = "student", quiet: bool = False) -> dict:
    """Write the static site ``out``/ (page, ONNX model checked against PyTorch, runtime); returns the ONNX parity result."""
    from dcdgan.backends import load_torch_source
    from dcdgan.export import export_model

    if precision != "fp32":
        raise UserError(f"--format web exports fp32 (onnxruntime-web runs the ONNX graph as stored), not {precision}")
    out = Path(out)
    if out.suffix.lower() in (".onnx", ".html", ".xml", ".pt2"):
        raise UserError(f"{out}: --format web writes a folder (e.g. --out site/), not a file")
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder")
    runtime = find_runtime(quiet=quiet)  # before the export: a missing runtime costs no export time
    src = load_torch_source(model, which)
    out.mkdir(parents=True, exist_ok=True)
    result = export_model(model, "onnx", out / MODEL_FILE, which=which, quiet=quiet)
    (out / MODEL_FILE).chmod(0o644)  # written through a private temporary file; a web server must read it
    (out / "model.json").write_text(json.dumps(model_description(src.spec), indent=2) + "\n")
    for name in PAGE_FILES:
        (out / name).write_text(page_source(name), encoding="utf-8")
    (out / RUNTIME_FOLDER).mkdir(exist_ok=True)
    for name in RUNTIME_FILES:
        shutil.copyfile(runtime / name, out / RUNTIME_FOLDER / name)
    result.update(out=str(out), format="web", onnxruntime_web=ORT_WEB_VERSION, bytes=folder_bytes(out))
    if not quiet:
        print(f"wrote {out}/ ({result['bytes'] / 1e6:.1f} MB: index.html, {MODEL_FILE}, {RUNTIME_FOLDER}/ onnxruntime-web {ORT_WEB_VERSION}); "
              f"serve it with any static server, e.g. python -m http.server -d {out}")
    return result


def folder_bytes(folder: Path) -> int:
    """Total size of the files under ``folder``."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
