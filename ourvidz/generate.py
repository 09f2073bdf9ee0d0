"""`ourvidz generate`: from a request (command-line arguments) to plans, and plans to files.

The work of one job is ourvidz.job.run_job, shared with batch and the queue worker; this module
only turns the command line (or a replayed sidecar, or a prompt file) into plans.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ourvidz.errors import BadInput
from ourvidz.plan import JobPlan, plan_job
from ourvidz.presets import OVERRIDABLE


@dataclass
class Request:
    job_type: str | None = None
    prompt: str | None = None
    prompt_file: Path | None = None
    from_metadata: Path | None = None
    out_dir: Path | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    negative: str = ""
    auto_negative: bool = True
    enhance: bool | None = None
    presets_dir: Path | None = None
    models: Path | None = None
    demo: bool = False
    device: str | None = None
    random_weights: bool = False  # full-size architectures, random weights: speed tests only
    step_cache: float | None = None  # lossy opt-in: Wan first-block cache threshold
    compile: bool | None = None  # None: compile only when the request has several jobs


def read_prompt_file(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise BadInput(f"{path}: cannot read: {exc.strerror}") from None
    prompts = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not prompts:
        raise BadInput(f"{path}: no prompts in it (one prompt a line; # starts a comment)")
    return prompts


def replay_request(request: Request) -> Request:
    """The request that reproduces a recorded run; command-line values still win."""
    from ourvidz.outputs import read_metadata

    meta = read_metadata(request.from_metadata)
    plan = meta["plan"]
    stored = {k: plan["preset"][k] for k in OVERRIDABLE}
    return Request(
        job_type=request.job_type or plan["job_type"],
        prompt=request.prompt or plan["prompt"],
        out_dir=request.out_dir,
        overrides=stored | {k: v for k, v in request.overrides.items() if v is not None},
        seed=request.seed if request.seed is not None else plan["seed"],
        negative=request.negative or plan["negative_prompt"]["user_text"],
        auto_negative=plan["auto_negative"] if request.auto_negative else False,
        enhance=request.enhance if request.enhance is not None else plan["enhance"],
        presets_dir=request.presets_dir, models=request.models,
        demo=request.demo or meta.get("demo", False), device=request.device,
    )


def make_plans(request: Request) -> list[JobPlan]:
    from ourvidz.weights import token_counter

    if request.from_metadata:
        request = replay_request(request)
    if not request.job_type:
        raise BadInput("give a job type (see `ourvidz presets list`), or --from-metadata FILE")
    if request.prompt_file:
        if request.prompt:
            raise BadInput("give a prompt or --prompt-file, not both")
        prompts = read_prompt_file(request.prompt_file)
    else:
        prompts = [request.prompt or ""]
    from ourvidz.presets import load_preset
    from ourvidz.weights import resolve_sources

    counter = token_counter(request.models, request.demo)
    source = resolve_sources(request.models, request.demo).get(load_preset(request.job_type, request.presets_dir).family)
    demo = source is not None and source.is_demo and not request.random_weights
    if request.step_cache is not None and load_preset(request.job_type, request.presets_dir).family != "wan":
        raise BadInput("--step-cache (first-block cache) works on the wan family only")
    plans = []
    prompts_dir = Path("outputs") / f"{request.job_type}-{time.strftime('%Y%m%d-%H%M%S')}-prompts"
    for i, prompt in enumerate(prompts):
        out_dir = request.out_dir
        if len(prompts) > 1:
            # One folder for the file's prompts: default folders differ only by time and seed, and
            # with --seed every prompt would land in the same one.
            out_dir = (out_dir or prompts_dir) / f"{i:03d}"
        try:
            plans.append(plan_job(
                request.job_type, prompt, overrides=request.overrides, seed=request.seed,
                negative=request.negative, auto_negative=request.auto_negative, enhance=request.enhance,
                out_dir=out_dir, presets_dir=request.presets_dir, counter=counter, demo=demo,
            ))
        except BadInput as exc:
            if request.prompt_file:
                raise BadInput(f"{request.prompt_file} prompt {i + 1}: {exc}") from None
            raise
    return plans


def describe_models(request: Request, plan: JobPlan) -> str:
    from ourvidz.weights import resolve_sources

    sources = resolve_sources(request.models, request.demo)
    families = [plan.preset.family] + (["qwen"] if plan.enhance else [])
    return "; ".join(f"{f}: {sources[f].describe()}" if f in sources else f"{f}: not configured" for f in families)


def cache_for(request: Request, jobs: int = 1):
    """One cache for the request's jobs; compiling is for runs of several jobs (or --compile)."""
    from ourvidz.model_cache import ModelCache
    from ourvidz.pipelines.base import resolve_device
    from ourvidz.speedups import Speedups

    compile_ = request.compile if request.compile is not None else jobs > 1
    speedups = Speedups.for_device(resolve_device(request.device), long_lived=compile_)

    if request.random_weights:
        from ourvidz.bench.architectures import RANDOM_LOADERS

        return ModelCache(demo=True, device=request.device, loaders=RANDOM_LOADERS, step_cache=request.step_cache,
                          speedups=speedups)
    return ModelCache(models_file=request.models, demo=request.demo, device=request.device,
                      step_cache=request.step_cache, speedups=speedups)


def run_plan(plan: JobPlan, cache, on_step=None):
    from ourvidz.job import run_job

    return run_job(plan, cache, on_step)
