"""A/B of an exact student-graph rewrite in OpenVINO: the full-resolution 7x7 convolutions (the 3->16 stem and the
16->3 head, 23% of the student's time in the OpenVINO profile) computed on a space-to-depth view of their padded
input, with a 4x4 kernel that holds the 7x7 one at each of the four output phases, then depth-to-space back.
It does 1.3x the multiply-adds of the original conv but reads 4x the channels per pixel (12 or 64 instead of 3 or
16), which fills vector registers. Outputs are the same up to fp32 summation order.

Recorded in benchmarks/RESULTS.md before the phase-split head (dcdgan.nets.inference): the exporter now applies that
inference form, so re-running this script compares against the phase-split base (see experiments/head_phase_split.py).

    python benchmarks/experiments/s2d_rewrite.py 30      # runs per variant; 1x3x256x256, 2 threads, fp32
"""
import copy
import sys
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
from dcdgan.backends import runner_from_module  # noqa: E402
from dcdgan.metrics.latency import BenchSettings, parse_architecture, time_runners  # noqa: E402
from dcdgan.nets import build_generator  # noqa: E402


class SpaceToDepthConv(nn.Module):
    """pad + KxK stride-1 conv, computed as pixel_unshuffle(2) -> ceil((K+1)/2)-wide conv -> pixel_shuffle(2)."""

    def __init__(self, pad: nn.Module, conv: nn.Conv2d):
        super().__init__()
        k = conv.kernel_size[0]
        oc, ic = conv.out_channels, conv.in_channels
        k2 = (k + 2) // 2
        w = torch.zeros(oc * 4, ic * 4, k2, k2)
        for a in range(2):
            for b in range(2):
                for p in range(2):
                    for q in range(2):
                        for u in range(k2):
                            for v in range(k2):
                                i, j = 2 * u + p - a, 2 * v + q - b
                                if 0 <= i < k and 0 <= j < k:
                                    w[a * 2 + b :: 4, p * 2 + q :: 4, u, v] = conv.weight.data[:, :, i, j]
        self.pad = pad
        self.conv = nn.Conv2d(ic * 4, oc * 4, k2, bias=conv.bias is not None)
        self.conv.weight.data.copy_(w)
        if conv.bias is not None:
            self.conv.bias.data.copy_(conv.bias.data.repeat_interleave(4))

    def forward(self, x):
        x = self.pad(x)
        if x.shape[-1] % 2 or x.shape[-2] % 2:  # odd padded sizes: one more zero row/column, cropped away below
            x = F.pad(x, (0, x.shape[-1] % 2, 0, x.shape[-2] % 2))
        h, w = x.shape[-2] - 6, x.shape[-1] - 6
        return F.pixel_shuffle(self.conv(F.pixel_unshuffle(x, 2)), 2)[..., :h, :w]


def rewritten(net: nn.Module, stem: bool, head: bool) -> nn.Module:
    """A copy of the mobile ResNet with its stem and/or head 7x7 conv in space-to-depth form."""
    v = copy.deepcopy(net)
    layers = list(v.model)
    if head:
        layers[-3:-1] = [SpaceToDepthConv(layers[-3], layers[-2])]
    if stem:
        layers[0:2] = [SpaceToDepthConv(layers[0], layers[1])]
    v.model = nn.Sequential(*layers)
    return v


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    torch.manual_seed(0)
    spec = parse_architecture("mobile_resnet_9blocks:16")
    net = build_generator(spec).eval()
    variants = {"base": net, "head": rewritten(net, False, True), "stem": rewritten(net, True, False), "both": rewritten(net, True, True)}
    x = torch.rand(1, 3, 256, 256) * 2 - 1
    settings = BenchSettings(backend="openvino", threads=2, runs=runs, warmup=3)
    runners = [runner_from_module(v, spec, "openvino", "fp32", "cpu", 2, source=k) for k, v in variants.items()]
    with torch.no_grad():
        ref = net(x)
        for (k, v), runner in zip(variants.items(), runners):
            print(f"{k}: max abs diff to base {(v(x) - ref).abs().max().item():.2e} in torch, "
                  f"{abs(runner(x.numpy()) - ref.numpy()).max():.2e} in OpenVINO")
    results = time_runners(runners, settings)  # warm-up, then the variants alternately
    base = results[0]["median_ms"]
    print("| variant | median ms | ratio to base |\n|---|---|---|")
    for r in results:
        print(f"| {r['model']} | {r['median_ms']:.1f} | {r['median_ms'] / base:.3f} |")


if __name__ == "__main__":
    main()
