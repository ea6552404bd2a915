"""``dcdgan demo``: a run's teacher and student side by side in the browser (Gradio), with the latency of each call.

The models run through ``dcdgan.backends`` (torch, on CPU or CUDA with CUDA graphs, onnxruntime or OpenVINO). Inputs are an uploaded picture, one of
the run's test images, or, for paired edge-like tasks, a sketch drawn live. Everything is served from this machine:
analytics off, system fonts, no CDN. The API endpoint ``/translate`` gives the same translation to programs.
"""

import base64
import html
import io
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from dcdgan.backends import Runner, load_runner
from dcdgan.config import Config, load_config
from dcdgan.errors import UserError
from dcdgan.viewing import enlarge_image, view_scale

INSTALL_HINT = 'the demo needs Gradio: pip install "dcdgan[demo]"'
VIEW_SIDE = 256  # outputs are enlarged (nearest) until their shorter side reaches this many pixels
MAX_TEST_IMAGES = 12
EDGE_LIKE_FRACTION = 0.9  # share of near-black/near-white pixels above which a task's inputs count as line drawings
CSS = ".pixelated img, .pixelated canvas {image-rendering: pixelated}"
TRANSLATE_DOC = (
    "Translate one image with the teacher and the student. Input: an image (any size and mode; it is converted to "
    "the run's channels and resolution). Output: the teacher's image, the student's image (both at the run's "
    "resolution) and the timings: backend, runner, precision, height, width, teacher_ms, student_ms, speedup."
)


def gradio():
    """Import Gradio with its analytics off, or explain in one line how to install it."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # read at import: no call home
    try:
        import gradio as gr
    except ImportError:
        raise UserError(INSTALL_HINT) from None
    return gr


# ---------------------------------------------------------------- which models, which run


def newest_run(runs_root: Path = Path("runs")) -> Path:
    """The run directory under ``runs_root`` whose student.safetensors was written last."""
    finished = [p.parent for p in runs_root.glob("*/student.safetensors")] if runs_root.is_dir() else []
    if not finished:
        raise UserError(f"no finished run under {runs_root}/: make one with `dcdgan distill` (a few minutes on a CPU), or pass RUN_DIR")
    return max(finished, key=lambda run: (run / "student.safetensors").stat().st_mtime)


def run_dir_of(model: Path) -> Path | None:
    """The run directory a model belongs to: the directory itself, or the run holding the file (it has config.yaml)."""
    if model.is_dir():
        return model
    for folder in (model.parent, model.parent.parent):  # runs/x/student.onnx, runs/x/checkpoints/best.ckpt
        if (folder / "config.yaml").is_file():
            return folder
    return None


def image_size_hint(model: Path) -> int | None:
    """The training resolution a generator file records in its .json description, if any."""
    side = model.with_suffix(".json")
    try:
        return int(json.loads(side.read_text())["image_size"]) if side.is_file() else None
    except (ValueError, KeyError, TypeError):
        return None


# ---------------------------------------------------------------- images in and out


def round_to(n: int, multiple: int) -> int:
    """``n`` rounded to the nearest positive multiple of ``multiple``."""
    return max(multiple, round(n / multiple) * multiple)


@dataclass(frozen=True)
class InputFormat:
    """How any picture becomes a model input: the run's channels and its evaluation resizing (pix2pix test-time)."""

    channels: int
    multiple: int  # H and W must be multiples of this
    preprocess: str = "none"
    load_size: int = 0
    crop_size: int = 0

    def size_for(self, width: int, height: int) -> tuple[int, int]:
        """(H, W) the models see for a picture of width x height."""
        from dcdgan.data import Transform

        h, w = Transform(self.preprocess, self.load_size, self.crop_size, False, False).params((width, height), None)["resize"]
        return round_to(h, self.multiple), round_to(w, self.multiple)

    def prepare(self, image: Image.Image, resample: int = Image.BICUBIC) -> Image.Image:
        """The picture converted to the run's channels and resized (bicubic, as in evaluation) to the model size."""
        from dcdgan.data import to_mode

        img = to_mode(image, self.channels)
        h, w = self.size_for(img.width, img.height)
        return img if img.size == (w, h) else img.resize((w, h), resample)


def to_array(image: Image.Image) -> np.ndarray:
    """PIL L/RGB -> float32 1,C,H,W in [-1, 1] (as the training data: x / 127.5 - 1)."""
    arr = np.asarray(image, dtype=np.float32)
    arr = arr[:, :, None] if arr.ndim == 2 else arr
    return (arr.transpose(2, 0, 1)[None] / 127.5 - 1.0).astype(np.float32)


def to_image(output: np.ndarray) -> Image.Image:
    """float 1,C,H,W in [-1, 1] -> PIL L/RGB, rounded as torchvision's save_image rounds."""
    arr = np.floor((np.clip(output[0], -1, 1) + 1) / 2 * 255 + 0.5).astype(np.uint8).transpose(1, 2, 0)
    return Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)


def data_uri(image: Image.Image | Path) -> str:
    """A PNG as a data: URI (inlined in the page; no file route, no request)."""
    if isinstance(image, Path):
        raw = image.read_bytes()
    else:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        raw = buffer.getvalue()
    return "data:image/png;base64," + base64.b64encode(raw).decode("ascii")


@dataclass(frozen=True)
class SketchStyle:
    """Canvas colours that match the task's line drawings (dark lines on light paper, or the reverse)."""

    paper: int  # gray level 0..255
    ink: int

    def hex(self, level: int) -> str:
        """#rrggbb of a gray level."""
        return f"#{level:02x}{level:02x}{level:02x}"


def sketch_style(images: list[Image.Image]) -> SketchStyle | None:
    """A sketch canvas style when the inputs look like line drawings (nearly all pixels near black or white), else None."""
    if not images:
        return None
    gray = np.concatenate([np.asarray(img.convert("L")).ravel() for img in images])
    extreme = np.mean((gray <= 16) | (gray >= 239))
    if extreme < EDGE_LIKE_FRACTION:
        return None
    paper = 255 if np.mean(gray >= 128) >= 0.5 else 0
    return SketchStyle(paper=paper, ink=255 - paper)


# ---------------------------------------------------------------- translation


@dataclass
class Translation:
    """One call: what the models saw, what they made, how long each took."""

    input: Image.Image
    teacher: Image.Image
    student: Image.Image
    timings: dict


def timed(runner: Runner, x: np.ndarray) -> tuple[np.ndarray, float]:
    """Output of one call and its wall time in milliseconds."""
    start = time.perf_counter()
    out = runner(x)
    return out, (time.perf_counter() - start) * 1000.0


@dataclass
class DemoModels:
    """The teacher and student to compare, and the run they come from (config, test images, report)."""

    teacher: Runner
    student: Runner
    run_dir: Path | None
    cfg: Config | None
    fmt: InputFormat
    notes: list[str] = field(default_factory=list)  # what could not be used, shown on the page
    macs_cache: dict = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, sources: list[str | Path], backend: str = "torch", device: str = "cpu", runner: str = "auto", precision: str = "fp32") -> "DemoModels":
        """No source: the newest run; one: a run directory; two: TEACHER STUDENT (run directories or model files).
        ``device``, ``runner`` and ``precision`` as for dcdgan bench (on CUDA the default runner replays CUDA graphs)."""
        paths = [Path(s) for s in sources] or [newest_run()]
        if len(paths) > 2:
            raise UserError("give one run directory, or TEACHER STUDENT (two run directories or model files)")
        for path in paths:
            if not path.exists():
                raise UserError(f"{path}: not found")
        if len(paths) == 1 and not paths[0].is_dir():
            raise UserError(f"{paths[0]}: one model file has nothing to compare with; pass TEACHER STUDENT, or a run directory")
        teacher_source, student_source = (paths[0], paths[0]) if len(paths) == 1 else paths
        teacher = load_runner(teacher_source, backend, precision, "teacher", device, runner=runner)
        student = load_runner(student_source, backend, precision, "student", device, runner=runner)
        if (teacher.input_nc, teacher.output_nc) != (student.input_nc, student.output_nc):
            raise UserError(
                f"{teacher.source} maps {teacher.input_nc} -> {teacher.output_nc} channels but {student.source} maps "
                f"{student.input_nc} -> {student.output_nc}; they cannot be compared"
            )
        run_dir = run_dir_of(student_source) or run_dir_of(teacher_source)
        cfg, notes = None, []
        if run_dir is not None and (run_dir / "config.yaml").is_file():
            try:
                cfg = load_config(str(run_dir / "config.yaml"))
            except UserError as err:  # e.g. a run from an older dcdgan: the models still load from their own files
                notes.append(f"{run_dir / 'config.yaml'} not used ({str(err)[:160]}); no test images, inputs resized to the models' recorded size")
        multiple = max(teacher.size_multiple, student.size_multiple)
        if cfg is not None:
            c = cfg.data
            fmt = InputFormat(teacher.input_nc, multiple, c.preprocess, c.load_size, c.crop_size)
        else:
            size = image_size_hint(Path(student.source)) or image_size_hint(Path(teacher.source))
            fmt = InputFormat(teacher.input_nc, multiple, "resize_and_crop", size, size) if size else InputFormat(teacher.input_nc, multiple)
        return cls(teacher, student, run_dir, cfg, fmt, notes)

    @property
    def name(self) -> str:
        """What the page title shows."""
        return self.run_dir.name if self.run_dir is not None else f"{Path(self.teacher.source).name} vs {Path(self.student.source).name}"

    def translate(self, image: Image.Image) -> Translation:
        """Run both models on one picture (converted to the run's format) and time each call."""
        if image is None:
            raise UserError("no image given")
        seen = self.fmt.prepare(image)
        x = to_array(seen)
        teacher_out, teacher_ms = timed(self.teacher, x)
        student_out, student_ms = timed(self.student, x)
        timings = {
            "backend": self.student.backend,
            "runner": self.student.runner,
            "precision": self.student.precision,
            "height": seen.height,
            "width": seen.width,
            "teacher_ms": round(teacher_ms, 3),
            "student_ms": round(student_ms, 3),
            "speedup": round(teacher_ms / max(student_ms, 1e-9), 2),
        }
        return Translation(seen, to_image(teacher_out), to_image(student_out), timings)

    def macs(self, role: str, height: int, width: int) -> int | None:
        """MACs of the teacher or student at height x width (cached: counting runs the network once)."""
        key = (role, height, width)
        if key not in self.macs_cache:
            self.macs_cache[key] = (self.teacher if role == "teacher" else self.student).macs(height, width)
        return self.macs_cache[key]

    def test_images(self, limit: int = MAX_TEST_IMAGES) -> tuple[list[Image.Image], str | None]:
        """The first test-split inputs of the run, and a note when they cannot be read (e.g. the data moved)."""
        if self.cfg is None:
            return [], None
        from dcdgan.data import DataRoot

        try:
            inputs = DataRoot(self.cfg.data).split(self.cfg.data.test_split).inputs
            return [inputs.image(i) for i in range(min(limit, len(inputs)))], None
        except UserError as err:
            return [], f"test images unavailable: {err}"

    def warm_up(self) -> None:
        """One call of each model, so the first measured call does not pay for lazy initialisation."""
        h, w = self.fmt.size_for(self.fmt.crop_size or 64, self.fmt.crop_size or 64)
        blank = np.zeros((1, self.teacher.input_nc, h, w), np.float32)
        self.teacher(blank)
        self.student(blank)


# ---------------------------------------------------------------- what the page shows


def runner_label(runner: Runner) -> str:
    """backend, and the PyTorch runner where it is not plain eager calls: "torch cuda-graph"."""
    return runner.backend if runner.runner in (None, "eager") else f"{runner.backend} {runner.runner}"


def model_stats(models: DemoModels, role: str, translation: Translation) -> str:
    """Markdown under a model's output: params, MACs at this size, and this call's latency on the backend."""
    runner = models.teacher if role == "teacher" else models.student
    h, w = translation.input.height, translation.input.width
    macs = models.macs(role, h, w)
    ms = translation.timings[f"{role}_ms"]
    parts = [
        f"**{role}** ({html.escape(Path(runner.source).name)})",
        f"params **{runner.params / 1e6:.3f} M**" if runner.params is not None else "params unknown",
        f"MACs **{macs / 1e9:.3f} G** at {h}x{w}" if macs is not None else "MACs unknown",
        f"latency **{ms:.1f} ms** on {runner_label(runner)} {runner.precision} (this call)",
    ]
    if role == "student":
        parts.append(f"**{translation.timings['speedup']:.1f}x** the teacher's speed")
    return "  \n".join(parts)


def native_strip(translation: Translation) -> str:
    """HTML: input, teacher and student at the run's resolution, one image pixel per screen pixel."""
    cells = []
    for label, image in (("input", translation.input), ("teacher", translation.teacher), ("student", translation.student)):
        cells.append(
            f'<figure style="display:inline-block;margin:0 12px 0 0;text-align:center">'
            f'<img class="native-{label}" src="{data_uri(image)}" width="{image.width}" height="{image.height}" alt="{label}">'
            f"<figcaption>{label}</figcaption></figure>"
        )
    h, w = translation.input.height, translation.input.width
    return f"<div><p>At the run's resolution ({h}x{w}, 1:1):</p>{''.join(cells)}</div>"


def report_frame(run_dir: Path | None) -> str:
    """HTML: the run's report.html in an iframe, its images inlined (it is written first if the run has none)."""
    if run_dir is None:
        return "<p>No run directory, so no report: pass a run directory to see its final table, curves and samples.</p>"
    report = run_dir / "report.html"
    if not report.is_file():
        from dcdgan.report import write_report

        write_report(run_dir)
    page = report.read_text()

    def inline(match: re.Match) -> str:
        target = (run_dir / match.group(1)).resolve()
        inside = run_dir.resolve() in target.parents
        return f'src="{data_uri(target)}"' if inside and target.is_file() else match.group(0)

    page = re.sub(r'src="([^":]+\.png)"', inline, page)
    return f'<iframe title="run report" srcdoc="{html.escape(page, quote=True)}" style="width:100%;height:80vh;border:0"></iframe>'


def theme(gr):
    """Gradio's default look with system fonts: nothing is fetched from font CDNs."""
    return gr.themes.Default(font=("ui-sans-serif", "system-ui", "sans-serif"), font_mono=("ui-monospace", "monospace"))


def build_app(models: DemoModels):
    """The Gradio Blocks app: a Translate tab (upload, test images, sketch), a Report tab, and the /translate API."""
    gr = gradio()
    tests, note = models.test_images()
    paired = models.cfg is not None and models.cfg.data.mode == "paired"
    sketch = sketch_style(tests) if paired else None
    h, w = models.fmt.size_for(models.fmt.crop_size or 256, models.fmt.crop_size or 256)
    scale = view_scale(h, w, VIEW_SIDE)

    def show(translation: Translation):
        return (
            enlarge_image(translation.input, VIEW_SIDE),
            enlarge_image(translation.teacher, VIEW_SIDE),
            enlarge_image(translation.student, VIEW_SIDE),
            model_stats(models, "teacher", translation),
            model_stats(models, "student", translation),
            native_strip(translation),
        )

    def on_upload(image):
        return show(models.translate(image)) if image is not None else (gr.skip(),) * 6

    def on_pick(evt: gr.SelectData):  # (no postponed annotations in this module: Gradio reads this hint to pass the event)
        return show(models.translate(tests[evt.index]))

    def on_sketch(value):
        composite = value.get("composite") if isinstance(value, dict) else None
        if composite is None:
            return (gr.skip(),) * 6
        paper = Image.new("RGBA", composite.size, (sketch.paper,) * 3 + (255,))
        drawing = Image.alpha_composite(paper, composite.convert("RGBA")).convert("RGB")
        th, tw = models.fmt.size_for(drawing.width, drawing.height)
        return show(models.translate(drawing.resize((tw, th), Image.BOX)))  # area average: a stroke keeps its weight

    def translate(image):
        """Translate one image with the teacher and the student; returns (teacher image, student image, timings)."""
        result = models.translate(image)
        return result.teacher, result.student, result.timings

    header = (
        f"# dcdgan demo: {html.escape(models.name)}\n"
        f"Teacher `{models.teacher.source}` and student `{models.student.source}` on **{runner_label(models.student)}** "
        f"({models.student.precision}). Images are translated at {h}x{w} and shown enlarged {scale}x (nearest neighbour)."
    )
    with gr.Blocks(title=f"dcdgan demo: {models.name}", analytics_enabled=False) as app:
        gr.Markdown(header)
        with gr.Tab("Translate"):
            with gr.Tabs():
                with gr.Tab("Upload"):
                    upload = gr.Image(type="pil", label="your image", sources=["upload", "clipboard"], image_mode=None, height=200, elem_id="upload")
                if tests:
                    with gr.Tab("Test images"):
                        gallery = gr.Gallery(
                            [enlarge_image(img) for img in tests], label="the run's test split: click one", columns=6, allow_preview=False, object_fit="contain",
                            format="png", elem_id="test-images", elem_classes=["pixelated"], height="auto",
                        )
                if sketch is not None:
                    with gr.Tab("Sketch"):
                        pad = gr.Sketchpad(
                            label=f"draw (translated live at {h}x{w})", type="pil", canvas_size=(w * scale, h * scale), fixed_canvas=True,
                            brush=gr.Brush(default_size=max(1, round(0.75 * scale)), colors=[sketch.hex(sketch.ink)], color_mode="fixed"),
                            value={"background": Image.new("RGB", (w * scale, h * scale), (sketch.paper,) * 3), "layers": [], "composite": None},
                            layers=False, elem_id="sketch",
                        )
            for line in models.notes + ([note] if note else []):
                gr.Markdown(line)
            with gr.Row(equal_height=True):
                views = [
                    gr.Image(label=label, interactive=False, format="png", elem_id=f"view-{label}", elem_classes=["pixelated"], buttons=["download"])
                    for label in ("input", "teacher", "student")
                ]
            with gr.Row():
                gr.Markdown("**input**: converted to the run's channels and resolution")
                teacher_stats = gr.Markdown(elem_id="stats-teacher")
                student_stats = gr.Markdown(elem_id="stats-student")
            native = gr.HTML(elem_id="native")
        with gr.Tab("Report"):
            gr.HTML(report_frame(models.run_dir), elem_id="report")
        with gr.Column(visible=False):  # the /translate API's components: images at the run's resolution
            api_in = gr.Image(type="pil", label="image", image_mode=None, format="png")
            api_teacher = gr.Image(type="pil", label="teacher", format="png")
            api_student = gr.Image(type="pil", label="student", format="png")
            api_timings = gr.JSON(label="timings")
            api_button = gr.Button("translate")

        outputs = [*views, teacher_stats, student_stats, native]
        one_at_a_time = {"concurrency_id": "translate", "concurrency_limit": 1}  # latencies are not measured under contention
        upload.change(on_upload, upload, outputs, api_visibility="private", trigger_mode="always_last", **one_at_a_time)
        if tests:
            gallery.select(on_pick, None, outputs, api_visibility="private", **one_at_a_time)
        if sketch is not None:
            # Gradio 6's Sketchpad reports each finished stroke as .input (its .change does not fire for drawing)
            pad.input(on_sketch, pad, outputs, api_visibility="private", trigger_mode="always_last", show_progress="hidden", **one_at_a_time)
        api_button.click(translate, api_in, [api_teacher, api_student, api_timings], api_name="translate", api_description=TRANSLATE_DOC, **one_at_a_time)
    return app


def serve(
    sources: list[str | Path], host: str = "127.0.0.1", port: int = 7860, backend: str = "torch", block: bool = True,
    device: str = "cpu", runner: str = "auto", precision: str = "fp32",
):
    """Load the models, build the app and start serving; with ``block=False`` return the running app (tests)."""
    gr = gradio()
    models = DemoModels.load(sources, backend, device, runner, precision)
    models.warm_up()
    app = build_app(models)
    try:
        app.launch(
            server_name=host, server_port=port, theme=theme(gr), css=CSS, ssr_mode=False, share=False, inbrowser=False, quiet=True,
            footer_links=["api", "settings"], run_history=False, show_error=True, prevent_thread_lock=True,
        )
    except OSError as err:
        raise UserError(f"cannot serve on {host}:{port} ({err}); choose another --port") from None
    for line in models.notes:
        print(f"dcdgan demo: note: {line}", file=sys.stderr)
    print(f"dcdgan demo: {models.name} ({runner_label(models.student)}) on {app.local_url}  (API: /translate; Ctrl-C stops)", flush=True)
    if block:
        try:
            app.block_thread()
        finally:
            app.close()
    return app
