"""ourvidz.families.graphs (one CUDA graph per input signature) and Wan's cuda_graph switch, on the
CPU: a fake capturer stands in for torch.cuda.graph (it replays by calling the function on the
static buffers), so the signature cache, the LRU bound, the bit-for-bit check and the fallbacks
run here; the real capture is checked on a GPU by research/check_cuda_graphs.py."""

import numpy as np
import pytest
import torch
from torch.utils._pytree import tree_flatten, tree_unflatten

from ourvidz.families import graphs
from ourvidz.families.base import GenerationRequest
from ourvidz.families.graphs import CudaGraph, GraphedCall, difference, signature
from ourvidz.families.wan import speedups as wan_speedups
from ourvidz.model_cache import ModelCache
from ourvidz.speedups import SWITCHES, Speedups, apply


class Replay:
    """A stand-in for torch.cuda.CUDAGraph: replay() recomputes into the static outputs."""

    def __init__(self, fn, s_args, s_kwargs, outputs, skew=0.0):
        self.fn, self.s_args, self.s_kwargs, self.outputs, self.skew = fn, s_args, s_kwargs, outputs, skew

    def replay(self):
        new = self.fn(*self.s_args, **self.s_kwargs)
        for o, n in zip(tree_flatten(self.outputs)[0], tree_flatten(new)[0]):
            if isinstance(o, torch.Tensor):
                o.copy_(n + self.skew)


def fake_capture(log=None, skew=0.0, fail=None):
    def capture(fn, args, kwargs, warmup=3):
        if log is not None:
            log.append("capture")
        if fail:
            raise RuntimeError(fail)
        leaves, spec = tree_flatten((args, kwargs))
        static = [x.clone() if isinstance(x, torch.Tensor) else x for x in leaves]
        s_args, s_kwargs = tree_unflatten(static, spec)
        for _ in range(warmup):
            fn(*s_args, **s_kwargs)
        outputs = fn(*s_args, **s_kwargs)
        return CudaGraph(Replay(fn, s_args, s_kwargs, outputs, skew), static, outputs)

    return capture


def affine(x, scale=2.0, *, bias):
    return (x * scale + bias,)


def test_signature_keys_shape_dtype_strides_and_values():
    x, b = torch.ones(2, 3), torch.zeros(3)
    base = signature((x,), {"bias": b})
    assert signature((torch.zeros(2, 3),), {"bias": torch.ones(3)}) == base  # values of tensors do not count
    assert signature((torch.ones(2, 4),), {"bias": b}) != base
    assert signature((x.double(),), {"bias": b}) != base
    assert signature((torch.ones(1, 3).expand(2, 3),), {"bias": b}) != base  # stride 0
    assert signature((x, 3.0), {"bias": b}) != signature((x, 2.0), {"bias": b})
    assert signature((x,), {"bias": b, "opts": {"a": [1]}}) == signature((x,), {"bias": b, "opts": {"a": [1]}})
    assert signature((x,), {"bias": b}, ("compile",)) != base


def test_difference_is_bitwise():
    a = torch.tensor([1.0, float("nan"), -0.0])
    assert difference((a,), (a.clone(),)) is None  # NaN bits equal
    assert difference((a,), (torch.tensor([1.0, float("nan"), 0.0]),)) is not None  # -0.0 is not 0.0
    assert difference((a,), (a + 1,)).startswith("max abs diff")
    assert difference((a,), (a.half(),)) is not None
    assert difference((torch.tensor(2.0, dtype=torch.bfloat16),), (torch.tensor(2.0, dtype=torch.bfloat16),)) is None


def test_capture_once_per_signature_then_replay():
    log: list[str] = []
    call = GraphedCall(affine, capture=fake_capture(log))
    b = torch.zeros(3)
    for k in range(3):
        x = torch.full((2, 3), float(k))
        out = call(x, bias=b)
        assert torch.equal(out[0], affine(x, bias=b)[0])  # new inputs are copied into the static buffers
    kept = out[0]
    call(torch.full((2, 3), 9.0), bias=b)
    assert torch.equal(kept, torch.full((2, 3), 4.0))  # outputs are clones: the next replay does not touch them
    assert log == ["capture"] and call.stats["captures"] == 1 and call.stats["replays"] == 3
    call(torch.ones(4, 3), bias=b)
    assert log == ["capture"] * 2 and len(call.graphs) == 2 and not call.notes


def test_at_most_max_graphs_least_recently_used_out():
    call = GraphedCall(affine, capture=fake_capture(), max_graphs=2)
    b = torch.zeros(3)
    for n in (1, 2, 1, 3):  # 2 is the least recently used when 3 arrives
        call(torch.ones(n, 3), bias=b)
    assert len(call.graphs) == 2 and call.stats["evicted"] == 1
    assert sorted(k[3][1][0] for k in call.graphs) == [1, 3]  # (tensor, shape, ...) of the first argument


def test_a_capture_that_raises_runs_eagerly_for_good_with_one_note():
    log: list[str] = []
    call = GraphedCall(affine, capture=fake_capture(log, fail="operation not permitted when stream is capturing"),
                       name="demo")
    x, b = torch.ones(2, 3), torch.zeros(3)
    assert torch.equal(call(x, bias=b)[0], 2 * x) and torch.equal(call(x, bias=b)[0], 2 * x)
    assert log == ["capture"] and call.stats["eager_calls"] == 2 and not call.graphs
    (note,) = call.notes
    assert note.startswith("cuda_graph off for demo (2x3; 3), eager instead: capture failed: RuntimeError: "
                           "operation not permitted") and "\n" not in note and "Traceback" not in note


def test_a_replay_that_differs_from_eager_is_dropped():
    notes: list[str] = ["earlier"]
    call = GraphedCall(affine, capture=fake_capture(skew=1.0), notes=notes)
    x, b = torch.ones(2, 3), torch.zeros(3)
    assert torch.equal(call(x, bias=b)[0], 2 * x)  # the eager result, not the skewed replay
    assert not call.graphs and notes[0] == "earlier" and "max abs diff 1" in notes[1]
    assert call(x, bias=b)[0].eq(2).all() and call.stats["captures"] == 0


def test_the_real_capturer_refuses_cpu_tensors():
    call = GraphedCall(affine)  # torch.cuda.graph itself: CPU tensors are refused before any CUDA call
    out = call(torch.ones(2), bias=torch.zeros(2))
    assert torch.equal(out[0], torch.full((2,), 2.0))
    assert "capture failed: ValueError: CUDA graphs need every tensor argument on a CUDA device" in call.notes[0]


def test_clear_forgets_graphs_and_fallbacks():
    call = GraphedCall(affine, capture=fake_capture())
    call(torch.ones(2), bias=torch.zeros(2))
    call.clear()
    assert not call.graphs and not call.eager


# ---- the Wan switch
def test_the_switch_is_listed_and_off_on_the_cpu():
    assert "cuda_graph" in SWITCHES and Speedups().cuda_graph and not Speedups.off().cuda_graph
    assert not Speedups.for_device(torch.device("cpu")).cuda_graph
    assert not Speedups.for_device(torch.device("cuda"), long_lived=False).cuda_graph  # one-job processes
    model, _ = ModelCache(demo=True, device="cpu", speedups=Speedups.off()).get("wan")
    assert "cuda_graph" in wan_speedups.SWITCHES and wan_speedups.SWITCHES["cuda_graph"](model) is False
    assert "cuda_graph" not in apply(model, Speedups())
    assert wan_speedups.graph_blocker(model) == "switched off"
    model.cuda_graph = True
    assert wan_speedups.graph_blocker(model) == "not on a CUDA device"
    assert wan_speedups.graphed_transformer(model) is model.pipe.transformer


class FakeCudaModel:
    """What graph_blocker reads, on a pretend CUDA device."""

    def __init__(self, transformer):
        self.pipe = type("Pipe", (), {"transformer": transformer})()
        self.device = torch.device("cuda")
        self.cuda_graph = True
        self.step_cache = None


def test_the_switch_is_off_under_a_step_cache_and_context_parallelism():
    model = FakeCudaModel(torch.nn.Linear(2, 2))
    assert wan_speedups.graph_blocker(model) is None
    model.step_cache = 0.1
    assert wan_speedups.graph_blocker(model) == "a step cache is on"
    model.step_cache = None
    model.pipe.transformer.is_cache_enabled = True  # diffusers' CacheMixin, enabled directly
    assert wan_speedups.graph_blocker(model) == "a step cache is on"
    model.pipe.transformer.is_cache_enabled = False
    model.pipe.transformer._parallel_config = object()
    assert wan_speedups.graph_blocker(model).startswith("context parallelism")


@pytest.fixture
def graphed_demo_wan(monkeypatch):
    """The demo Wan model with its transformer call graphed by the fake capturer (the CPU stands
    in for the GPU: graph_blocker says yes)."""
    log: list[str] = []
    monkeypatch.setattr(graphs, "cuda_capture", fake_capture(log))
    monkeypatch.setattr(wan_speedups, "graph_blocker", lambda model: None if model.cuda_graph else "switched off")
    model, _ = ModelCache(demo=True, device="cpu", speedups=Speedups.off()).get("wan")
    return model, log


def wan_req(size: int, steps: int = 3) -> GenerationRequest:
    return GenerationRequest(prompt="a lighthouse", negative_prompt="blurry", width=size, height=size, steps=steps,
                             guidance=5.0, seeds=[7], flow_shift=3.0)


def test_denoise_batched_cfg_through_graphs_equals_eager(graphed_demo_wan):
    model, log = graphed_demo_wan
    model.batch_cfg = True
    eager = np.asarray(model.generate(wan_req(32)).images[0])
    model.cuda_graph = True
    graphed = [np.asarray(model.generate(wan_req(32)).images[0]) for _ in range(2)]
    assert all(np.array_equal(g, eager) for g in graphed)
    assert log == ["capture"] and model.graphs.stats["replays"] == 2 * 3 - 1  # the first call checks the capture
    np.asarray(model.generate(wan_req(48, steps=2)).images[0])  # another size: its own graph
    assert log == ["capture"] * 2 and len(model.graphs.graphs) == 2 and not model.__dict__.get("speedup_notes")
    model.to(torch.device("cpu"))  # weights moved: the graphs hold stale addresses and go
    assert "graphs" not in model.__dict__


def test_videos_are_not_graphed(graphed_demo_wan):
    model, log = graphed_demo_wan
    model.batch_cfg = model.cuda_graph = True
    model.generate(GenerationRequest(prompt="a lighthouse", negative_prompt="blurry", width=32, height=32, steps=2,
                                     guidance=5.0, seeds=[7], frames=5, flow_shift=3.0))
    assert log == [] and "graphs" not in model.__dict__
