"""The command line: thin Typer commands that parse, call and print.

Shared argument groups are Annotated aliases composed into each command (as mflux does), so an
option means the same everywhere. Every command runs under `handled`, which turns an error a
user can act on into one line on stderr and its exit code.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from ourvidz import __version__, errors
from ourvidz.worker import keys

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
                  help="Prompt to images and videos on your own GPU: SDXL, Wan 2.1, Qwen 2.5 enhancement.")
presets_app = typer.Typer(no_args_is_help=True, help="List and show the job types.")
models_app = typer.Typer(help="Where each model family's weights are, and fetching them.")
app.add_typer(presets_app, name="presets")
app.add_typer(models_app, name="models")
# Piped output (scripts, logs) gets a wide console rather than rich's 80-column default.
out = Console(width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 140)
err = Console(stderr=True, width=None if sys.stderr.isatty() or os.environ.get("COLUMNS") else 140)


def _masked(message: object) -> str:
    """Every error line goes out with the secrets of the URLs this command was given masked (the
    --redis and --callback-url values, $OURVIDZ_REDIS), in any form, and every URL in it masked."""
    from ourvidz.redact import mask_text, url_secrets

    given = [a.split("=", 1)[1] if a.startswith("--") and "=" in a else a for a in sys.argv[1:]]
    found = [s for a in [*given, os.environ.get("OURVIDZ_REDIS", "")] if "://" in a for s in url_secrets(a)]
    from rich.markup import escape

    return escape(mask_text(str(message), found))  # a message may quote [brackets] of user input


def handled(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except errors.OurvidzError as exc:
            err.print(f"[bold red]error:[/] {_masked(exc)}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err.print("[bold red]interrupted[/]; finished outputs are kept")
            raise typer.Exit(errors.EXIT_INTERRUPTED) from None
        except (typer.Exit, typer.Abort):
            raise
        except Exception as exc:  # a bug: still one line unless asked for the traceback
            if os.environ.get("OURVIDZ_DEBUG"):
                raise
            err.print(f"[bold red]error:[/] unexpected {type(exc).__name__}: {_masked(exc)} "
                      "(set OURVIDZ_DEBUG=1 for the traceback)", highlight=False, soft_wrap=True)
            raise typer.Exit(errors.EXIT_BUG) from None

    return wrapper


# Shared argument groups.
PresetsDir = Annotated[Optional[Path], typer.Option("--presets-dir", help="Extra presets folder (before $OURVIDZ_PRESETS and the built-in ones).")]
ModelsFile = Annotated[Optional[Path], typer.Option("--models", help="Models file (else $OURVIDZ_MODELS, else ~/.config/ourvidz/models.yaml).")]
Demo = Annotated[bool, typer.Option("--demo", help="Use the built-in tiny random-weight demo models.")]
Device = Annotated[Optional[str], typer.Option("--device", help="cuda, cuda:N or cpu (default: cuda when present).")]
Steps = Annotated[Optional[int], typer.Option("--steps", help="Override the preset's denoising steps.")]
Guidance = Annotated[Optional[float], typer.Option("--guidance", help="Override the preset's guidance scale.")]
Width = Annotated[Optional[int], typer.Option("--width", help="Override the preset's width.")]
Height = Annotated[Optional[int], typer.Option("--height", help="Override the preset's height.")]
Frames = Annotated[Optional[int], typer.Option("--frames", help="Override the preset's frame count (wan: 4k+1).")]
NumImages = Annotated[Optional[int], typer.Option("--num-images", help="Override the preset's images per job (sdxl).")]
Seed = Annotated[Optional[int], typer.Option("--seed", help="Base seed; image i uses seed + i (default: random).")]
Negative = Annotated[str, typer.Option("--negative", help="Your own negative text; it comes first.")]
AutoNegative = Annotated[bool, typer.Option("--auto-negative/--no-auto-negative", help="Add the priority-based negative prompt.")]
Enhance = Annotated[Optional[bool], typer.Option("--enhance/--no-enhance", help="Qwen prompt enhancement (default: the preset's).")]


def overrides(steps, guidance, width, height, frames, num_images):
    from ourvidz.overrides import Overrides

    return Overrides(steps=steps, guidance=guidance, width=width, height=height, frames=frames, num_images=num_images)


def version_callback(value: bool):
    if value:
        out.print(f"ourvidz {__version__}")
        raise typer.Exit()


@app.callback()
def root(version: Annotated[bool, typer.Option("--version", callback=version_callback, is_eager=True, help="Print the version.")] = False):
    pass


@presets_app.command("list")
@handled
def presets_list(presets_dir: PresetsDir = None):
    """A table of the job types."""
    from ourvidz.presets import load_all
    from ourvidz.views import presets_table

    out.print(presets_table(load_all(presets_dir)))


@presets_app.command("show")
@handled
def presets_show(job_type: str, presets_dir: PresetsDir = None):
    """One job type's preset, every field."""
    from ourvidz.presets import load_preset
    from ourvidz.views import show_yaml

    out.print(show_yaml(load_preset(job_type, presets_dir).model_dump()))


@models_app.callback(invoke_without_command=True)
@handled
def models_status(ctx: typer.Context, models: ModelsFile = None):
    """Each family: where its weights are configured, whether they were found, their size."""
    if ctx.invoked_subcommand:
        return
    from ourvidz.views import models_table
    from ourvidz.families.weights import status

    out.print(models_table(status(models)))


@models_app.command("fetch")
@handled
def models_fetch(family: Annotated[str, typer.Argument(help="sdxl, wan or qwen")], models: ModelsFile = None):
    """Download a family's weights into the Hugging Face cache (for single-file SDXL: its configs)."""
    from ourvidz.families.weights import FAMILIES, fetch

    if family not in FAMILIES:
        raise errors.BadInput(f"unknown family '{family}'; known: {', '.join(FAMILIES)}")
    out.print(f"fetched {family} into {fetch(family, models)}")


@app.command()
@handled
def negative(job_type: str, prompt: Annotated[str, typer.Argument()] = "", negative: Negative = "",
             auto_negative: AutoNegative = True, presets_dir: PresetsDir = None, models: ModelsFile = None):
    """The negative prompt a job type would use, its token count and its categories."""
    from ourvidz.negative import build_negative
    from ourvidz.presets import load_preset
    from ourvidz.safety import check_prompt
    from ourvidz.views import negative_panel
    from ourvidz.families.weights import token_counter

    if prompt:
        check_prompt(prompt)
    preset = load_preset(job_type, presets_dir)
    neg = build_negative(preset.negative_strategy, negative, auto=auto_negative, counter=token_counter(models))
    out.print(negative_panel(neg))


@app.command()
@handled
def enhance(
    prompt: Annotated[str, typer.Argument(help="The prompt to rewrite.")],
    job_type: Annotated[Optional[str], typer.Option("--job-type", help="Use this job type's enhancement settings.")] = None,
    seed: Seed = None, presets_dir: PresetsDir = None, models: ModelsFile = None, demo: Demo = False, device: Device = None,
):
    """Rewrite a prompt with Qwen 2.5 as the 7b_enhanced job types do; print it and its timing."""
    from ourvidz.enhance import enhance_prompt
    from ourvidz.views import enhancement_panel

    run = enhance_prompt(prompt, job_type=job_type, seed=seed, presets_dir=presets_dir, models=models,
                         demo=demo, device=device)
    out.print(enhancement_panel(run))


@app.command()
@handled
def generate(
    job_type: Annotated[Optional[str], typer.Argument(help="Job type (see `ourvidz presets list`).")] = None,
    prompt: Annotated[Optional[str], typer.Argument(help="What to generate.")] = None,
    prompt_file: Annotated[Optional[Path], typer.Option("--prompt-file", help="One prompt a line; each line is one job.")] = None,
    from_metadata: Annotated[Optional[Path], typer.Option("--from-metadata", help="Replay a run from its PNG or JSON sidecar.")] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Output folder (default outputs/<job>-<time>-<seed>/).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the resolved plan; load no model.")] = False,
    steps: Steps = None, guidance: Guidance = None, width: Width = None, height: Height = None,
    frames: Frames = None, num_images: NumImages = None, seed: Seed = None,
    negative: Negative = "", auto_negative: AutoNegative = True, enhance: Enhance = None,
    presets_dir: PresetsDir = None, models: ModelsFile = None, demo: Demo = False, device: Device = None,
    step_cache: Annotated[Optional[float], typer.Option("--step-cache", help="LOSSY, off by default: Wan first-block cache threshold (e.g. 0.05); skips transformer work on steps that change little.")] = None,
    compile_: Annotated[Optional[bool], typer.Option("--compile/--no-compile", help="Compile the models (GPU; pays over several jobs). Default: on for a --prompt-file, off for one job.")] = None,
    random_weights: Annotated[bool, typer.Option("--random-weights", hidden=True, help="Full-size architectures with random weights (speed tests; outputs are noise).")] = False,
):
    """Generate images or a video for one job type."""
    from ourvidz import generate as gen
    from ourvidz.job import run_job
    from ourvidz.views import plan_panel, print_result, step_progress

    request = gen.Request(
        job_type=job_type, prompt=prompt, prompt_file=prompt_file, from_metadata=from_metadata,
        out_dir=out_dir, overrides=overrides(steps, guidance, width, height, frames, num_images),
        seed=seed, negative=negative, auto_negative=auto_negative, enhance=enhance,
        presets_dir=presets_dir, models=models, demo=demo, device=device, random_weights=random_weights,
        step_cache=step_cache, compile=compile_,
    )
    numbered, failures = gen.make_numbered_plans(request, keep_going=prompt_file is not None)
    plans = [plan for _, plan in numbered]
    planning_failures = len(failures)
    for _, exc in failures:  # a prompt file goes on past a prompt that fails; each is reported, then one error line
        err.print(f"[red]failed:[/] {_masked(exc)}", highlight=False, soft_wrap=True)
    if dry_run:
        for plan in plans:
            out.print(plan_panel(plan, gen.describe_models(request, plan)))
    elif plans:
        cache = gen.cache_for(request, jobs=len(plans))
        if cache.demo:
            why = "--demo" if demo else "no models file"
            err.print(f"[bold yellow]demo: random weights[/] ({why}: using the tiny built-in demo models; "
                      "see `ourvidz models`)")
    for n, plan in ([] if dry_run else numbered):
        try:
            with step_progress(out, plan.job_type) as on_step:
                result = run_job(plan, cache, on_step)
        except errors.OurvidzError as exc:
            if prompt_file is None or isinstance(exc, (errors.DiskFull, errors.Interrupted)):
                raise
            failures.append((n, errors.reworded(exc, f"{prompt_file} prompt {n}: {exc}")))
            err.print(f"[red]failed:[/] {_masked(failures[-1][1])}", highlight=False, soft_wrap=True)
            continue
        print_result(out, result)
    if failures:
        failures.sort(key=lambda f: f[0])
        first = failures[0][1]
        raise errors.reworded(first, f"{len(failures)} of {len(numbered) + planning_failures} prompts failed "
                                     f"(first: {first})")


@app.command()
@handled
def bench(
    job_types: Annotated[Optional[list[str]], typer.Argument(help="Job types (default: all ten).")] = None,
    runs: Annotated[int, typer.Option("--runs", min=1, help="Measured runs per job (after one warm-up).")] = 3,
    video_runs: Annotated[Optional[int], typer.Option("--video-runs", min=1, help="Runs for the video jobs (default --runs).")] = None,
    weights: Annotated[Optional[str], typer.Option("--weights", help="random (full-size architectures, random weights), configured, or demo; default random on a GPU, demo on the CPU.")] = None,
    ablation: Annotated[Optional[str], typer.Option("--ablation", help="Comma-separated job types to ablate (default on a GPU: sdxl_image_fast,image_fast; 'none' for none).")] = None,
    steps: Steps = None, frames: Frames = None, num_images: NumImages = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Where the JSON, markdown and chart go.")] = Path("benchmarks"),
    models: ModelsFile = None, device: Device = None,
    step_cache: Annotated[Optional[float], typer.Option("--step-cache", help="Also time the LOSSY first-block cache at this threshold on the wan jobs, with its PSNR against the exact output.")] = None,
    deadline: Annotated[Optional[float], typer.Option("--deadline", help="Seconds after which jobs not yet started are skipped (results so far are kept).")] = None,
    cold_start: Annotated[Optional[str], typer.Option("--cold-start", help="Comma-separated job types to time from process start to files on disk (compile cache warmed by a first run).")] = None,
):
    """Time every job type through ourvidz and through plain diffusers in the same process."""
    from ourvidz.bench.runner import BenchConfig, run_bench
    from ourvidz.bench.tables import markdown, write
    from ourvidz.families.base import resolve_device
    from ourvidz.overrides import Overrides
    from ourvidz.presets import job_types as all_job_types

    on_gpu = resolve_device(device).type == "cuda"
    weights = weights or ("random" if on_gpu else "demo")
    if weights not in ("random", "configured", "demo"):
        raise errors.BadInput(f"--weights must be random, configured or demo (got {weights!r})")
    if ablation is None:
        ablation = "sdxl_image_fast,image_fast" if on_gpu else "none"
    jobs = job_types or sorted(all_job_types())
    cfg = BenchConfig(job_types=jobs, runs=runs, video_runs=video_runs, weights=weights, device=device,
                      models_file=models, ablation=[] if ablation == "none" else [a for a in ablation.split(",") if a in jobs],
                      overrides=Overrides(steps=steps, frames=frames, num_images=num_images),
                      deadline_s=deadline, step_cache=step_cache)
    log = lambda line: out.print(line, highlight=False)  # noqa: E731
    results = run_bench(cfg, log=log, save=lambda r: write(r, out_dir)) if jobs != ["none"] else {}
    if cold_start:
        from ourvidz.bench.runner import cold_starts

        results = cold_starts(results, cold_start.split(","), weights, device, models, log,
                              save=lambda r: write(r, out_dir))
    for path in write(results, out_dir):
        out.print(f"wrote {path}")
    out.print(markdown(results), highlight=False)


@app.command()
@handled
def batch(
    job_file: Annotated[Path, typer.Argument(help="YAML (a list of jobs, or jobs: [...]) or JSON Lines (.jsonl).")],
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Batch folder: manifest, summary, a folder per job (default outputs/batch-<file name>/).")] = None,
    keep_order: Annotated[bool, typer.Option("--keep-order", help="Run in file order, not grouped by model family and priority.")] = False,
    vram_budget: Annotated[Optional[float], typer.Option("--vram-budget", help="GB of GPU memory resident models may use (default 90% of the card).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check the file and print the run order; load no model.")] = False,
    presets_dir: PresetsDir = None, models: ModelsFile = None, demo: Demo = False, device: Device = None,
):
    """Run a file of jobs in one process, models loaded once; run it again to resume."""
    from ourvidz.batch import run_batch

    outcome = run_batch(job_file, out_dir, keep_order=keep_order, vram_budget=vram_budget, models=models, demo=demo,
                        device=device, presets_dir=presets_dir, console=out, dry_run=dry_run)
    if not dry_run:
        outcome.raise_for_status()


RedisUrl = Annotated[str, typer.Option("--redis", envvar="OURVIDZ_REDIS", help="Redis URL (else $OURVIDZ_REDIS).")]


@app.command()
@handled
def worker(
    redis_url: RedisUrl = keys.DEFAULT_URL,
    queues: Annotated[str, typer.Option("--queues", help="Comma-separated lists to take jobs from; the first listed goes first.")] = ",".join(keys.DEFAULT_QUEUES),
    out_dir: Annotated[Path, typer.Option("--out", help="Outputs go to OUT/jobs/<job id>/ (a shared filesystem for a fleet).")] = Path("outputs"),
    callback_url: Annotated[Optional[str], typer.Option("--callback-url", help="POST {job_id, status, assets, error_message} here when a job ends.")] = None,
    max_jobs: Annotated[Optional[int], typer.Option("--max-jobs", min=1, help="Exit after this many jobs.")] = None,
    idle_exit: Annotated[Optional[float], typer.Option("--idle-exit", min=0, help="Exit after this many seconds without a job.")] = None,
    heartbeat_ttl: Annotated[float, typer.Option("--heartbeat-ttl", min=1, help="Seconds without a heartbeat before this worker's jobs go back on their queues.")] = 15,
    max_attempts: Annotated[int, typer.Option("--max-attempts", min=1, help="Attempts per job before it is failed with its last error.")] = 3,
    vram_budget: Annotated[Optional[float], typer.Option("--vram-budget", help="GB of GPU memory resident models may use (default 90% of the card).")] = None,
    job_timeout: Annotated[float, typer.Option("--job-timeout", help="Seconds a job may run; past it the job fails (not retried) and the worker goes on.")] = 1800,
    presets_dir: PresetsDir = None, models: ModelsFile = None, demo: Demo = False, device: Device = None,
):
    """Take jobs from Redis queues (the production format) and run them with resident models."""
    from ourvidz.worker.loop import Worker

    Worker(redis_url, queues=[q.strip() for q in queues.split(",") if q.strip()], out=out_dir, models=models, demo=demo,
           device=device, vram_budget=vram_budget, callback_url=callback_url, max_jobs=max_jobs, idle_exit=idle_exit,
           heartbeat_ttl=heartbeat_ttl, max_attempts=max_attempts, presets_dir=presets_dir, job_timeout=job_timeout,
           log=lambda line: err.print(line, markup=False, highlight=False, soft_wrap=True)).run()


@app.command()
@handled
def submit(
    job_type: Annotated[str, typer.Argument(help="Job type (see `ourvidz presets list`).")],
    prompt: Annotated[str, typer.Argument(help="What to generate.")],
    redis_url: RedisUrl = keys.DEFAULT_URL,
    queue: Annotated[Optional[str], typer.Option("--queue", help=f"List to push onto (default by the job's model family: {', '.join(keys.DEFAULT_QUEUES)}).")] = None,
    steps: Steps = None, guidance: Guidance = None, width: Width = None, height: Height = None,
    frames: Frames = None, num_images: NumImages = None, seed: Seed = None, negative: Negative = "",
    enhance: Enhance = None, presets_dir: PresetsDir = None, models: ModelsFile = None,
):
    """Check a job, then enqueue it in the production format; prints its id."""
    from ourvidz.plan import plan_job
    from ourvidz.families.weights import token_counter
    from ourvidz.worker import payload, store

    plan = plan_job(job_type, prompt, overrides=overrides(steps, guidance, width, height, frames, num_images),
                    seed=seed, negative=negative, enhance=enhance, presets_dir=presets_dir, counter=token_counter(models))
    job = payload.build(plan, seed=seed, negative=negative)
    queue = queue or keys.queue_for(plan.preset.family)
    store.enqueue(store.connect(redis_url), job, queue)
    err.print(f"queued {job_type} on {queue}", markup=False, highlight=False)
    out.print(job["id"], markup=False, highlight=False)


@app.command()
@handled
def status(job_id: str, redis_url: RedisUrl = keys.DEFAULT_URL,
           as_json: Annotated[bool, typer.Option("--json", help="Print the record as JSON.")] = False):
    """A queued job's state and result."""
    import json

    from ourvidz.worker import store

    rec = store.record(store.connect(redis_url), job_id)
    if rec is None:
        raise errors.BadInput(f"no record of job {job_id!r} (a job another producer pushed gets one when a worker takes it)")
    out.print(json.dumps(rec, indent=2) if as_json else store.describe(rec), markup=False, highlight=False, soft_wrap=True)


@app.command("queue")
@handled
def queue_overview(redis_url: RedisUrl = keys.DEFAULT_URL,
                   queues: Annotated[Optional[str], typer.Option("--queues", help="Comma-separated lists to show besides the workers' own.")] = None):
    """Queue depths, the workers alive (heartbeat age, current job), the jobs running."""
    from ourvidz.views import overview_table
    from ourvidz.worker.store import connect, overview

    out.print(overview_table(overview(connect(redis_url), queues.split(",") if queues else None)))


def main():
    import signal

    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:  # as python -m ourvidz does: 130, not 143
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(errors.EXIT_INTERRUPTED))
    app()


if __name__ == "__main__":
    sys.exit(main())
