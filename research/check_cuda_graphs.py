#!/usr/bin/env python3
"""GPU self-check of the cuda_graph speed-up (issue #12): image_fast's denoise, eager with the
compiled blocks against replayed from CUDA graphs, on the full-size random Wan 1.3B.

    PYTHONPATH=/tmp/site:$PWD python3 research/check_cuda_graphs.py          # a CUDA GPU, < 90 s on an H200
    PYTHONPATH=/tmp/site:$PWD python3 research/check_cuda_graphs.py --lru    # + 6 more sizes: graph memory stays bounded
    python3 research/check_cuda_graphs.py --tiny                              # CPU smoke test, demo models

Needs torch, transformers and diffusers only (and this checkout). Builds the model with the
random builder (ourvidz/families/wan/build.py), applies the default speed-ups (ourvidz.speedups:
regional compile, cuDNN attention, cuda_graph), runs the job's prompt encoding, then the denoise
of image_fast (its preset: size, steps, guidance, flow shift) three times per mode: a warm-up (it
compiles, and in graph mode captures), a run timed as a whole, and a run with a synchronize after
every step (ms/step: the median of 10 steps after the first 5). Prints one JSON line:
ms/step and denoise seconds per mode, capture seconds, the max abs diff of the final latents (0:
the graph replays the same kernels), peak GPU memory per mode and any fallback note. On the CPU
(--tiny) graphs are skipped (the switch is off there) and the line says so.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

T0 = time.perf_counter()
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402


def preset(job: str) -> dict:
    import yaml

    return yaml.safe_load((REPO / "presets" / f"{job}.yaml").read_text())


def build(tiny: bool):
    from ourvidz.speedups import Speedups, apply

    if tiny:
        from ourvidz.model_cache import ModelCache

        torch.set_num_threads(1)
        model, _ = ModelCache(demo=True, device="cpu", speedups=Speedups.off()).get("wan")
    else:
        from ourvidz.families.wan.build import RandomWan

        model = RandomWan.load(None, torch.device("cuda"), torch.bfloat16)
    applied = apply(model, Speedups())
    return model, applied


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def denoise(model, req, pe, npe, per_step: bool):
    """(latents, seconds, per-step seconds)."""
    dev, marks = model.device, []

    def on_step(i, n):
        if per_step:
            sync(dev)
            marks.append(time.perf_counter())

    sync(dev)
    t0 = time.perf_counter()
    with torch.inference_mode():
        latents = model.denoise_batched_cfg(req, pe, npe, on_step)
    sync(dev)
    seconds = time.perf_counter() - t0
    steps = [b - a for a, b in zip([t0] + marks, marks)]
    return latents, seconds, steps


def mode(model, req, pe, npe, graphed: bool) -> dict:
    dev = model.device
    model.cuda_graph = graphed
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    denoise(model, req, pe, npe, per_step=False)  # warm-up: compiles (eager) or captures (graphed)
    first = time.perf_counter() - t0
    latents, seconds, _ = denoise(model, req, pe, npe, per_step=False)
    _, _, steps = denoise(model, req, pe, npe, per_step=True)
    window = steps[5:15] if len(steps) >= 15 else steps[1:] or steps
    out = {"ms_per_step": 1e3 * statistics.median(window), "denoise_s": seconds, "first_run_s": first,
           "peak_gb": torch.cuda.max_memory_allocated(dev) / 1e9 if dev.type == "cuda" else None}
    return out, latents


def lru_check(model, pe, npe, base) -> list[dict]:
    """Six more sizes, 2 steps each: memory after each (at most MAX_GRAPHS graphs are kept)."""
    from ourvidz.families.base import GenerationRequest

    rows = []
    for k in range(6):
        req = GenerationRequest(**{**base, "width": 256 + 32 * k, "height": 256, "steps": 2})
        with torch.inference_mode():
            model.denoise_batched_cfg(req, pe, npe)
        sync(model.device)
        rows.append({"size": f"{req.width}x{req.height}", "allocated_gb": torch.cuda.memory_allocated() / 1e9,
                     "reserved_gb": torch.cuda.memory_reserved() / 1e9, "graphs": len(model.graphs.graphs)})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="demo-size models on the CPU (a smoke test; no graphs)")
    ap.add_argument("--job", default="image_fast")
    ap.add_argument("--lru", action="store_true", help="also run 6 more sizes (each compiles: ~10 s more apiece)")
    args = ap.parse_args()
    if not args.tiny and not torch.cuda.is_available():
        print(json.dumps({"error": "no CUDA GPU here; use --tiny for the CPU smoke test"}))
        return 2
    from ourvidz.families.base import GenerationRequest
    from ourvidz.families.wan.speedups import graph_blocker

    p = preset(args.job)
    size = {"width": 64, "height": 48} if args.tiny else {"width": p["width"], "height": p["height"]}
    base = dict(prompt="a lighthouse on a cliff in a storm at night", negative_prompt="blurry, low quality",
                steps=p["steps"], guidance=p["guidance"], seeds=[1234], frames=1, flow_shift=p["flow_shift"], **size)
    req = GenerationRequest(**base)
    t_build = time.perf_counter()
    model, applied = build(args.tiny)
    build_s = time.perf_counter() - t_build
    model.set_flow_shift(req.flow_shift)
    with torch.inference_mode():
        pe, npe = model.encode(req)
    eager, lat_eager = mode(model, req, pe, npe, graphed=False)
    graphed, lat_graphed = mode(model, req, pe, npe, graphed=True)
    model.cuda_graph = True
    graphs = model.__dict__.get("graphs")
    result = {
        "device": torch.cuda.get_device_name() if model.device.type == "cuda" else "cpu",
        "torch": torch.__version__, "job": args.job, "size": f"{req.width}x{req.height}", "steps": req.steps,
        "speedups": applied, "graphs_skipped": graph_blocker(model), "build_s": build_s,
        "eager": eager, "graphed": graphed,
        "speedup_per_step": eager["ms_per_step"] / graphed["ms_per_step"],
        "capture_s": graphs.stats["capture_s"] if graphs else None,
        "graph_stats": {k: v for k, v in graphs.stats.items() if k != "capture_s"} if graphs else None,
        "max_abs_diff_latents": (lat_eager.float() - lat_graphed.float()).abs().max().item(),
        "notes": model.__dict__.get("speedup_notes", []),
    }
    if args.lru and graphs is not None:
        result["lru"] = lru_check(model, pe, npe, base)
    result["total_s"] = time.perf_counter() - T0
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
