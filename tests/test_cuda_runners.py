"""The CUDA-graph runner's bookkeeping (one graph per shape, the bound, static buffers, outputs copied out), run on
the CPU through a graph-like stand-in; the runner choice and its one-line refusals; the real capture on CUDA only."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dcdgan.backends import Runner, runner_from_module
from dcdgan.cli import main
from dcdgan.cuda_runners import GRAPH_BOUND, GraphRunner, capture_cuda_graph, resolve_runner, tf32
from dcdgan.errors import UserError
from dcdgan.metrics.latency import BenchSettings, format_bench, parse_architecture, time_runners
from dcdgan.nets import build_generator

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="no CUDA device: the real CUDA graph capture and replay need one")


class ReplayOnCPU:
    """A CUDA graph's contract on the CPU: capture runs the net once; replay runs it on the static input into the
    static output tensor (same storage every time), as a replayed graph writes its recorded output address."""

    def __init__(self, net: torch.nn.Module, static_in: torch.Tensor):
        self.net, self.static_in = net, static_in
        self.static_out = net(static_in)
        self.replays = 0

    def replay(self) -> None:
        self.static_out.copy_(self.net(self.static_in))
        self.replays += 1


def cpu_runner(bound: int = GRAPH_BOUND, dtype: torch.dtype = torch.float32) -> tuple[GraphRunner, torch.nn.Module, list[ReplayOnCPU]]:
    torch.manual_seed(0)
    net = build_generator(parse_architecture("mobile_resnet_9blocks:4")).eval().to(dtype)
    graphs: list[ReplayOnCPU] = []

    def capture(net, static_in):
        graphs.append(ReplayOnCPU(net, static_in))
        return graphs[-1], graphs[-1].static_out

    return GraphRunner(net, dtype, "cpu", capture, bound), net, graphs


def image(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32))


def eager(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return net(x)


def test_one_graph_per_shape_and_static_buffers_reused():
    runner, net, graphs = cpu_runner()
    a, b = (1, 3, 16, 16), (2, 3, 16, 20)
    outs = [runner(image(s, seed)) for seed, s in enumerate([a, a, b, a])]
    assert runner.captures == 2 and len(graphs) == 2 and list(runner.graphs) == [b, a]  # a used last
    assert [g.replays for g in graphs] == [3, 1]
    held = runner.graphs[a]
    assert held.static_in.data_ptr() == graphs[0].static_in.data_ptr()  # the one buffer of shape a, reused
    assert torch.equal(held.static_in, image(a, 3))  # it holds the last input copied in
    for seed, (s, out) in enumerate(zip([a, a, b, a], outs)):
        assert out.shape == s and out.dtype == torch.float32
        assert torch.allclose(out, eager(net, image(s, seed)), atol=1e-6)


def test_outputs_are_copied_out_of_the_static_buffer():
    runner, net, graphs = cpu_runner()
    shape = (1, 3, 16, 16)
    first = runner(image(shape, 0))
    kept = first.clone()
    second = runner(image(shape, 1))  # replays into the same static output
    assert torch.equal(first, kept) and not torch.equal(first, second)
    static = graphs[0].static_out
    assert torch.equal(static, second)  # what the graph wrote last ...
    assert first.data_ptr() != static.data_ptr() and second.data_ptr() != static.data_ptr()  # ... never handed out


def test_bound_drops_the_least_recently_used_graph():
    runner, _, graphs = cpu_runner(bound=2)
    a, b, c = ((1, 3, 8, 8 + 4 * i) for i in range(3))
    for s in (a, b, a, c):  # c's capture drops b (a was used after it)
        runner(image(s, 0))
    assert list(runner.graphs) == [a, c] and runner.captures == 3
    runner(image(b, 0))  # b again: captured anew, a goes
    assert list(runner.graphs) == [c, b] and runner.captures == 4
    assert runner.graphs[b].graph is graphs[-1] and graphs[1] is not graphs[-1]
    with pytest.raises(ValueError):
        GraphRunner(torch.nn.Identity(), torch.float32, "cpu", bound=0)


def test_lower_precision_static_input_and_float32_output():
    runner, net, _ = cpu_runner(dtype=torch.bfloat16)
    x = image((1, 3, 16, 16), 0)
    out = runner(x)
    assert runner.graphs[(1, 3, 16, 16)].static_in.dtype == torch.bfloat16 and out.dtype == torch.float32
    assert torch.equal(out, eager(net, x.bfloat16()).float())


def test_tf32_flags_are_set_for_the_call_and_restored():
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    with tf32(not before[0]):
        assert torch.backends.cudnn.allow_tf32 == torch.backends.cuda.matmul.allow_tf32 == (not before[0])
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == before


def test_which_runner_a_request_means():
    assert resolve_runner("auto", "torch", "cpu") == "eager"
    assert resolve_runner("eager", "torch", "cpu") == "eager"
    assert resolve_runner("auto", "compile", "cpu") == resolve_runner("compile", "torch", "cpu") == "compile"
    assert resolve_runner("auto", "openvino", "cpu") is None and resolve_runner("eager", "onnxruntime", "cpu") is None
    with pytest.raises(UserError, match="does not apply to --backend openvino"):
        resolve_runner("cuda-graph", "openvino", "cpu")
    with pytest.raises(UserError, match="unknown runner 'graphs'"):
        resolve_runner("graphs", "torch", "cpu")
    if CUDA:
        assert resolve_runner("auto", "torch", "cuda") == "cuda-graph"
    else:
        print("no CUDA device: auto on --device cuda (cuda-graph) not checked")


@pytest.mark.skipif(CUDA, reason="a CUDA device is present: the no-CUDA refusal cannot happen here")
def test_cli_refuses_cuda_graph_without_cuda_in_one_line(capsys, tiny_run_dir, tmp_path):
    refusal = "error: --runner cuda-graph replays CUDA graphs and needs a CUDA GPU: no CUDA device is available here\n"
    for extra in ([], ["--device", "cuda"]):
        assert main(["bench", "mobile_resnet_9blocks:4", "--runner", "cuda-graph", "--size", "32", *extra]) == 2
        assert capsys.readouterr().err == f"dcdgan bench: {refusal}"
        assert main(["translate", str(tiny_run_dir), str(tmp_path), str(tmp_path / "out"), "--runner", "cuda-graph", *extra]) == 2
        assert capsys.readouterr().err == f"dcdgan translate: {refusal}"
    assert main(["bench", "mobile_resnet_9blocks:4", "--device", "cuda", "--size", "32"]) == 2  # auto: cuda-graph on CUDA
    assert capsys.readouterr().err == "dcdgan bench: error: --device cuda: no CUDA device is available\n"
    assert main(["bench", "mobile_resnet_9blocks:4", "--runner", "compile", "--backend", "openvino"]) == 2
    assert capsys.readouterr().err.strip() == "dcdgan bench: error: --runner compile runs PyTorch modules; it does not apply to --backend openvino"


def test_bench_json_names_the_runner(capsys):
    assert main(["bench", "mobile_resnet_9blocks:4", "--vs", "resnet_9blocks:4", "--size", "32", "--runs", "2", "--warmup", "1", "--threads", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["runner"], result["vs"]["runner"]) == ("eager", "eager")  # auto on CPU
    # the graph runner's summary, driven by bench's own timing loop (CPU stand-in for the capture)
    graphs, net, _ = cpu_runner()
    forward = lambda x: graphs(torch.from_numpy(x)).numpy()  # noqa: E731
    spec = parse_architecture("mobile_resnet_9blocks:4")
    runner = Runner("torch", "fp32", 3, 3, 4, None, "mobile_resnet_9blocks:4", forward, spec, "cuda-graph")
    settings = BenchSettings(size=16, batch=2, runs=3, warmup=2, threads=1)
    (summary,) = time_runners([runner], settings)
    assert summary["runner"] == "cuda-graph" and summary["runs"] == 3 and graphs.captures == 1
    assert "torch cuda-graph fp32" in format_bench(summary)


@needs_cuda
def test_bench_json_names_cuda_runners(capsys):
    for extra, expected in (([], "cuda-graph"), (["--runner", "eager"], "eager"), (["--runner", "compile"], "compile")):
        args = ["bench", "mobile_resnet_9blocks:4", "--device", "cuda", "--size", "32", "--runs", "2", "--warmup", "3", "--json", *extra]
        assert main(args) == 0
        assert json.loads(capsys.readouterr().out)["runner"] == expected


@needs_cuda
def test_real_cuda_graph_capture_matches_eager():
    torch.manual_seed(0)
    spec = parse_architecture("mobile_resnet_9blocks:4")
    net = build_generator(spec).eval().cuda()
    runner = GraphRunner(net, torch.float32, "cuda", capture_cuda_graph, bound=2)
    x, y = image((2, 3, 32, 32), 0), image((2, 3, 32, 32), 1)
    with tf32(False):
        first, second = runner(x), runner(y)
        want = eager(net, x.cuda()).cpu()
    assert runner.captures == 1 and first.device.type == "cpu"
    assert torch.allclose(first, want, atol=1e-5) and not torch.equal(first, second)
    # through the product's Runner: the net is held by the runner, so dropping ours keeps its weights alive
    r = runner_from_module(build_generator(spec), spec, "torch", "fp32", "cuda", runner="cuda-graph")
    torch.cuda.empty_cache()
    out = r(x.numpy())
    assert out.shape == (2, 3, 32, 32) and np.isfinite(out).all() and r.runner == "cuda-graph"
