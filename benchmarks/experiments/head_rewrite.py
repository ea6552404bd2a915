"""A/B of one student-graph rewrite in OpenVINO: the 16->3 7x7 head conv widened to 8 or 16 output channels with
zero weights and sliced back to 3 (identical outputs), timed alternately against the original.

Recorded in benchmarks/RESULTS.md before the phase-split head (dcdgan.nets.inference): the exporter now applies that
inference form, so re-running this script compares against the phase-split base (see experiments/head_phase_split.py).

    python benchmarks/experiments/head_rewrite.py 30      # runs per variant; 1x3x256x256, 2 threads, fp32
"""
import time, statistics, sys, copy
import torch, torch.nn as nn
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2] / "src"))
from dcdgan.nets import build_generator
from dcdgan.metrics.latency import parse_architecture
from dcdgan.conversion import onnx_model_bytes, openvino_model
from dcdgan.backends import openvino_compile
torch.manual_seed(0)
spec = parse_architecture("mobile_resnet_9blocks:16")
net = build_generator(spec).eval()

class PaddedHead(nn.Module):
    """The 7x7 head conv with zero output channels up to `oc`, sliced back: same outputs."""
    def __init__(self, conv, oc):
        super().__init__()
        self.conv = nn.Conv2d(conv.in_channels, oc, conv.kernel_size, bias=True)
        with torch.no_grad():
            self.conv.weight.zero_(); self.conv.bias.zero_()
            self.conv.weight[:conv.out_channels] = conv.weight
            self.conv.bias[:conv.out_channels] = conv.bias
        self.n = conv.out_channels
    def forward(self, x):
        return self.conv(x)[:, :self.n]

variants = {"base": net}
for oc in (8, 16):
    v = copy.deepcopy(net)
    v.model[-2] = PaddedHead(net.model[-2], oc)
    variants[f"head{oc}"] = v
x = torch.rand(1, 3, 256, 256) * 2 - 1
with torch.no_grad():
    ref = net(x)
    for k, v in variants.items(): print(k, (v(x) - ref).abs().max().item())
compiled = {}
for k, v in variants.items():
    m = openvino_model(onnx_model_bytes(v, spec), spec)
    c = openvino_compile(m, "fp32", 2)
    compiled[k] = c.create_infer_request()
xn = x.numpy()
for r in compiled.values():
    for _ in range(3): r.infer({0: xn})
times = {k: [] for k in compiled}
for i in range(int(sys.argv[1]) if len(sys.argv) > 1 else 20):
    for k, r in compiled.items():
        t = time.perf_counter(); r.infer({0: xn}); times[k].append(time.perf_counter() - t)
base = statistics.median(times["base"])
for k, t in times.items():
    print(f"{k}: median {1000*statistics.median(t):.1f} ms  ratio to base {statistics.median(t)/base:.3f}")
