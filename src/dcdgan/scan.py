"""The dataset scan before training: every image of every split a run will use is opened and decoded, in
parallel, before any network is built, and every problem is reported at once.

Results per file are cached by (path, size, mtime), so a resumed run, or ``dcdgan distill`` after
``dcdgan check``, does not decode the same images again. What the scan decides:

- errors (the run stops; ``data.on_bad_image=skip`` trains without the file instead): unreadable,
  corrupt or truncated images, images over the decompression-bomb limit, side-by-side A|B images of odd
  width, A/B pairs of different sizes, images smaller than ``data.crop_size`` when ``data.preprocess=none``;
- errors that no skip can fix: missing or empty folders, an unpaired split with one side only, paired
  folders whose file names do not match;
- warnings: files that are not images, images in subfolders (folders are read non-recursively, so they are
  not used), images smaller than the crop size that the preprocessing upscales.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from dcdgan.checkpoint import atomic_write
from dcdgan.config import DataConfig
from dcdgan.data import IMAGE_EXTENSIONS, is_image_file, split_layout, unmatched_names
from dcdgan.errors import UserError

CACHE_ENV = "DCDGAN_CACHE_DIR"
CACHE_FORMAT = "dcdgan-scan/1"
SKIP_LIST = "skipped_images.txt"
MAX_LINES = 20  # problem lines printed before "... and N more"
EXIF_ORIENTATION = 0x0112
PROGRESS_FROM = 200  # files to decode before a progress bar is worth showing


def plural(count: int, word: str) -> str:
    """'1 image', '2 images'."""
    return f"{count} {word}{'' if count == 1 else 's'}"


# ---------------------------------------------------------------- one file


@dataclass(frozen=True)
class ImageInfo:
    """What opening one file found: its size as displayed (EXIF rotation applied), or why it cannot be used."""

    width: int = 0
    height: int = 0
    error: str = ""


def inspect_image(path: Path, max_pixels: int) -> ImageInfo:
    """Open and fully decode ``path``; never raises for a bad file (the problem goes into ``error``)."""
    try:
        with Image.open(path) as img:
            width, height = img.size
            if width * height > max_pixels:  # checked before decoding: that is the point of the limit
                return ImageInfo(width, height, f"{width}x{height} pixels ({width * height / 1e6:.0f} Mpx) exceeds the decompression-bomb limit of {max_pixels / 1e6:.0f} Mpx")
            if img.getexif().get(EXIF_ORIENTATION) in (5, 6, 7, 8):  # turned by 90 degrees when shown
                width, height = height, width
            img.load()
    except UnidentifiedImageError:
        return ImageInfo(error="not an image (the file's contents are no image format Pillow reads)")
    except Exception as err:  # any failure while decoding an untrusted file means the file is broken
        detail = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
        return ImageInfo(error=f"corrupt or truncated image ({detail})")
    return ImageInfo(width, height)


@contextmanager
def _pillow_for_scan() -> Iterator[int]:
    """Let the scan apply the decompression-bomb limit itself (to name the size) and silence Pillow's warnings."""
    limit = 2 * (Image.MAX_IMAGE_PIXELS or 89478485)  # Pillow refuses above twice its warning threshold
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Corrupt EXIF data": the image itself decodes
            yield limit
    finally:
        Image.MAX_IMAGE_PIXELS = saved


# ---------------------------------------------------------------- the cache


def cache_dir() -> Path:
    """Where scan results are kept: $DCDGAN_CACHE_DIR, else $XDG_CACHE_HOME/dcdgan, else ~/.cache/dcdgan."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dcdgan"


@dataclass
class ScanCache:
    """Per-file results keyed by absolute path, valid while the file's size and mtime are unchanged."""

    path: Path | None
    entries: dict[str, list] = field(default_factory=dict)
    changed: bool = False

    @classmethod
    def for_root(cls, root: Path) -> "ScanCache":
        """The cache file of one dataset root (an unreadable or foreign file counts as empty)."""
        path = cache_dir() / f"scan-{hashlib.sha256(str(root.absolute()).encode()).hexdigest()[:16]}.json"
        try:
            stored = json.loads(path.read_text())
            entries = stored["files"] if stored.get("format") == CACHE_FORMAT else {}
        except (OSError, ValueError, KeyError, AttributeError):
            entries = {}
        return cls(path, entries if isinstance(entries, dict) else {})

    def get(self, path: Path, stat: os.stat_result) -> ImageInfo | None:
        """The stored result when the file is unchanged."""
        entry = self.entries.get(str(path))
        if isinstance(entry, list) and len(entry) == 5 and entry[:2] == [stat.st_size, stat.st_mtime_ns]:
            return ImageInfo(*entry[2:])
        return None

    def put(self, path: Path, stat: os.stat_result, info: ImageInfo) -> None:
        """Remember one result."""
        self.entries[str(path)] = [stat.st_size, stat.st_mtime_ns, info.width, info.height, info.error]
        self.changed = True

    def save(self) -> None:
        """Write the cache; a cache that cannot be written only costs a rescan, so that is not an error."""
        if self.path is None or not self.changed:
            return
        try:
            atomic_write(self.path, lambda tmp: tmp.write_text(json.dumps({"format": CACHE_FORMAT, "files": self.entries})))
        except OSError:
            pass


def verify_files(paths: list[Path], cache: ScanCache, quiet: bool = False, workers: int = 0) -> tuple[dict[Path, ImageInfo], int]:
    """Results for every path (cached ones reused, the rest decoded by ``workers`` threads, 0 = 2 per core); returns (results, number decoded)."""
    results: dict[Path, ImageInfo] = {}
    todo: list[tuple[Path, os.stat_result]] = []
    for path in paths:
        stat = path.stat()
        hit = cache.get(path, stat)
        if hit is None:
            todo.append((path, stat))
        else:
            results[path] = hit
    if not todo:
        return results, 0
    # Pillow's decoders release the GIL, so threads decode in parallel without the start-up cost of processes
    workers = min(workers or min(16, 2 * (os.cpu_count() or 1)), len(todo))
    with _pillow_for_scan() as limit, ThreadPoolExecutor(workers) as pool:
        bar = tqdm(total=len(todo), desc="checking images", unit="img", leave=False, disable=True if quiet or len(todo) < PROGRESS_FROM else None)
        for (path, stat), info in zip(todo, pool.map(lambda p: inspect_image(p, limit), [p for p, _ in todo])):
            results[path] = info
            cache.put(path, stat, info)
            bar.update(1)
        bar.close()
    return results, len(todo)


# ---------------------------------------------------------------- folders and splits


@dataclass
class Problem:
    """One line of the report: the file, folder or key, and what is wrong with it."""

    where: str
    what: str

    def line(self) -> str:
        return f"{self.where}: {self.what}"


@dataclass
class FolderCount:
    folder: Path
    images: int
    bad: int


@dataclass
class ScanReport:
    """Everything the scan found, in the order found."""

    root: str
    fatal: list[Problem] = field(default_factory=list)  # no skip helps: folders, layout
    bad: list[Problem] = field(default_factory=list)  # one per unusable file; skipped under on_bad_image=skip
    partners: list[Problem] = field(default_factory=list)  # good files whose pair partner is bad: left out with it
    warnings: list[Problem] = field(default_factory=list)
    splits: dict[str, list[FolderCount]] = field(default_factory=dict)
    images: int = 0
    decoded: int = 0
    seconds: float = 0.0

    def excluded(self) -> frozenset[Path]:
        """Absolute paths of the files a run leaves out: the unusable ones and their pair partners."""
        return frozenset(Path(p.where) for p in self.bad + self.partners)


def survey(folder: Path, report: ScanReport) -> list[Path]:
    """Image files directly in ``folder``; warns about other files and about images in subfolders."""
    images, others, nested = [], [], {}
    for entry in sorted(folder.iterdir()):
        if entry.is_dir():
            count = sum(1 for p in entry.rglob("*") if is_image_file(p))
            if count:
                nested[entry.name] = count
        elif is_image_file(entry):
            images.append(entry.absolute())
        else:
            others.append(entry.name)
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        report.warnings.append(Problem(str(folder), f"ignored {plural(len(others), 'file')} that {'is not an image' if len(others) == 1 else 'are not images'}: {shown}"))
    for name, count in nested.items():
        report.warnings.append(Problem(str(folder / name), f"{plural(count, 'image')} in this subfolder {'is' if count == 1 else 'are'} not used (image folders are read non-recursively)"))
    return images


def splits_to_scan(data: DataConfig, final: bool) -> list[str]:
    """Every split a run reads: train (holdout is part of it), validation, and test when the run ends with an
    evaluation (``final``, eval.final)."""
    names = [data.train_split]
    if data.val_split != "holdout":
        names.append(data.val_split)
    if final:
        names.append(data.test_split)
    return list(dict.fromkeys(names))


def _missing_split(cfg: DataConfig, split: str, folders: str) -> str:
    """The message for a split whose folders are missing, with the fix that fits the split's role."""
    them = "it" if folders.endswith("folder") else "them"
    if split == cfg.val_split:
        return f"no {folders} for data.val_split={split}; add {them}, or set data.val_split=holdout to validate on images held out from train"
    if split == cfg.test_split and split != cfg.train_split:
        return f"no {folders} for data.test_split={split} (used by the final evaluation); add {them}, set data.test_split, or set eval.final=false"
    return f"no {folders} for data.train_split={split}"


def _folders_of_split(cfg: DataConfig, root: Path, split: str, report: ScanReport) -> tuple[str, list[Path]] | None:
    """(layout kind, image folders) of a split, or None after recording why the split cannot be read."""
    kind, first, second = split_layout(root, cfg.mode, split)
    if kind == "unpaired":
        present = [f for f in (first, second) if f.is_dir()]
        if not present:
            report.fatal.append(Problem(str(root), _missing_split(cfg, split, f"{first.name}/ and {second.name}/ folders")))
            return None
        if len(present) == 1:
            missing = second if present[0] == first else first
            report.fatal.append(Problem(str(missing), f"folder not found; unpaired data needs both {first.name}/ and {second.name}/ (found only {present[0].name}/)"))
            return None
        return kind, [first, second]
    if kind == "matched":
        return kind, [first, second]
    if not first.is_dir():
        report.fatal.append(Problem(str(root), _missing_split(cfg, split, f"{split}/ folder")))
        return None
    halves = [name for name in ("A", "B") if (first / name).is_dir()]
    if len(halves) == 1:
        report.fatal.append(Problem(str(first), f"has {halves[0]}/ but no {'B' if halves[0] == 'A' else 'A'}/; paired folders need both, with files matched by name"))
        return None
    return kind, [first]


def _size_problems(cfg: DataConfig, kind: str, path: Path, info: ImageInfo, report: ScanReport) -> None:
    """Record what makes a readable image unusable (or only worth a warning) for this layout and preprocessing."""
    width, height = info.width, info.height
    if kind == "side_by_side":
        if width % 2:
            report.bad.append(Problem(str(path), f"width {width} is odd, so the A|B halves would differ in size (side-by-side pairs need an even width)"))
            return
        width //= 2
    if min(width, height) >= cfg.crop_size:
        return
    shown = f"{width}x{height}" + (" per half" if kind == "side_by_side" else "")
    if cfg.preprocess == "none":
        report.bad.append(Problem(str(path), f"{shown} is smaller than data.crop_size={cfg.crop_size} (data.preprocess=none uses images as stored)"))
    else:
        report.warnings.append(Problem(str(path), f"{shown} is smaller than data.crop_size={cfg.crop_size}; upscaled by data.preprocess={cfg.preprocess}"))


def _check_matched(cfg: DataConfig, folders: list[Path], a: list[Path], b: list[Path], infos: dict[Path, ImageInfo], report: ScanReport) -> None:
    """A/ and B/ folders matched by name: every file needs a partner of the same size; a bad file takes its partner out."""
    problem = unmatched_names(a, b)
    if problem:
        report.fatal.append(Problem(f"{folders[0]} and {folders[1]}", problem))
    by_stem = {p.stem: p for p in b}
    for path in a:
        other = by_stem.get(path.stem)
        if other is None:
            continue
        ia, ib = infos[path], infos[other]
        if ia.error or ib.error:
            good, broken = (other, path) if ia.error else (path, other)
            if not infos[good].error:
                report.partners.append(Problem(str(good), f"left out with its partner {broken}"))
        elif (ia.width, ia.height) != (ib.width, ib.height):
            report.bad.append(Problem(str(path), f"{ia.width}x{ia.height} but its partner {other} is {ib.width}x{ib.height}; A and B of a pair must have the same size"))
            report.partners.append(Problem(str(other), f"left out with its partner {path}"))
        else:
            _size_problems(cfg, "matched", path, ia, report)


def scan_data(cfg: DataConfig, splits: list[str], quiet: bool = False, use_cache: bool = True, workers: int = 0) -> ScanReport:
    """Check every image of ``splits``; returns the report (raises nothing for bad data)."""
    started = time.perf_counter()
    report = ScanReport(cfg.root)
    if cfg.root.startswith("builtin:"):
        return report  # embedded arrays, checked when the package was built
    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        report.fatal.append(Problem(str(root), "dataset folder not found (data.root)"))
        return report
    layouts: dict[str, tuple[str, list[Path]]] = {}
    listed: dict[Path, list[Path]] = {}
    for split in splits:
        found = _folders_of_split(cfg, root, split, report)
        if found is None:
            continue
        layouts[split] = found
        for folder in found[1]:
            if folder in listed:
                continue
            if not folder.is_dir():
                report.fatal.append(Problem(str(folder), "folder not found"))
                listed[folder] = []
                continue
            listed[folder] = survey(folder, report)
            if not listed[folder]:
                report.fatal.append(Problem(str(folder), f"no images ({', '.join(IMAGE_EXTENSIONS)})"))
    cache = ScanCache.for_root(root) if use_cache else ScanCache(None)
    every = sorted({p for paths in listed.values() for p in paths})
    infos, report.decoded = verify_files(every, cache, quiet, workers)
    cache.save()
    report.images = len(every)

    for path in every:
        if infos[path].error:
            report.bad.append(Problem(str(path), infos[path].error))
    for split, (kind, folders) in layouts.items():
        if kind == "matched" and listed.get(folders[0]) and listed.get(folders[1]):
            _check_matched(cfg, folders, listed[folders[0]], listed[folders[1]], infos, report)
        else:
            for folder in folders:
                for path in listed.get(folder, []):
                    if not infos[path].error:
                        _size_problems(cfg, kind, path, infos[path], report)
    # the same file reached from two splits (e.g. val_split == test_split) is one problem
    report.bad = list({p.where: p for p in report.bad}.values())
    report.warnings = list({p.line(): p for p in report.warnings}.values())
    bad = report.excluded()
    for split, (kind, folders) in layouts.items():
        counts = [FolderCount(f, len(listed.get(f, [])), sum(1 for p in listed.get(f, []) if p in bad)) for f in folders]
        report.splits[split] = counts
        for count in counts:
            if count.images and count.images == count.bad:
                report.fatal.append(Problem(str(count.folder), f"none of its {count.images} images is usable"))
    report.fatal = list({p.line(): p for p in report.fatal}.values())
    report.seconds = time.perf_counter() - started
    return report


# ---------------------------------------------------------------- reporting


def report_lines(report: ScanReport, on_bad_image: str) -> list[str]:
    """The printed report: problems (at most MAX_LINES, then a count), warnings, then a summary per split."""
    if report.root.startswith("builtin:"):
        return [f"dataset check: {report.root} is embedded data, nothing to scan"]
    lines = []
    skip = on_bad_image == "skip"
    problems = [("error", p) for p in report.fatal] + [("skipped" if skip else "error", p) for p in report.bad]
    for label, problem in problems[:MAX_LINES]:
        lines.append(f"{label}: {problem.line()}")
    if len(problems) > MAX_LINES:
        lines.append(f"... and {len(problems) - MAX_LINES} more problems")
    for problem in report.warnings[:MAX_LINES]:
        lines.append(f"warning: {problem.line()}")
    if len(report.warnings) > MAX_LINES:
        lines.append(f"... and {len(report.warnings) - MAX_LINES} more warnings")
    for split, counts in report.splits.items():
        parts = [f"{c.folder.name}/ {plural(c.images, 'image')}" + (f" ({c.bad} bad{', skipped' if skip else ''})" if c.bad else "") for c in counts]
        lines.append(f"split {split}: " + ", ".join(parts))
    cached = report.images - report.decoded
    lines.append(
        f"dataset check of {report.root}: {plural(report.images, 'image')} ({cached} unchanged since the last check) in {report.seconds:.1f}s; "
        f"{plural(len(report.fatal) + len(report.bad), 'problem')}, {plural(len(report.warnings), 'warning')}"
    )
    return lines


def failure(report: ScanReport, on_bad_image: str) -> UserError | None:
    """The one-line error that stops a run (naming the first problem), or None when it may go on."""
    problems = report.fatal + ([] if on_bad_image == "skip" else report.bad)
    if not problems:
        return None
    first = problems[0].line()
    if len(problems) == 1:
        hint = "; or set data.on_bad_image=skip to train without it" if report.bad and on_bad_image != "skip" else ""
        return UserError(first + hint)
    hint = "; data.on_bad_image=skip trains without the bad files" if report.bad and on_bad_image != "skip" and not report.fatal else ""
    return UserError(f"{first} (and {plural(len(problems) - 1, 'more problem')}, listed above{hint})")


def check_writable(run_dir: Path) -> None:
    """UserError when the run directory cannot be created or written, before any compute is spent."""
    run_dir = Path(run_dir).absolute()
    existing = run_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{run_dir}: cannot create the run directory: {existing} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise UserError(f"{run_dir}: output directory is not writable ({existing}: {err.strerror})") from None


def read_skip_list(run_dir: Path) -> frozenset[Path]:
    """The files a run left out (``data.on_bad_image=skip``), so later evaluations leave them out too."""
    path = Path(run_dir) / SKIP_LIST
    if not path.is_file():
        return frozenset()
    return frozenset(Path(line.split("\t", 1)[0]) for line in path.read_text().splitlines() if line.strip())


def check_before_training(data: DataConfig, final: bool, run_dir: Path, quiet: bool = False) -> frozenset[Path]:
    """The scan ``dcdgan distill`` runs before building networks (of the test split too when ``final``): prints the
    report, raises UserError on problems, or (``data.on_bad_image=skip``) writes the skipped files to the run and
    returns them for exclusion."""
    check_writable(run_dir)
    main_process = os.environ.get("RANK", "0") == "0"  # under accelerate launch every process scans (cached), one reports
    report = scan_data(data, splits_to_scan(data, final), quiet or not main_process)
    if report.root.startswith("builtin:"):
        return frozenset()
    if main_process:
        for line in report_lines(report, data.on_bad_image):
            tqdm.write(line)
    error = failure(report, data.on_bad_image)
    if error is not None:
        raise error
    if report.bad and main_process:
        path = Path(run_dir) / SKIP_LIST
        atomic_write(path, lambda tmp: tmp.write_text("".join(f"{p.where}\t{p.what}\n" for p in report.bad + report.partners)))
        partners = f" and {plural(len(report.partners), 'pair partner')}" if report.partners else ""
        tqdm.write(f"skipping {plural(len(report.bad), 'bad image')}{partners} (data.on_bad_image=skip); the list is in {path}")
    return report.excluded()


def check_command(data: DataConfig, final: bool, quiet: bool = False) -> int:
    """``dcdgan check``: the same scan alone (of the test split too when ``final``); 0 when a run could start, UserError otherwise."""
    report = scan_data(data, splits_to_scan(data, final), quiet)
    for line in report_lines(report, data.on_bad_image):
        print(line)
    error = failure(report, data.on_bad_image)
    if error is not None:
        raise error
    if report.bad:
        print(f"a run would skip {plural(len(report.bad), 'bad image')} (data.on_bad_image=skip)")
    return 0
