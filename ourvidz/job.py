"""One job, start to finish: enhance (optional), generate, save, report.

Shared by generate, batch and the queue worker. Outputs are written as soon as they exist, each
with its sidecar; report.json comes last. A failure names what failed and keeps what was written.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from ourvidz import __version__
from ourvidz.errors import GenerationFailed, OurvidzError, OutOfMemory
from ourvidz.outputs import a1111_parameters, atomic_replace, save_mp4, save_png, to_json, atomic_write
from ourvidz.pipelines.base import GenerationRequest
from ourvidz.plan import JobPlan
from ourvidz.report import build_report, reset_peak_memory, versions
from ourvidz.safety import check_prompt

SAMPLER_NAMES = {"euler": "Euler", "unipc": "UniPC"}
DEMO_LABEL = "demo: random weights"


@dataclass
class JobResult:
    plan: JobPlan
    files: list[Path]
    report: dict[str, Any]


def _model_name(identity: dict[str, Any]) -> str:
    if identity.get("kind") == "demo" or "path" not in identity:
        return "ourvidz-demo (random weights)"
    return Path(identity["path"]).name


def run_job(plan: JobPlan, cache, on_step: Callable[[int, int], None] | None = None, parallel=None) -> JobResult:
    """`parallel` (an ourvidz.distributed.ParallelContext): this process is one rank of a job
    spread over several; every rank calls run_job, rank 0 alone enhances, saves and reports."""
    t_start = time.perf_counter()
    preset = plan.preset
    reset_peak_memory(cache.device)
    load: dict[str, float] = {}
    models: dict[str, Any] = {}
    prompt, enhancement = plan.prompt, None
    demo = cache.is_demo(preset.family) or (plan.enhance and cache.is_demo("qwen"))

    main = parallel is None or parallel.is_main  # multi-rank hook (ourvidz.distributed)
    if plan.enhance and main:
        enhancer, times = cache.get("qwen")
        load.update({f"qwen {k}": v for k, v in times.items()})
        models["qwen"] = enhancer.identity
        result = enhancer.enhance(plan.prompt, seed=plan.seed, settings=plan.enhancement_settings())
        enhancement = result.to_dict()
        prompt = result.text
        check_prompt(prompt, what="enhanced prompt")
    if parallel is not None:  # multi-rank hook: every rank generates from rank 0's prompt
        from ourvidz.distributed import share_from_main

        prompt, enhancement = share_from_main(parallel, (prompt, enhancement))

    pipeline, times = cache.get(preset.family)
    load.update({f"{preset.family} {k}": v for k, v in times.items()})
    models[preset.family] = pipeline.identity
    if enhancement is not None and preset.family == "sdxl":
        # An enhanced prompt is often past CLIP's window; the pipeline truncates it. Record by how much.
        from ourvidz.clip_tokens import CLIP_WINDOW, best_counter

        tokens = best_counter(getattr(pipeline, "tokenizer", None)).count(prompt)
        enhancement |= {"clip_tokens": tokens, "clip_window": CLIP_WINDOW, "clip_truncated": tokens > CLIP_WINDOW}
    request = GenerationRequest(
        prompt=prompt, negative_prompt=plan.negative.text, width=preset.width, height=preset.height,
        steps=preset.steps, guidance=preset.guidance, seeds=plan.seeds, frames=preset.frames,
        flow_shift=preset.flow_shift,
    )
    try:
        if parallel is None:
            output = pipeline.generate(request, on_step)
        else:  # multi-rank hook
            output = pipeline.generate(request, on_step if main else None, parallel=parallel)
    except torch.OutOfMemoryError:
        cache._free_memory()
        raise OutOfMemory(
            f"out of GPU memory generating {plan.job_type} at {preset.width}x{preset.height}"
            + (f" x{preset.num_images} images" if preset.num_images > 1 else "")
            + (f", {preset.frames} frames" if preset.frames > 1 else "")
            + "; try fewer --num-images, fewer --frames, a smaller size, or free the GPU") from None
    except (OurvidzError, KeyboardInterrupt):
        raise
    except Exception as exc:
        from ourvidz.model_cache import one_line

        raise GenerationFailed(f"{plan.job_type} failed while generating: {one_line(exc)}") from None

    if not main:  # multi-rank hook: rank 0 writes the files and the report
        return JobResult(plan=plan, files=[], report={})
    phases = dict(output.phases)
    models[preset.family] = {**pipeline.identity, "speedups": getattr(pipeline, "speedups_applied", []),
                             "lossy_step_cache": getattr(pipeline, "step_cache", None)}
    t_save = time.perf_counter()
    sidecar = {
        "ourvidz": __version__,
        "demo": demo,
        "label": DEMO_LABEL if demo else "",
        "plan": plan.to_dict(),
        "prompt_used": prompt,
        "enhancement": enhancement,
        "models": models,
        "device": str(cache.device),
        "versions": versions(),
        "timings": {"load": load, **phases},
    }
    sampler = SAMPLER_NAMES[preset.scheduler] + (f" (flow shift {preset.flow_shift:g})" if preset.flow_shift else "")
    files: list[Path] = []
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    if preset.is_video:
        name = plan.files[0]
        meta = sidecar | {"file": name, "seed": plan.seed}
        params = a1111_parameters(prompt, plan.negative.text, preset.steps, sampler, preset.guidance, plan.seed,
                                  preset.width, preset.height, _model_name(models[preset.family]),
                                  {"Frames": preset.frames, "FPS": preset.fps, "Job": plan.job_type}
                                  | ({"Note": DEMO_LABEL} if demo else {}))
        files.append(save_mp4(plan.out_dir / name, output.frames, preset.fps, comment=params))
        files.append(atomic_write((plan.out_dir / name).with_suffix(".json"), to_json(meta)))
    else:
        def save_one(name: str, seed: int, image) -> list[Path]:
            meta = sidecar | {"file": name, "seed": seed}
            params = a1111_parameters(prompt, plan.negative.text, preset.steps, sampler, preset.guidance, seed,
                                      preset.width, preset.height, _model_name(models[preset.family]),
                                      {"Job": plan.job_type} | ({"Note": DEMO_LABEL} if demo else {}))
            return [save_png(plan.out_dir / name, image, params, meta),
                    atomic_write((plan.out_dir / name).with_suffix(".json"), to_json(meta))]

        # PNG compression is CPU work that releases the GIL: six 1024x1024 images take ~1.6 s one
        # after another on the H100 host, so they are encoded side by side.
        with ThreadPoolExecutor(max_workers=min(len(plan.files), os.cpu_count() or 1)) as pool:
            for pair in pool.map(save_one, plan.files, plan.seeds, output.images):
                files += pair
    phases["save"] = time.perf_counter() - t_save

    total = time.perf_counter() - t_start
    report = build_report(plan, device=cache.device, demo=demo, load=load, phases=phases, total=total,
                          files=[p.name for p in files], enhancement=enhancement, models=models)
    files.append(atomic_replace(plan.out_dir / "report.json", to_json(report)))
    return JobResult(plan=plan, files=files, report=report)
