"""The command line: thin Typer commands that parse, call and print.

Shared argument groups are Annotated aliases composed into each command (as mflux does), so an
option means the same everywhere. Every command runs under `handled`, which turns an error a
user can act on into one line on stderr and its exit code.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ourvidz import __version__, errors
from ourvidz.cli_shared import (AutoNegative, Demo, Device, Enhance, Frames, Gpus, Guidance, Height, Json, ModelsFile,
                                masked,
                                Negative, NumImages, PresetsDir, Seed, Steps, Weighting, Width, err, handled, out,
                                overrides, print_json)
from ourvidz.worker import keys

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
                  help="Prompt to images and videos on your own GPU: SDXL, Wan 2.1, Qwen 2.5 enhancement.")
presets_app = typer.Typer(no_args_is_help=True, help="List and show the job types.")
models_app = typer.Typer(help="Where each model family's weights are, and fetching them.")
app.add_typer(presets_app, name="presets")
app.add_typer(models_app, name="models")
def version_callback(value: bool):
    if value:
        out.print(f"ourvidz {__version__}")
        raise typer.Exit()


@app.callback()
def root(version: Annotated[bool, typer.Option("--version", callback=version_callback, is_eager=True, help="Print the version.")] = False):
    pass


@presets_app.command("list")
@handled
def presets_list(presets_dir: PresetsDir = None, as_json: Json = False):
    """A table of the job types."""
    from ourvidz.presets import load_all
    from ourvidz.views import presets_table

    presets = load_all(presets_dir)
    if as_json:
        return print_json({"presets": [p.model_dump() for p in presets]})
    out.print(presets_table(presets))


@presets_app.command("show")
@handled
def presets_show(job_type: str, presets_dir: PresetsDir = None, as_json: Json = False):
    """One job type's preset, every field."""
    from ourvidz.presets import load_preset
    from ourvidz.views import show_yaml

    preset = load_preset(job_type, presets_dir).model_dump()
    if as_json:
        return print_json(preset)
    out.print(show_yaml(preset))


@models_app.callback(invoke_without_command=True)
@handled
def models_status(ctx: typer.Context, models: ModelsFile = None, as_json: Json = False):
    """Each family: where its weights are configured, whether they were found, their size."""
    if ctx.invoked_subcommand:
        return
    from ourvidz.views import models_table
    from ourvidz.families.weights import status

    rows = status(models)
    if as_json:
        return print_json({"families": rows})
    out.print(models_table(rows))


@models_app.command("fetch")
@handled
def models_fetch(family: Annotated[str, typer.Argument(help="sdxl, wan or qwen")], models: ModelsFile = None,
                 as_json: Json = False):
    """Download the files a family loads into the Hugging Face cache (for single-file SDXL: its configs)."""
    from ourvidz.families.weights import FAMILIES, fetch, fetch_plan
    from ourvidz.progress import human_bytes

    if family not in FAMILIES:
        raise errors.BadInput(f"unknown family '{family}'; known: {', '.join(FAMILIES)}")
    plan = fetch_plan(family, models)
    err.print(f"fetching {plan['hub_id']} ({', '.join(plan['allow_patterns'] or ['every file'])})",
              markup=False, highlight=False, soft_wrap=True)
    done = fetch(family, models)
    if as_json:
        return print_json(done)
    out.print(f"fetched {family}: {done['hub_id']} into {done['folder']} ({done['files']} files, "
              f"{human_bytes(done['bytes'])})", markup=False, highlight=False, soft_wrap=True)
    if done["advice"]:
        err.print(done["advice"], markup=False, highlight=False, soft_wrap=True)


@app.command()
@handled
def negative(job_type: str, prompt: Annotated[str, typer.Argument()] = "", negative: Negative = "",
             auto_negative: AutoNegative = True, presets_dir: PresetsDir = None, models: ModelsFile = None,
             as_json: Json = False):
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
    if as_json:
        return print_json({"job_type": job_type, **neg.to_dict()})
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
    from ourvidz.progress import reporting
    from ourvidz.views import enhancement_panel, job_progress

    with job_progress(err, "enhance") as (_, on_phase), reporting(on_phase):
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
    negative: Negative = "", auto_negative: AutoNegative = True, enhance: Enhance = None, weighting: Weighting = True,
    presets_dir: PresetsDir = None, models: ModelsFile = None, demo: Demo = False, device: Device = None,
    step_cache: Annotated[Optional[float], typer.Option("--step-cache", help="LOSSY, off by default: Wan first-block cache threshold (e.g. 0.05); skips transformer work on steps that change little.")] = None,
    compile_: Annotated[Optional[bool], typer.Option("--compile/--no-compile", help="Compile the models (GPU; pays over several jobs). Default: on for a --prompt-file, off for one job.")] = None,
    random_weights: Annotated[bool, typer.Option("--random-weights", hidden=True, help="Full-size architectures with random weights (speed tests; outputs are noise).")] = False,
    gpus: Gpus = 1,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document on stdout: the plans (with --dry-run) or each job's files and report; progress stays on stderr.")] = False,
):
    """Generate images or a video for one job type."""
    from ourvidz import generate as gen
    from ourvidz.views import plan_panel

    request = gen.Request(
        job_type=job_type, prompt=prompt, prompt_file=prompt_file, from_metadata=from_metadata,
        out_dir=out_dir, overrides=overrides(steps, guidance, width, height, frames, num_images),
        seed=seed, negative=negative, auto_negative=auto_negative, enhance=enhance,
        presets_dir=presets_dir, models=models, demo=demo, device=device, random_weights=random_weights,
        step_cache=step_cache, compile=compile_, weighting=weighting,
    )
    if device:
        from ourvidz.families.base import resolve_device

        resolve_device(device)  # a bad --device is one line before anything else happens
    numbered, failures = gen.make_numbered_plans(request, keep_going=prompt_file is not None)
    plans = [plan for _, plan in numbered]
    planning_failures = len(failures)
    for _, exc in failures:  # a prompt file goes on past a prompt that fails; each is reported, then one error line
        err.print(f"[red]failed:[/] {masked(exc)}", highlight=False, soft_wrap=True)
    if dry_run:
        if as_json:
            print_json({"plans": [plan.to_dict() | {"models": gen.describe_models(request, plan)} for plan in plans]})
        else:
            for plan in plans:
                out.print(plan_panel(plan, gen.describe_models(request, plan)))
    elif numbered:
        results, run_failures = gen.run(request, numbered, gpus, quiet=as_json, keep_going=prompt_file is not None)
        if as_json:
            print_json({"jobs": [{"files": [str(p) for p in r.files], "report": r.report} for r in results]})
        failures += run_failures
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
    cold_start: Annotated[Optional[str], typer.Option("--cold-start", help="Comma-separated job types to time from process start to files on disk ('bench none --cold-start JOBS': only these). With random weights they are first written as user files (an SDXL single file, a Wan diffusers folder) and loaded through --models.")] = None,
    cold_precision: Annotated[str, typer.Option("--cold-precision", help="Dtypes of the written files: hub (as the hub repositories ship: Wan float32) or half (Wan transformer and text encoder bfloat16).")] = "hub",
    cold_compile: Annotated[bool, typer.Option("--cold-compile/--no-cold-compile", help="Also time two --compile processes (empty, then warm inductor cache) per cold-start job on a GPU.")] = True,
    weights_dir: Annotated[Optional[Path], typer.Option("--weights-dir", help="Write the cold start's user-format weights under this folder and keep them (default: a temporary folder, removed after).")] = None,
    gpus: Annotated[str, typer.Option("--gpus", help="Comma-separated GPU counts for ourvidz, e.g. 1,2: each job runs on each count, plain diffusers on one GPU beside it.")] = "1",
):
    """Time every job type through ourvidz and through plain diffusers in the same process."""
    import json

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
    try:
        counts = [int(g) for g in gpus.split(",") if g.strip()]
    except ValueError:
        raise errors.BadInput(f"--gpus takes GPU counts like 1,2 (got {gpus!r})") from None
    if not counts or min(counts) < 1:
        raise errors.BadInput(f"--gpus takes GPU counts of at least 1 (got {gpus!r})")
    log = functools.partial(print, flush=True)  # ranks print too: plain lines, picklable
    save = functools.partial(write, out_dir=out_dir)
    results: dict = {}
    for n in counts if jobs != ["none"] else []:
        cfg = BenchConfig(job_types=jobs, runs=runs, video_runs=video_runs, weights=weights, device=device,
                          models_file=models, ablation=[] if ablation == "none" else [a for a in ablation.split(",") if a in jobs],
                          overrides=Overrides(steps=steps, frames=frames, num_images=num_images),
                          deadline_s=deadline, step_cache=step_cache, gpus=n,
                          plain_reference={j: r for j, r in results.get("rows", {}).items() if r.get("gpus") == 1})
        results = run_bench(cfg, log=log, save=save)
    if cold_start:
        from ourvidz.bench.cold import cold_starts

        if cold_precision not in ("hub", "half"):
            raise errors.BadInput(f"--cold-precision must be hub or half (got {cold_precision!r})")
        results = cold_starts(results, cold_start.split(","), weights, device, models, log, save=save,
                              precision=cold_precision, compile_runs=cold_compile, weights_dir=weights_dir,
                              keep_weights=weights_dir is not None,
                              overrides={"steps": steps, "frames": frames, "num_images": num_images})
    paths = write(results, out_dir)  # merged with this date's earlier calls on the same card
    for path in paths:
        out.print(f"wrote {path}")
    out.print(markdown(json.loads(paths[0].read_text())), highlight=False)


@app.command()
@handled
def batch(
    job_file: Annotated[Path, typer.Argument(help="YAML (a list of jobs, or jobs: [...]) or JSON Lines (.jsonl).")],
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Batch folder: manifest, summary, a folder per job (default outputs/batch-<file name>/).")] = None,
    keep_order: Annotated[bool, typer.Option("--keep-order", help="Run in file order, not grouped by model family and priority.")] = False,
    vram_budget: Annotated[Optional[float], typer.Option("--vram-budget", help="GB of GPU memory resident models may use (default 90% of the card).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check the file and print the run order; load no model.")] = False,
    presets_dir: PresetsDir = None, models: ModelsFile = None, demo: Demo = False, device: Device = None,
    gpus: Gpus = 1,
):
    """Run a file of jobs in one process, models loaded once; run it again to resume."""
    from ourvidz.batch import run_batch

    outcome = run_batch(job_file, out_dir, keep_order=keep_order, vram_budget=vram_budget, models=models, demo=demo,
                        device=device, presets_dir=presets_dir, console=out, dry_run=dry_run, gpus=gpus)
    if not dry_run:
        outcome.raise_for_status()


RedisUrl = Annotated[str, typer.Option("--redis", envvar="OURVIDZ_REDIS", help="Redis URL (else $OURVIDZ_REDIS).")]
PushEnd = Annotated[Optional[str], typer.Option("--push-end", help="The end producers push at: right (production since 2025-08-16; the default), left, or per queue like 'right,wan_queue=left' (default $OURVIDZ_PUSH_END). Workers take from the other end: oldest first.")]


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
    push_end: PushEnd = None,
    store: Annotated[Optional[str], typer.Option("--store", help="Upload each job's files and thumbnails here (fsspec URL, e.g. s3://workspace-temp) at {user_id}/{job_id}/{i}.png; endpoint and keys from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...")] = None,
    reference_root: Annotated[Optional[Path], typer.Option("--reference-root", help="Folder whose images payloads may name as local reference paths (default: http(s) URLs only).")] = None,
    job_timeout: Annotated[float, typer.Option("--job-timeout", help="Seconds a job may run; past it the job fails (not retried) and the worker goes on.")] = 1800,
    presets_dir: PresetsDir = None, models: ModelsFile = None, demo: Demo = False, device: Device = None,
    gpus: Gpus = 1,
):
    """Take jobs from Redis queues (the production format) and run them with resident models."""
    from ourvidz.worker.loop import Worker, run_on_ranks, stderr_line

    args = dict(url=redis_url, queues=[q.strip() for q in queues.split(",") if q.strip()], out=out_dir, models=models,
                demo=demo, device=device, vram_budget=vram_budget, callback_url=callback_url, max_jobs=max_jobs,
                idle_exit=idle_exit, heartbeat_ttl=heartbeat_ttl, max_attempts=max_attempts, presets_dir=presets_dir,
                push_end=push_end, store=store, reference_root=reference_root, job_timeout=job_timeout,
                log=stderr_line)
    if gpus > 1:
        run_on_ranks(gpus, args)
    else:
        Worker(**args).run()


@app.command()
@handled
def submit(
    job_type: Annotated[str, typer.Argument(help="Job type (see `ourvidz presets list`).")],
    prompt: Annotated[str, typer.Argument(help="What to generate.")],
    redis_url: RedisUrl = keys.DEFAULT_URL,
    queue: Annotated[Optional[str], typer.Option("--queue", help=f"List to push onto (default by the job's model family: {', '.join(keys.DEFAULT_QUEUES)}).")] = None,
    steps: Steps = None, guidance: Guidance = None, width: Width = None, height: Height = None,
    frames: Frames = None, num_images: NumImages = None, seed: Seed = None, negative: Negative = "",
    enhance: Enhance = None, presets_dir: PresetsDir = None, models: ModelsFile = None, push_end: PushEnd = None,
):
    """Check a job, then enqueue it in the production format; prints its id."""
    from ourvidz.plan import plan_job
    from ourvidz.families.weights import token_counter
    from ourvidz.worker import payload, store

    plan = plan_job(job_type, prompt, overrides=overrides(steps, guidance, width, height, frames, num_images),
                    seed=seed, negative=negative, enhance=enhance, presets_dir=presets_dir, counter=token_counter(models))
    job = payload.build(plan, seed=seed, negative=negative)
    queue = queue or keys.queue_for(plan.preset.family)
    store.enqueue(store.connect(redis_url), job, queue, keys.push_ends(push_end, [queue])[queue])
    err.print(f"queued {job_type} on {queue}", markup=False, highlight=False)
    out.print(job["id"], markup=False, highlight=False)


@app.command()
@handled
def status(job_id: str, redis_url: RedisUrl = keys.DEFAULT_URL, as_json: Json = False):
    """A queued job's state and result."""
    from ourvidz.worker import store

    rec = store.record(store.connect(redis_url), job_id)
    if rec is None:
        raise errors.BadInput(f"no record of job {job_id!r} (a job another producer pushed gets one when a worker takes it)")
    if as_json:
        return print_json(rec)
    out.print(store.describe(rec), markup=False, highlight=False, soft_wrap=True)


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
