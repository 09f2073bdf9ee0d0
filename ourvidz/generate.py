"""`ourvidz generate`: from a request (command-line arguments) to plans, and plans to files.

The work of one job is ourvidz.job.run_job, shared with batch and the queue worker; this module
only turns the command line (or a replayed sidecar, or a prompt file) into plans.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

from ourvidz import families, layout
from ourvidz.errors import BadInput
from ourvidz.overrides import FIELDS as OVERRIDABLE
from ourvidz.overrides import Overrides
from ourvidz.plan import JobPlan, one_gpu_reason, plan_job


@dataclass
class Request:
    job_type: str | None = None
    prompt: str | None = None
    prompt_file: Path | None = None
    from_metadata: Path | None = None
    out_dir: Path | None = None
    overrides: Overrides = field(default_factory=Overrides)
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
    weighting: bool = True  # prompt weighting syntax (sdxl); False: the prompt is literal text


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
    stored = Overrides(**{k: plan["preset"][k] for k in OVERRIDABLE})
    return Request(
        job_type=request.job_type or plan["job_type"],
        prompt=request.prompt or plan["prompt"],
        out_dir=request.out_dir,
        overrides=stored.merged(request.overrides),
        seed=request.seed if request.seed is not None else plan["seed"],
        negative=request.negative or plan["negative_prompt"]["user_text"],
        auto_negative=plan["auto_negative"] if request.auto_negative else False,
        enhance=request.enhance if request.enhance is not None else plan["enhance"],
        presets_dir=request.presets_dir, models=request.models,
        demo=request.demo or meta.get("demo", False), device=request.device,
        weighting=plan.get("weighting", True) if request.weighting else False,
    )


def make_plans(request: Request) -> list[JobPlan]:
    return [plan for _, plan in make_numbered_plans(request)[0]]


def make_numbered_plans(request: Request, keep_going: bool = False):
    """([(prompt number, plan)], [(prompt number, error)]): with keep_going, a prompt file's prompt
    that cannot be planned is reported and the others go on; otherwise the first problem is raised."""
    from ourvidz.errors import OurvidzError, reworded
    from ourvidz.families.weights import token_counter

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
    from ourvidz.families.weights import resolve_sources

    counter = token_counter(request.models, request.demo)
    family = load_preset(request.job_type, request.presets_dir).family
    source = resolve_sources(request.models, request.demo).get(family)
    demo = source is not None and source.is_demo and not request.random_weights
    if request.step_cache is not None and not families.get(family).step_cache:
        can = ", ".join(n for n, f in families.FAMILIES.items() if f.step_cache)
        raise BadInput(f"--step-cache (first-block cache) works on the {can} family only")
    plans, failures = [], []
    prompts_dir = request.out_dir or layout.prompt_file_dir(request.job_type)
    for i, prompt in enumerate(prompts):
        out_dir = request.out_dir
        if len(prompts) > 1:
            # One folder for the file's prompts: default folders differ only by time and seed, and
            # with --seed every prompt would land in the same one.
            out_dir = layout.prompt_dir(prompts_dir, i)
        try:
            plans.append((i + 1, plan_job(
                request.job_type, prompt, overrides=request.overrides, seed=request.seed,
                negative=request.negative, auto_negative=request.auto_negative, enhance=request.enhance,
                out_dir=out_dir, presets_dir=request.presets_dir, counter=counter, demo=demo,
                weighting=request.weighting,
            )))
        except OurvidzError as exc:
            if not request.prompt_file:
                raise
            named = reworded(exc, f"{request.prompt_file} prompt {i + 1}: {exc}")
            if not keep_going:
                raise named from None
            failures.append((i + 1, named))
    return plans, failures


def describe_models(request: Request, plan: JobPlan) -> str:
    from ourvidz.families.weights import resolve_sources

    sources = resolve_sources(request.models, request.demo)
    needed = [plan.preset.family] + ([families.ENHANCER] if plan.enhance else [])
    return "; ".join(f"{f}: {sources[f].describe()}" if f in sources else f"{f}: not configured" for f in needed)


def cache_for(request: Request, jobs: int = 1, device: str | None = None):
    """One cache for the request's jobs; compiling is for runs of several jobs (or --compile).
    `device` (a rank's GPU under --gpus) replaces the request's."""
    from ourvidz.families.base import resolve_device
    from ourvidz.model_cache import ModelCache
    from ourvidz.speedups import Speedups

    device = device or request.device
    compile_ = request.compile if request.compile is not None else jobs > 1
    speedups = Speedups.for_device(resolve_device(device), long_lived=compile_)
    return ModelCache(models_file=None if request.random_weights else request.models, demo=request.demo,
                      device=device, random_weights=request.random_weights, step_cache=request.step_cache,
                      speedups=speedups)


def run(request: Request, numbered: list[tuple[int, JobPlan]], gpus: int = 1, quiet: bool = False,
        keep_going: bool = False) -> tuple[list, list]:
    """The plans (numbered as the prompts), models loaded once, each job on `gpus` GPUs of this host
    (ourvidz.ranks); each job's progress on stderr and, unless quiet (--json), its result on stdout
    as it ends. keep_going (a prompt file): a job that fails is reported and the others go on.
    (results, [(prompt number, error)]) of rank 0."""
    reasons = [one_gpu_reason(plan.preset, gpus) for _, plan in numbered]
    if gpus > 1 and numbered and all(reasons):  # no job would use the other GPUs: start no ranks
        for (_, plan), reason in zip(numbered, reasons):
            plan.note(reason)
        gpus = 1
    _head_start(request, [plan for _, plan in numbered], gpus)
    from ourvidz.ranks import on_ranks  # torch, diffusers: most of a cold start's seconds
    why = "--demo" if request.demo else "no models file"
    return on_ranks(gpus, _run_plans, functools.partial(cache_for, request, len(numbered)), numbered, why, quiet,
                    keep_going, str(request.prompt_file), device=request.device)


def _head_start(request: Request, plans: list[JobPlan], gpus: int) -> None:
    """While the libraries import: the weights read ahead into the page cache, and (one GPU, this
    process) CUDA started. See ourvidz.warmup."""
    from ourvidz import warmup
    from ourvidz.families.weights import resolve_sources

    if request.demo or not plans:
        return
    needed = sorted({p.preset.family for p in plans} | ({families.ENHANCER} if any(p.enhance for p in plans) else set()))
    try:
        if not request.random_weights:
            warmup.prefetch(warmup.weight_files(resolve_sources(request.models, False), needed))
    except Exception:  # noqa: BLE001 - a bad models file is reported by the load, in its words
        pass
    if gpus == 1:
        warmup.start_cuda(request.device)


def _run_plans(runner, cache, numbered, why: str, quiet: bool, keep_going: bool, prompt_file: str):
    from rich.markup import escape

    from ourvidz.errors import DiskFull, Interrupted, OurvidzError, reworded
    from ourvidz.views import console, job_progress, print_result

    out, err = console(), console(stderr=True)
    if cache.random_weights:
        err.print("[bold yellow]random weights[/] (--random-weights: the full-size architectures with random "
                  "values, for speed tests; the outputs are noise)")
    elif cache.demo:
        err.print(f"[bold yellow]demo: random weights[/] ({why}: using the tiny built-in demo models; "
                  "see `ourvidz models`)")
    results, failures = [], []
    for n, plan in numbered:
        try:
            with job_progress(err, plan.job_type) as (on_step, on_phase):
                results.append(runner(plan, cache, on_step, on_phase))
        except OurvidzError as exc:
            if not keep_going or isinstance(exc, (DiskFull, Interrupted)):
                raise
            failures.append((n, reworded(exc, f"{prompt_file} prompt {n}: {exc}")))
            err.print(f"[red]failed:[/] {escape(str(failures[-1][1]))}", highlight=False, soft_wrap=True)
            continue
        if not quiet:
            print_result(out, results[-1])
    return results, failures
