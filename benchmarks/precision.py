"""What lower precision costs and buys: a run's student in PyTorch fp32 and OpenVINO fp32 / bf16 / int8, scored on
the run's test split (FID, KID, PSNR/SSIM when paired, PSNR against the PyTorch fp32 outputs) and timed side by side.

Quality runs on the run's own images (its resolution and channels); latency is timed at ``--size`` on random input,
the four models alternating in one process, every backend pinned to its precision (no silent bf16). int8 is NNCF
post-training quantization calibrated on the run's training images, as ``dcdgan export --precision int8`` does.

    python benchmarks/precision.py RUN_DIR --size 256 --threads 2 --runs 20
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time

import numpy as np
import torch

from dcdgan.backends import RunnerModule, load_torch_source, runner_from_module
from dcdgan.config import load_config
from dcdgan.data import DataRoot
from dcdgan.errors import UserError
from dcdgan.evaluate import batches, reference_stats, score_generator
from dcdgan.metrics.inception import load_inception
from dcdgan.metrics.latency import BenchSettings, time_runners

VARIANTS = (("torch", "fp32"), ("openvino", "fp32"), ("openvino", "bf16"), ("openvino", "int8"))


def psnr_to(outputs: list[np.ndarray], reference: list[np.ndarray]) -> float:
    """PSNR (dB, images in [-1, 1]) of ``outputs`` against ``reference`` over all pixels."""
    mse = float(np.mean([np.mean((o - r) ** 2) for o, r in zip(outputs, reference)]))
    return float("inf") if mse == 0 else 10 * np.log10(4.0 / mse)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a run directory (its student.safetensors, config and data)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--size", type=int, default=256, help="latency input size")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--inception", default="auto", help="FID Inception weights file (default: as dcdgan eval finds them)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    src = load_torch_source(args.run)
    cfg = load_config(str(src.run_dir / "config.yaml"))
    data = DataRoot(cfg.data)
    dataset = data.eval_dataset(args.split)
    started = time.time()
    runners, left_out = {}, []
    for backend, precision in VARIANTS:
        try:
            runners[f"{backend} {precision}"] = runner_from_module(src.net, src.spec, backend, precision, threads=args.threads, source=str(src.path),
                                                                   calibration=src)
        except UserError as err:  # e.g. OpenVINO bf16 on a CPU without bf16: refused, never run as f32 under a bf16 label
            left_out.append(f"{backend} {precision}: left out: {err}")
            print(left_out[-1], flush=True)
    print(f"built {len(runners)} runners in {time.time() - started:.0f}s")

    inception = load_inception(args.inception)
    with tempfile.TemporaryDirectory() as tmp:
        reference = reference_stats(tmp, data, args.split, inception, 16, quiet=True)
    inputs = [batch["A"].numpy() for batch in batches(dataset, 16)]
    fp32 = [runners["torch fp32"](x) for x in inputs]
    quality = {}
    for name, runner in runners.items():
        scores = score_generator(RunnerModule(runner), dataset, torch.device("cpu"), 16, inception=inception, reference=reference, quiet_bar=True)
        scores["psnr_vs_fp32"] = psnr_to([runner(x) for x in inputs], fp32)
        quality[name] = scores
        print(f"{name}: {scores}", flush=True)  # kept in the log even if the timing below fails

    settings = BenchSettings(size=args.size, threads=args.threads, runs=args.runs, warmup=args.warmup, input_nc=src.spec.input_nc)
    timings = dict(zip(runners, time_runners(list(runners.values()), settings)))
    base = timings["openvino fp32"]["median_ms"]  # the reference row: always built (fp32 runs on every CPU)

    print(f"\nrun {src.run_dir} ({src.spec.netG} ngf {src.spec.ngf}), {args.split} split: {quality['torch fp32']['n_images']} images; "
          f"latency 1x{src.spec.input_nc}x{args.size}x{args.size}, {args.threads} threads, {args.runs} alternated runs; "
          f"{platform.processor() or platform.machine()}, torch {torch.__version__}\n")
    paired = "psnr" in quality["torch fp32"]
    # "PSNR" is to the real targets (dcdgan eval's: uint8, per image); the other is psnr_to's (float, pooled MSE)
    head = ("| model | FID | KID x1e3 |" + (" PSNR | SSIM |" if paired else "")
            + " PSNR vs PyTorch fp32 (dB, float outputs, pooled MSE) | median ms | p90 ms | speed vs OpenVINO fp32 |")
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for name, q in quality.items():
        t = timings[name]
        row = f"| {name} | {q['fid']:.2f} | {1000 * q['kid_mean']:.2f} |"
        if paired:
            row += f" {q['psnr']:.2f} | {q['ssim']:.3f} |"
        vs = "inf" if q["psnr_vs_fp32"] == float("inf") else f"{q['psnr_vs_fp32']:.1f}"
        row += f" {vs} | {t['median_ms']:.1f} | {t['p90_ms']:.1f} | {base / t['median_ms']:.2f}x |"
        print(row)
    for line in left_out:
        print(f"\n{line}")


if __name__ == "__main__":
    main()
