"""One job, start to finish: enhance (optional), generate, save, report.

Shared by generate, batch and the queue worker. Outputs are written as soon as they exist, each
with its sidecar; report.json comes last. A failure names what failed and keeps what was written.
With defer_tail, run_job returns once the job is generated and hands back the rest (the job's tail:
media, sidecars, report) as PendingJob.finish(), which batch and the worker run in a background
thread while the next job generates (ourvidz.tails).
"""

from __future__ import annotations

import contextvars
import functools
import os
import time
from contextlib import nullcontext
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from ourvidz import __version__, families, layout
from ourvidz.errors import GenerationFailed, OurvidzError, OutOfMemory, one_line
from ourvidz.families.base import GenerationOutput, GenerationRequest
from ourvidz.outputs import Mp4Stream, a1111_parameters, atomic_replace, atomic_write, save_png, to_json
from ourvidz.plan import JobPlan
from ourvidz.progress import PhaseListener, phase, reporting, within
from ourvidz.report import build_report, peak_memory_gb, process_age_s, reset_peak_memory, versions
from ourvidz.safety import check_prompt

DEMO_LABEL = "demo: random weights"


@dataclass
class JobResult:
    plan: JobPlan
    files: list[Path]
    report: dict[str, Any]


@dataclass
class PendingJob:
    """A generated job whose files are not written yet. finish() writes them, their sidecars and
    report.json (the job's tail) and returns the JobResult, in this thread or another; its phases
    still go to run_job's on_phase. overlap, if given, is asked at the end for the seconds the tail
    ran beside the next job, which the report records (tail_overlapped, tail_concurrent_seconds)."""

    plan: JobPlan
    _tail: Callable[..., JobResult]

    def finish(self, overlap: Callable[[], float] | None = None) -> JobResult:
        return self._tail(overlap=overlap)


def run_job(plan: JobPlan, cache, on_step: Callable[[int, int], None] | None = None,
            on_phase: PhaseListener | None = None, parallel=None, defer_tail: bool = False) -> JobResult | PendingJob:
    """on_step sees the denoising steps; on_phase every other phase (loading with bytes, hashing,
    enhancement, prompt encoding, VAE decode, MP4 encoding, saving): see ourvidz.progress.
    `parallel` (an ourvidz.distributed.ParallelContext) spreads the job over the ranks of one
    host: every rank runs this with the same plan; rank 0 alone enhances and writes the files.
    defer_tail: a PendingJob once generated, its files written by its finish() (other ranks: none)."""
    with reporting(on_phase) if on_phase is not None else nullcontext():
        pending = _run_job(plan, cache, on_step, parallel)
        return pending if defer_tail else pending.finish()


def _run_job(plan: JobPlan, cache, on_step, parallel) -> PendingJob:
    t_start = time.perf_counter()
    process_age = process_age_s()  # what the process did before this job: imports, CUDA start, planning
    preset = plan.preset
    reset_peak_memory(cache.device)
    load: dict[str, float] = {}
    models: dict[str, Any] = {}
    demo = cache.is_demo(preset.family) or (plan.enhance and cache.is_demo(families.ENHANCER))

    main = parallel is None or parallel.is_main
    prompt, enhancement = plan.prompt, None
    if plan.enhance and main:
        prompt, enhancement = _enhance(plan, cache, load, models)
    if parallel is not None:  # every rank generates from rank 0's prompt
        from ourvidz.distributed import share_from_main

        prompt, enhancement = share_from_main(parallel, (prompt, enhancement))

    pipeline, times = cache.get(preset.family)
    load.update({f"{preset.family} {k}": v for k, v in times.items()})
    models[preset.family] = pipeline.identity
    clip_window = families.get(preset.family).clip_window
    if enhancement is not None and clip_window:
        # An enhanced prompt is often past CLIP's window; the pipeline truncates it. Record by how much.
        from ourvidz.clip_tokens import best_counter

        tokens = best_counter(getattr(pipeline, "tokenizer", None)).count(prompt)
        enhancement |= {"clip_tokens": tokens, "clip_window": clip_window, "clip_truncated": tokens > clip_window}
    # A video's MP4 is encoded while the VAE decodes it (rank 0): see outputs.Mp4Stream. The tail
    # (_finish) closes it; a failed generation drops it, leaving no half-made MP4 behind.
    stream = _video_stream(plan, prompt, pipeline.identity, demo) if preset.is_video and main else None
    try:
        with within(preset.family):
            output = _generate(plan, prompt, pipeline, cache, on_step if main else None, parallel,
                               on_frames=stream.add if stream is not None else None)
    except BaseException:
        if stream is not None:
            stream.abort()
        raise
    if not main:  # rank 0 writes the files and the report
        return PendingJob(plan, lambda overlap=None: JobResult(plan=plan, files=[], report={}))
    phases = dict(output.phases)
    models[preset.family] = {**pipeline.identity, "speedups": getattr(pipeline, "speedups_applied", []),
                             "lossy_step_cache": getattr(pipeline, "step_cache", None)}
    if getattr(pipeline, "speedup_notes", None):  # e.g. a CUDA graph that fell back to eager, and why
        models[preset.family]["speedup_notes"] = list(pipeline.speedup_notes)
    peak = peak_memory_gb(cache.device)  # now: the next job resets it, maybe before this job's tail runs
    context = contextvars.copy_context()  # the phase listener, for a tail run in another thread
    return PendingJob(plan, functools.partial(context.run, _finish, plan, cache, output, prompt, enhancement, models,
                                              load, phases, demo, t_start, peak, stream, process_age))


def _finish(plan: JobPlan, cache, output: GenerationOutput, prompt: str, enhancement, models: dict, load: dict,
            phases: dict, demo: bool, t_start: float, peak: float | None, stream: Mp4Stream | None = None,
            process_age: float | None = None, overlap: Callable[[], float] | None = None) -> JobResult:
    """The job's tail: its media and sidecars, then report.json."""
    try:
        return _write_tail(plan, cache, output, prompt, enhancement, models, load, phases, demo, t_start, peak, stream,
                           process_age, overlap)
    finally:
        if stream is not None:
            stream.abort()  # nothing once it was closed; a tail that failed first leaves no partial MP4


def _write_tail(plan: JobPlan, cache, output: GenerationOutput, prompt: str, enhancement, models: dict, load: dict,
                phases: dict, demo: bool, t_start: float, peak: float | None, stream: Mp4Stream | None,
                process_age: float | None, overlap: Callable[[], float] | None) -> JobResult:
    preset = plan.preset
    t_save = time.perf_counter()
    sidecar = {
        "ourvidz": __version__,
        "demo": demo,
        "label": DEMO_LABEL if demo else "",
        "plan": plan.to_dict(),
        "prompt_used": prompt,
        "text_encoding": output.text_encoding,  # per encoder: tokens, window, chunks, truncation, weights
        "enhancement": enhancement,
        "models": models,
        "device": str(cache.device),
        "versions": versions(),
        "timings": {"load": load, **phases},
    }
    files = _save(plan, output, prompt, sidecar, models[preset.family], demo, stream)
    phases["save"] = time.perf_counter() - t_save
    if stream is not None:  # H.264 seconds, most of them spent during the VAE decode
        phases["encode_mp4"] = stream.encode_seconds

    total = time.perf_counter() - t_start
    report = build_report(plan, device=cache.device, demo=demo, load=load, phases=phases, total=total,
                          files=[p.name for p in files], enhancement=enhancement, models=models,
                          text_encoding=output.text_encoding, peak_gb=peak)
    report["process_age_at_start_s"] = process_age
    if overlap is not None:  # written in the background (ourvidz.tails): for how long beside the next job
        seconds = overlap()
        report |= {"tail_overlapped": seconds > 0, "tail_concurrent_seconds": seconds}
    files.append(atomic_replace(plan.out_dir / layout.REPORT, to_json(report)))
    return JobResult(plan=plan, files=files, report=report)


def _enhance(plan: JobPlan, cache, load: dict, models: dict) -> tuple[str, dict[str, Any]]:
    """The prompt rewritten by the enhancer (or the original after its fallback), and its record."""
    enhancer, times = cache.get(families.ENHANCER)
    load.update({f"{families.ENHANCER} {k}": v for k, v in times.items()})
    models[families.ENHANCER] = enhancer.identity
    with within(families.ENHANCER), phase("enhance prompt"):
        result = enhancer.enhance(plan.prompt, seed=plan.seed, settings=plan.enhancement_settings())
    check_prompt(result.text, what="enhanced prompt")
    return result.text, result.to_dict()


def _generate(plan: JobPlan, prompt: str, pipeline, cache, on_step, parallel=None,
              on_frames=None) -> GenerationOutput:
    """The family's pipeline on the plan; out of memory and library failures become one-line errors."""
    preset = plan.preset
    request = GenerationRequest(
        prompt=prompt, negative_prompt=plan.negative.text, width=preset.width, height=preset.height,
        steps=preset.steps, guidance=preset.guidance, seeds=plan.seeds, frames=preset.frames,
        flow_shift=preset.flow_shift, weighting=plan.weighting,
        image=plan.reference.fitted(preset.width, preset.height) if plan.reference else None,
        strength=plan.reference.denoise_strength if plan.reference else None, on_frames=on_frames,
    )
    try:
        if parallel is not None:
            return pipeline.generate(request, on_step, parallel=parallel)
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


def _a1111_text(plan: JobPlan, prompt: str, model: dict[str, Any], demo: bool, seed: int, extra: dict) -> str:
    """The A1111 "parameters" text of one output (PNG text chunk, MP4 comment)."""
    from ourvidz.families.weights import model_name

    preset = plan.preset
    # No colon or comma in the value: simple readers (sd-parsers) split fields on "," and ":".
    note = {"Note": "demo (random weights)"} if demo else {}
    return a1111_parameters(prompt, plan.negative.text, preset.steps, preset.sampler, preset.guidance, seed,
                            preset.width, preset.height, model_name(model), extra | {"Job": plan.job_type} | note,
                            model_hash=model.get("model_hash"), version=f"ourvidz {__version__}")


def _video_stream(plan: JobPlan, prompt: str, model: dict[str, Any], demo: bool) -> Mp4Stream:
    preset = plan.preset
    text = _a1111_text(plan, prompt, model, demo, plan.seed, {"Frames": preset.frames, "FPS": preset.fps})
    tags = {"title": f"ourvidz {plan.job_type}", "description": prompt}
    return Mp4Stream(plan.out_dir / plan.files[0], preset.fps, comment=text, metadata=tags)


def _save(plan: JobPlan, output: GenerationOutput, prompt: str, sidecar: dict, model: dict[str, Any],
          demo: bool, stream: Mp4Stream | None = None) -> list[Path]:
    """Each media file with its A1111 parameters and its JSON sidecar, atomically. A video's frames
    are already in `stream` when the pipeline streamed them while decoding."""
    preset = plan.preset
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    if preset.is_video:
        name = plan.files[0]
        meta = sidecar | {"file": name, "seed": plan.seed}
        stream = stream or _video_stream(plan, prompt, model, demo)
        if not stream.added:  # a pipeline that did not stream its frames
            stream.add(output.frames)
        with phase("encode mp4", total=len(output.frames), unit="frames") as ph:
            video = stream.close(on_frame=lambda done, total: ph.update(done))
        return [video, atomic_write(plan.out_dir / layout.sidecar(name), to_json(meta))]

    def save_one(name: str, seed: int, image) -> list[Path]:
        meta = sidecar | {"file": name, "seed": seed}
        return [save_png(plan.out_dir / name, image, _a1111_text(plan, prompt, model, demo, seed, {}), meta),
                atomic_write(plan.out_dir / layout.sidecar(name), to_json(meta))]

    # PNG compression is CPU work that releases the GIL: six 1024x1024 images take ~1.6 s one
    # after another on the H100 host, so they are encoded side by side.
    files: list[Path] = []
    with phase("save png", total=len(plan.files), unit="files") as ph, \
            ThreadPoolExecutor(max_workers=min(len(plan.files), os.cpu_count() or 1)) as pool:
        for pair in pool.map(save_one, plan.files, plan.seeds, output.images):
            files += pair
            ph.advance()
    return files
