"""Time the dataset scan that runs before training (`dcdgan check` / the start of `dcdgan distill`).

Writes N small JPEGs per domain (unpaired trainA/trainB, 64x64 by default) into a temporary folder, then
times, alternating in one process, the ways the scan can run over them:
- serial:   one decoding thread, no cache (what a plain loop over the files costs);
- threads:  the default thread pool (2 per core), no cache;
- cached:   the default, with the cache filled by an earlier scan (what a resumed run pays).
Prints a Markdown table of medians and ratios to serial.

    nice -n 10 python benchmarks/scan.py --images 2000 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from dcdgan.config import load_config
from dcdgan.scan import scan_data


def make_images(root: Path, total: int, size: int, seed: int) -> None:
    """``total`` JPEGs split over trainA/ and trainB/, random smooth content so decoding is not trivial."""
    rng = np.random.default_rng(seed)
    for i in range(total):
        folder = root / ("trainA" if i % 2 == 0 else "trainB")
        folder.mkdir(parents=True, exist_ok=True)
        small = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
        Image.fromarray(small).resize((size, size), Image.BILINEAR).save(folder / f"{i:05d}.jpg", quality=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000, help="images in all (half per domain)")
    parser.add_argument("--size", type=int, default=64, help="side of the square images")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        os.environ["DCDGAN_CACHE_DIR"] = str(Path(tmp) / "cache")
        make_images(root, args.images, args.size, args.seed)
        cfg = load_config("quickstart_unpaired", [f"data.root={root}", "data.input_nc=3", "data.output_nc=3",
                                                  "data.val_split=holdout", "eval.final=false"]).data
        scan_data(cfg, ["train"], quiet=True)  # fills the cache (and the OS file cache, for every setup alike)
        setups = {
            "serial": lambda: scan_data(cfg, ["train"], quiet=True, use_cache=False, workers=1),
            "threads": lambda: scan_data(cfg, ["train"], quiet=True, use_cache=False),
            "cached": lambda: scan_data(cfg, ["train"], quiet=True),
        }
        times: dict[str, list[float]] = {name: [] for name in setups}
        for _ in range(args.repeats):
            for name, run in setups.items():  # alternate, so load changes on the machine hit every setup
                start = time.perf_counter()
                report = run()
                times[name].append(time.perf_counter() - start)
                assert report.images == args.images and not report.bad and not report.fatal

    serial = statistics.median(times["serial"])
    print(f"{args.images} images of {args.size}x{args.size} (JPEG), {os.cpu_count()} cores, median of {args.repeats}\n")
    print("| setup | median (s) | min (s) | max (s) | images/s | speed-up vs serial |")
    print("|---|---|---|---|---|---|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.2f} | {min(values):.2f} | {max(values):.2f} | {args.images / median:,.0f} | {serial / median:.1f}x |")


if __name__ == "__main__":
    main()
