"""The final table (text and HTML) and report.html of a run: table, loss and validation curves (PNG, matplotlib), sample grids."""

from __future__ import annotations

import html
import json
import math
from collections import defaultdict
from pathlib import Path

from dcdgan.checkpoint import atomic_write
from dcdgan.runs import MetricsLog


def _fmt(value, kind: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if kind == "count":
        return f"{value / 1e6:.3f}M"
    if kind == "macs":
        return f"{value / 1e9:.3f}G"
    if kind == "kid":
        return f"{value * 1000:.2f}"
    return f"{value:.3f}" if kind == "ssim" else f"{value:.2f}"


COLUMNS = [("params", "params", "count"), ("MACs", "macs", "macs"), ("FID", "fid", "fid"), ("KIDx1e3", "kid_mean", "kid"), ("PSNR", "psnr", "psnr"), ("SSIM", "ssim", "ssim"), ("LPIPS", "lpips", "ssim"), ("mIoU", "miou", "ssim")]


def table_rows(metrics: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the final table (only the columns some model has)."""
    models = metrics["models"]
    cols = [c for c in COLUMNS if any(m.get(c[1]) is not None for m in models.values())]
    header = ["model", "step"] + [c[0] for c in cols]
    labels = {"teacher": "teacher", "student_last": "student (last)", "student_best": "student (best on val)", "exported": "exported"}
    chosen = {"best on validation": "best on val"}
    label = lambda n, m: f"teacher ({chosen.get(m['chosen'], m['chosen'])})" if n == "teacher" and m.get("chosen") else labels.get(n, n)  # noqa: E731
    rows = [[label(n, m), str(m["step"])] + [_fmt(m.get(key), kind) for _, key, kind in cols] for n, m in models.items()]
    return header, rows


def format_table(metrics: dict) -> str:
    """The final table as aligned text."""
    header, rows = table_rows(metrics)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths)))  # noqa: E731
    out = [f"{metrics['split']} split, {metrics['n_images']} images at {metrics['image_size']}px", line(header), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    out += metrics.get("notes", [])
    return "\n".join(out)


def plot_curves(records: list[dict], out: Path, prefix: str, title: str) -> Path | None:
    """One PNG with a line per metric whose name starts with ``prefix`` (train losses or validation scores)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for r in records:
        for key, value in r.items():
            if isinstance(value, (int, float)) and key not in ("step", "epoch", "lr") and key.startswith(prefix):
                series[key].append((r["step"], value))
    if not series:
        return None
    fig, axes = plt.subplots(len(series), 1, figsize=(7, 1.9 * len(series)), sharex=True, squeeze=False)
    for ax, (key, points) in zip(axes[:, 0], sorted(series.items())):
        steps, values = zip(*points)
        ax.plot(steps, values, lw=1)
        ax.set_ylabel(key, fontsize=8)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("step")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def write_report(run_dir: Path) -> Path:
    """Write run_dir/report.html (and the curve PNGs it shows); returns its path."""
    run_dir = Path(run_dir)
    records = MetricsLog(run_dir / "metrics.jsonl").read()
    train = [r for r in records if "phase" in r]
    loss_png = plot_curves(train, run_dir / "curves_losses.png", "", "training losses")
    val_png = plot_curves([r for r in records if "phase" not in r], run_dir / "curves_validation.png", "val/", "validation (lower is better)")
    parts = [f"<h1>dcdgan run: {html.escape(run_dir.name)}</h1>"]
    metrics_path = run_dir / "metrics.json"
    if metrics_path.is_file():
        metrics = json.loads(metrics_path.read_text())
        header, rows = table_rows(metrics)
        parts.append(f"<h2>Final evaluation: {html.escape(metrics['split'])} split, {metrics['n_images']} images at {metrics['image_size']}px</h2>")
        parts.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>" for row in rows]
        parts.append("</table>")
        sel = metrics.get("selection", {})
        parts.append(
            f"<p>Model selection: validation {html.escape(str(sel.get('metric')))} on split {html.escape(str(sel.get('on_split')))}, "
            f"best step {sel.get('best_step')}, last step {sel.get('last_step')}. The test split was never used for selection.</p>"
        )
        parts += [f"<p>{html.escape(n)}</p>" for n in metrics.get("notes", [])]
    for png in (loss_png, val_png):
        if png is not None:
            parts.append(f'<img src="{png.name}" alt="{png.stem}">')
    grids = sorted((run_dir / "samples").glob("step_*.png"))
    if grids:
        parts.append("<h2>Samples (input | teacher | student | target)</h2>")
        for grid in grids:
            parts.append(f'<figure><img src="samples/{grid.name}" class="grid"><figcaption>{grid.stem}</figcaption></figure>')
    config = run_dir / "config.yaml"
    if config.is_file():
        parts.append(f"<h2>Config</h2><pre>{html.escape(config.read_text())}</pre>")
    style = (
        "body{font-family:sans-serif;max-width:1000px;margin:auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}figure{display:inline-block;margin:4px}"
        "img.grid{image-rendering:pixelated;max-width:100%}"  # natural size: samples.py already enlarged small tiles to >= 128 px
    )
    page = f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(run_dir.name)}</title><style>{style}</style></head><body>{''.join(parts)}</body></html>\n"
    out = run_dir / "report.html"
    atomic_write(out, lambda tmp: tmp.write_text(page))
    return out
