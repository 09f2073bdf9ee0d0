"""A module call replayed from CUDA graphs, one graph per input signature (any family can use it).

Where a call is launch-bound (Wan's one-frame batch-2 transformer call: ~30 ms of launches for
~11 ms of arithmetic), capturing it once with torch.cuda.graph and replaying it per step removes
the launches and keeps the kernels. Unlike torch.compile(mode="reduce-overhead") this needs no
full-graph compile: whatever the call runs (the regional-compiled blocks included, already
warmed up) is captured as it is.

GraphedCall(fn)(*args, **kwargs):
- signature: the pytree structure, every tensor's shape, strides, dtype and device, every other
  argument's value, grad/inference mode and the caller's key_extra() (what else changes the
  captured work: the speed-ups applied, the weights' storage);
- a new signature: capture (warm-up calls on a side stream first, as PyTorch's docs require, then
  the capture into the graph's own private memory pool), then the first replay is compared bit for
  bit with an eager call on the same inputs. A capture that raises or a replay that differs in
  any bit sends that signature to eager for good, with one line in `notes`;
- at most max_graphs graphs are kept (least recently used out: their memory pools go with them);
- outputs are cloned out of the graph's static buffers, so a caller may keep them.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any, Callable

import torch
from torch.utils._pytree import tree_flatten, tree_map, tree_unflatten

MAX_GRAPHS = 4  # per GraphedCall: jobs of many sizes must not pile up graph memory pools
MAX_EAGER = 16  # signatures remembered as not graphable
MAX_NOTES = 8
WARMUP_CALLS = 3  # eager calls on a side stream before capturing (kernel autotuning, lazy init)


def signature(args: tuple, kwargs: dict, extra: tuple = ()) -> tuple:
    leaves, spec = tree_flatten((args, kwargs))
    parts: list[Any] = [repr(spec), torch.is_grad_enabled(), torch.is_inference_mode_enabled(), *extra]
    for x in leaves:
        if isinstance(x, torch.Tensor):
            parts.append(("tensor", tuple(x.shape), tuple(x.stride()), x.dtype, str(x.device), x.requires_grad))
        else:
            try:
                hash(x)
                parts.append(("value", x))
            except TypeError:
                parts.append(("repr", repr(x)))
    return tuple(parts)


def difference(a, b) -> str | None:
    """None when a and b are bit-identical (tensors compared as bytes, NaNs included), else in words."""
    la, sa = tree_flatten(a)
    lb, sb = tree_flatten(b)
    if repr(sa) != repr(sb) or len(la) != len(lb):
        return "the outputs have another structure"
    for x, y in zip(la, lb):
        if not isinstance(x, torch.Tensor):
            if x != y:
                return f"output {x!r} against {y!r}"
            continue
        if x.shape != y.shape or x.dtype != y.dtype:
            return f"output {tuple(x.shape)} {x.dtype} against {tuple(y.shape)} {y.dtype}"
        if not torch.equal(x.reshape(-1).view(torch.uint8), y.reshape(-1).view(torch.uint8)):
            diff = (x.float() - y.float()).abs().max().item()
            return f"max abs diff {diff:.3g}"
    return None


class CudaGraph:
    """One captured call: static input buffers, the graph, its static outputs."""

    def __init__(self, graph, static_leaves: list, outputs):
        self.graph, self.static_leaves, self.outputs = graph, static_leaves, outputs

    def run(self, args: tuple, kwargs: dict, clone: bool = True):
        leaves, _ = tree_flatten((args, kwargs))
        for buf, x in zip(self.static_leaves, leaves):
            if isinstance(buf, torch.Tensor) and buf is not x:
                buf.copy_(x, non_blocking=True)
        self.graph.replay()
        return tree_map(lambda t: t.clone() if isinstance(t, torch.Tensor) else t, self.outputs) if clone \
            else self.outputs


def cuda_capture(fn: Callable, args: tuple, kwargs: dict, warmup: int = WARMUP_CALLS) -> CudaGraph:
    """fn captured on the inputs' GPU: static copies of the inputs, warm-up calls on a side stream,
    then the capture (a private memory pool; other threads' CUDA calls are not disturbed)."""
    leaves, spec = tree_flatten((args, kwargs))
    tensors = [x for x in leaves if isinstance(x, torch.Tensor)]
    if not tensors or any(t.device.type != "cuda" for t in tensors):
        raise ValueError("CUDA graphs need every tensor argument on a CUDA device")
    device = tensors[0].device
    static = [x.clone() if isinstance(x, torch.Tensor) else x for x in leaves]  # dense copies
    s_args, s_kwargs = tree_unflatten(static, spec)
    with torch.cuda.device(device):
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup):
                fn(*s_args, **s_kwargs)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            outputs = fn(*s_args, **s_kwargs)
    return CudaGraph(graph, static, outputs)


class GraphedCall:
    """fn(*args, **kwargs), replayed from CUDA graphs where they are exact (see the module doc)."""

    def __init__(self, fn: Callable, *, key_extra: Callable[[], tuple] = tuple, max_graphs: int = MAX_GRAPHS,
                 capture: Callable | None = None, warmup: int = WARMUP_CALLS, notes: list[str] | None = None,
                 name: str = "call"):
        self.fn, self.key_extra, self.max_graphs, self.warmup = fn, key_extra, max_graphs, warmup
        self.capture = capture or cuda_capture  # looked up now: tests substitute a fake
        self.name = name
        self.graphs: OrderedDict[tuple, Any] = OrderedDict()
        self.eager: OrderedDict[tuple, str] = OrderedDict()  # signature -> why it runs eagerly
        self.notes = notes if notes is not None else []  # one line per fallback (shared with the model's notes)
        self.stats = {"captures": 0, "replays": 0, "eager_calls": 0, "evicted": 0, "capture_s": 0.0}

    def __call__(self, *args, **kwargs):
        key = signature(args, kwargs, tuple(self.key_extra()))
        graph = self.graphs.get(key)
        if graph is not None:
            self.graphs.move_to_end(key)
            self.stats["replays"] += 1
            return graph.run(args, kwargs)
        if key in self.eager:
            self.eager.move_to_end(key)
            self.stats["eager_calls"] += 1
            return self.fn(*args, **kwargs)
        return self._first(key, args, kwargs)

    def _first(self, key: tuple, args: tuple, kwargs: dict):
        from ourvidz.errors import one_line

        t0 = time.perf_counter()
        try:
            graph = self.capture(self.fn, args, kwargs, warmup=self.warmup)
            out = graph.run(args, kwargs)
            reference = self.fn(*args, **kwargs)
            why = difference(out, reference)
        except Exception as exc:  # noqa: BLE001 - any capture failure: this signature runs eagerly
            graph, why = None, f"capture failed: {one_line(exc)}"
            reference = out = None
        self.stats["capture_s"] += time.perf_counter() - t0
        if why is not None:
            del graph
            self._to_eager(key, why)
            self.stats["eager_calls"] += 1
            return reference if reference is not None else self.fn(*args, **kwargs)
        self.stats["captures"] += 1
        self.graphs[key] = graph
        while len(self.graphs) > self.max_graphs:
            self.graphs.popitem(last=False)
            self.stats["evicted"] += 1
        return out

    def _to_eager(self, key: tuple, why: str) -> None:
        self.eager[key] = why
        while len(self.eager) > MAX_EAGER:
            self.eager.popitem(last=False)
        shapes = "; ".join("x".join(map(str, p[1])) for p in key if isinstance(p, tuple) and p[:1] == ("tensor",))
        self.notes.append(f"cuda_graph off for {self.name} ({shapes}), eager instead: {why}"[:300])
        del self.notes[:-MAX_NOTES]

    def clear(self) -> None:
        """Forget every graph (their memory pools are freed): after the weights moved or changed."""
        self.graphs.clear()
        self.eager.clear()
