"""What int8 costs and gains on the phone formats: ExecuTorch and LiteRT, fp32 against int8, for one run's student.

    python benchmarks/phone_int8.py RUN --runs 30 --threads 1

For each format, the conversions ``dcdgan export RUN --format F`` makes (fp32; ``--precision int8``, calibrated on
32 of the run's training images) at the run's image size, without the export's refusals, so that a model over a
bound is measured rather than dropped; the table gives the file sizes, fp32's max abs difference and int8's PSNR
and max abs difference against PyTorch fp32 on up to 100 of the run's validation images (what the export checks),
the conversion CPU seconds, and the latency of fp32 and int8 on the format's own runtime, timed alternately in one
process (random input at the run's size, batch 1): medians (p90) and the int8 speedup. Needs ``.[mobile]``.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from dcdgan import mobile
from dcdgan.backends import load_runner, load_torch_source
from dcdgan.conversion import description_json, run_images
from dcdgan.metrics.latency import BenchSettings, time_runners
from dcdgan.parity import max_abs_difference, psnr_against, torch_outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a run directory (its student, training images for calibration, validation images)")
    parser.add_argument("--formats", default="executorch,litert")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    src = load_torch_source(args.run)
    net = src.net.eval()
    calibration = run_images(src, "train", mobile.INT8_CALIBRATION_IMAGES)
    check = run_images(src, "val", 100)
    size = check[0].shape[-1]
    reference = torch_outputs(net, check)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in args.formats.split(","):
            made = {}
            start = time.process_time()
            fp32 = mobile.litert_bytes(net, src.spec, size) if fmt == "litert" else mobile.executorch_bytes(net, src.spec)
            made["fp32"] = (fp32, time.process_time() - start)
            start = time.process_time()
            int8 = mobile.litert_int8_bytes(fp32, calibration) if fmt == "litert" else mobile.executorch_int8_bytes(net, src.spec, calibration)
            made["int8"] = (int8, time.process_time() - start + (made["fp32"][1] if fmt == "litert" else 0))  # LiteRT int8 starts from fp32
            runners = []
            for precision, (data, cpu_s) in made.items():
                out = Path(tmp) / f"{fmt}_{precision}{ {'executorch': '.pte', 'litert': '.tflite'}[fmt]}"
                out.write_bytes(data)
                mobile.description_file(out).write_text(description_json(src.spec, precision))
                runners.append(load_runner(out, backend=fmt, threads=args.threads))
                print(f"[{fmt} {precision}] {len(data) / 1e3:.0f} kB, {cpu_s:.0f} CPU s", file=sys.stderr, flush=True)
            quality = {
                "fp32_diff": max_abs_difference(runners[0], check, reference),
                "psnr": psnr_against(runners[1], check, reference),
                "int8_diff": max_abs_difference(runners[1], check, reference),
            }
            settings = BenchSettings(fmt, "fp32", "cpu", size, 1, args.threads, args.runs, args.warmup, runners[0].input_nc)
            fp32_t, int8_t = time_runners(runners, settings)
            rows.append((fmt, made, quality, fp32_t, int8_t))

    print(f"\n{platform.processor() or platform.machine()}, {args.threads} thread(s), batch 1, run {args.run}, "
          f"{args.warmup} warm-up + {args.runs} alternated runs each; medians (p90)\n")
    print(f"{len(check)} validation images at {size}x{size}; int8 calibrated on {len(calibration)} training images\n")
    print("| format | fp32 file | int8 file | fp32 max abs diff | int8 PSNR vs fp32 | int8 max abs diff | fp32 ms | int8 ms | int8 speedup | conversion CPU s fp32 / int8 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for fmt, made, q, f, i in rows:
        print(f"| {fmt} | {len(made['fp32'][0]) / 1e3:.0f} kB | {len(made['int8'][0]) / 1e3:.0f} kB | {q['fp32_diff']:.2e} | {q['psnr']:.2f} dB "
              f"| {q['int8_diff']:.3f} | {f['median_ms']:.2f} ({f['p90_ms']:.2f}) | {i['median_ms']:.2f} ({i['p90_ms']:.2f}) "
              f"| {f['median_ms'] / i['median_ms']:.2f}x | {made['fp32'][1]:.0f} / {made['int8'][1]:.0f} |")


if __name__ == "__main__":
    main()
