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

from ourvidz import __version__, families, layout
from ourvidz.errors import GenerationFailed, OurvidzError, OutOfMemory, one_line
from ourvidz.families.base import GenerationOutput, GenerationRequest
from ourvidz.outputs import a1111_parameters, atomic_replace, atomic_write, save_mp4, save_png, to_json
from ourvidz.plan import JobPlan
from ourvidz.report import build_report, reset_peak_memory, versions
from ourvidz.safety import check_prompt

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


def run_job(plan: JobPlan, cache, on_step: Callable[[int, int], None] | None = None) -> JobResult:
    t_start = time.perf_counter()
    preset = plan.preset
    reset_peak_memory(cache.device)
    load: dict[str, float] = {}
    models: dict[str, Any] = {}
    demo = cache.is_demo(preset.family) or (plan.enhance and cache.is_demo(families.ENHANCER))

    prompt, enhancement = plan.prompt, None
    if plan.enhance:
        prompt, enhancement = _enhance(plan, cache, load, models)

    pipeline, times = cache.get(preset.family)
    load.update({f"{preset.family} {k}": v for k, v in times.items()})
    models[preset.family] = pipeline.identity
    clip_window = families.get(preset.family).clip_window
    if enhancement is not None and clip_window:
        # An enhanced prompt is often past CLIP's window; the pipeline truncates it. Record by how much.
        from ourvidz.clip_tokens import best_counter

        tokens = best_counter(getattr(pipeline, "tokenizer", None)).count(prompt)
        enhancement |= {"clip_tokens": tokens, "clip_window": clip_window, "clip_truncated": tokens > clip_window}
    output = _generate(plan, prompt, pipeline, cache, on_step)
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
    files = _save(plan, output, prompt, sidecar, _model_name(models[preset.family]), demo)
    phases["save"] = time.perf_counter() - t_save

    total = time.perf_counter() - t_start
    report = build_report(plan, device=cache.device, demo=demo, load=load, phases=phases, total=total,
                          files=[p.name for p in files], enhancement=enhancement, models=models)
    files.append(atomic_replace(plan.out_dir / layout.REPORT, to_json(report)))
    return JobResult(plan=plan, files=files, report=report)


def _enhance(plan: JobPlan, cache, load: dict, models: dict) -> tuple[str, dict[str, Any]]:
    """The prompt rewritten by the enhancer (or the original after its fallback), and its record."""
    enhancer, times = cache.get(families.ENHANCER)
    load.update({f"{families.ENHANCER} {k}": v for k, v in times.items()})
    models[families.ENHANCER] = enhancer.identity
    result = enhancer.enhance(plan.prompt, seed=plan.seed, settings=plan.enhancement_settings())
    check_prompt(result.text, what="enhanced prompt")
    return result.text, result.to_dict()


def _generate(plan: JobPlan, prompt: str, pipeline, cache, on_step) -> GenerationOutput:
    """The family's pipeline on the plan; out of memory and library failures become one-line errors."""
    preset = plan.preset
    request = GenerationRequest(
        prompt=prompt, negative_prompt=plan.negative.text, width=preset.width, height=preset.height,
        steps=preset.steps, guidance=preset.guidance, seeds=plan.seeds, frames=preset.frames,
        flow_shift=preset.flow_shift,
        image=plan.reference.fitted(preset.width, preset.height) if plan.reference else None,
        strength=plan.reference.denoise_strength if plan.reference else None,
    )
    try:
        return pipeline.generate(request, on_step)
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
        raise GenerationFailed(f"{plan.job_type} failed while generating: {one_line(exc)}") from None


def _save(plan: JobPlan, output: GenerationOutput, prompt: str, sidecar: dict, model_name: str,
          demo: bool) -> list[Path]:
    """Each media file with its A1111 parameters and its JSON sidecar, atomically."""
    preset = plan.preset
    note = {"Note": DEMO_LABEL} if demo else {}

    def params(seed: int, extra: dict) -> str:
        return a1111_parameters(prompt, plan.negative.text, preset.steps, preset.sampler, preset.guidance, seed,
                                preset.width, preset.height, model_name, extra | {"Job": plan.job_type} | note)

    plan.out_dir.mkdir(parents=True, exist_ok=True)
    if preset.is_video:
        name = plan.files[0]
        meta = sidecar | {"file": name, "seed": plan.seed}
        text = params(plan.seed, {"Frames": preset.frames, "FPS": preset.fps})
        return [save_mp4(plan.out_dir / name, output.frames, preset.fps, comment=text),
                atomic_write(plan.out_dir / layout.sidecar(name), to_json(meta))]

    def save_one(name: str, seed: int, image) -> list[Path]:
        meta = sidecar | {"file": name, "seed": seed}
        return [save_png(plan.out_dir / name, image, params(seed, {}), meta),
                atomic_write(plan.out_dir / layout.sidecar(name), to_json(meta))]

    # PNG compression is CPU work that releases the GIL: six 1024x1024 images take ~1.6 s one
    # after another on the H100 host, so they are encoded side by side.
    files: list[Path] = []
    with ThreadPoolExecutor(max_workers=min(len(plan.files), os.cpu_count() or 1)) as pool:
        for pair in pool.map(save_one, plan.files, plan.seeds, output.images):
            files += pair
    return files
