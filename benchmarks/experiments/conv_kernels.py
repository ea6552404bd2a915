"""Micro-benchmarks behind benchmarks/RESULTS.md "Photos", second speed session: forward+backward of single
convolutions of the horse2zebra_64 networks at 1 thread, alternatives alternated in one process (medians, ratio
to the first). 1x1 256->256 at 16x16 (the separable blocks' pointwise convs): PyTorch's _slow_conv2d vs matmul,
baddbmm, channels_last; the 7x7 64->3 head at 64x64: oneDNN vs output channels zero-padded to 8/16, PyTorch's own
kernel (mkldnn off), channels_last. Then the 3->64 7x7 stem's backward, separate passes vs batched ones.

    OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/experiments/conv_kernels.py
"""
import statistics
import time

import torch
import torch.nn.functional as F
torch.set_num_threads(1)
torch.manual_seed(0)
def bench(fns, reps=30):
    T = {n: [] for n in fns}
    for i in range(reps):
        items = list(fns.items()); items = items if i % 2 == 0 else items[::-1]
        for n, f in items:
            t = time.perf_counter(); f(); T[n].append(time.perf_counter() - t)
    base = statistics.median(T[list(fns)[0]][3:])
    for n, v in T.items(): print(f"  {n:30s} {statistics.median(v[3:])*1e3:7.3f} ms  ratio {statistics.median(v[3:])/base:.3f}")
# 1x1 conv 256->256 at 16x16, batch b
for b in (1, 3):
  x = torch.randn(b,256,16,16, requires_grad=True); w = torch.randn(256,256,1,1, requires_grad=True); bias = torch.randn(256, requires_grad=True)
  go = torch.randn(b,256,16,16)
  def conv():
    y = F.conv2d(x, w, bias); y.backward(go)
  def mm():
    y = (torch.matmul(w.view(256,256), x.view(b,256,-1)) + bias.view(1,-1,1)).view(b,256,16,16); y.backward(go)
  def mm2():
    y = torch.baddbmm(bias.view(1,-1,1).expand(b,-1,1) if False else bias.view(1,-1,1), w.view(1,256,256).expand(b,-1,-1), x.view(b,256,-1)).view(b,256,16,16); y.backward(go)
  def nomk():
    with torch.backends.mkldnn.flags(enabled=False):
      y = F.conv2d(x, w, bias); y.backward(go)
  def cl():
    y = F.conv2d(x.contiguous(memory_format=torch.channels_last), w, bias); y.backward(go)
  print(f"1x1 256->256 16x16 batch {b} fwd+bwd")
  bench({"conv (slow_conv2d)": conv, "matmul": mm, "baddbmm": mm2, "channels_last": cl})
# head 7x7 64->3 at 64x64 (input padded 70x70)
x = torch.randn(1,64,70,70, requires_grad=True); w = torch.randn(3,64,7,7, requires_grad=True); bias = torch.randn(3, requires_grad=True)
go = torch.randn(1,3,64,64)
def head(): F.conv2d(x, w, bias).backward(go)
def headpad(k):
  def f():
    wp = torch.cat([w, w.new_zeros(k-3,64,7,7)]); bp = torch.cat([bias, bias.new_zeros(k-3)])
    F.conv2d(x, wp, bp)[:, :3].backward(go)
  return f
def headslow():
  with torch.backends.mkldnn.flags(enabled=False): F.conv2d(x, w, bias).backward(go)
def headcl():
  F.conv2d(x.contiguous(memory_format=torch.channels_last), w, bias).backward(go)
print("head 7x7 64->3 at 64x64 fwd+bwd")
bench({"mkldnn": head, "pad8": headpad(8), "pad16": headpad(16), "no mkldnn": headslow, "channels_last": headcl}, reps=16)
def headf(): 
  with torch.no_grad(): F.conv2d(x, w, bias)
def headf16():
  with torch.no_grad(): F.conv2d(x, torch.cat([w, w.new_zeros(13,64,7,7)]), torch.cat([bias, bias.new_zeros(13)]))
print("head fwd only")
bench({"mkldnn": headf, "pad16": headf16}, reps=16)

# the stem: 3->64 7x7 conv backward at 64x64, three images, one of which needs its input gradient (a fake B)
w = torch.randn(64,3,7,7, requires_grad=True); bias = torch.randn(64, requires_grad=True)
xs = [torch.randn(1,3,70,70) for _ in range(3)]
go1 = torch.randn(1,64,64,64)
def run(x, grad):
    x = x.clone().requires_grad_(grad); y = F.conv2d(x, w, bias); y.backward(go1.expand(len(x),-1,-1,-1))
def batch3(): run(torch.cat(xs), True)
def sep(): run(xs[0], False); run(xs[1], True); run(xs[2], False)
def two_one(): run(torch.cat([xs[0], xs[2]]), False); run(xs[1], True)
def noin3(): run(torch.cat(xs), False)
fns = {"sep (1 with input grad)": sep, "batch3 (all input grad)": batch3, "batch2 no-grad + 1 grad": two_one, "batch3 no input grad": noin3}
T = {n: [] for n in fns}
for i in range(20):
    items = list(fns.items()); items = items[i % 4:] + items[:i % 4]
    for n, f in items:
        w.grad = None; bias.grad = None
        t = time.perf_counter(); f(); T[n].append(time.perf_counter() - t)
for n, v in T.items(): print(f"{n:28s} {statistics.median(v[2:]) * 1e3:.1f} ms")
