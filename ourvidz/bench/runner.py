"""`ourvidz bench`: every job type as a user runs it, against plain diffusers in the same process.

Order matters because the speed-ups change the models in place: first the plain diffusers
pipelines run every job type (and the flop counter counts each job), then the speed-ups are
switched on (stage by stage for the ablation job types) and the same jobs run through ourvidz.
Both paths share the weights, so each row's ratio compares code, not models.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ourvidz.job import run_job
from ourvidz.model_cache import ModelCache
from ourvidz.outputs import save_mp4
from ourvidz.pipelines.base import generators, sync
from ourvidz.plan import plan_job
from ourvidz.presets import load_preset
from ourvidz.speedups import SWITCHES, Speedups, apply

PROMPT = "a lighthouse on a cliff in a storm at night, waves crashing, cinematic lighting"
SEED = 1234


@dataclass
class BenchConfig:
    job_types: list[str]
    runs: int = 3
    weights: str = "random"  # random | configured | demo
    device: str | None = None
    models_file: Path | None = None
    ablation: list[str] = field(default_factory=list)
    overrides: dict[str, Any] = field(default_factory=dict)  # e.g. steps/frames for a quick CPU run
    video_runs: int | None = None  # fewer runs for the 81-frame jobs
    deadline_s: float | None = None  # skip what would start past this many seconds
    step_cache: float | None = None  # also time the lossy first-block cache (wan jobs) at this threshold


def stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}


def card_matmul_tflops(device: torch.device) -> float | None:
    """The card's dense bf16 rate, measured now: the floor is arithmetic at this rate."""
    if device.type != "cuda":
        return None
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    sync(device)
    t0 = time.perf_counter()
    for _ in range(20):
        a @ b
    sync(device)
    return 20 * 2 * 8192**3 / (time.perf_counter() - t0) / 1e12


def plain_job(cache: ModelCache, plan, out: Path) -> tuple[Any, float, float]:
    """The job through the plain diffusers pipeline call a user would write, saved the way such a
    user saves it (PIL's image.save one after the other; our MP4 writer for video). Returns the
    pixels, the job's seconds and the part of them spent saving."""
    p = plan.preset
    t0 = time.perf_counter()
    prompt = plan.prompt
    if plan.enhance:
        enhancer, _ = cache.get("qwen")
        prompt = enhancer.enhance(plan.prompt, seed=plan.seed, settings=plan.enhancement_settings()).text
    fam, _ = cache.get(p.family)
    neg = plan.negative.text or None
    with torch.inference_mode():
        if p.family == "sdxl":
            result = fam.pipe(prompt=prompt, negative_prompt=neg, num_images_per_prompt=p.num_images,
                              generator=generators(plan.seeds), num_inference_steps=p.steps,
                              guidance_scale=p.guidance, width=p.width, height=p.height).images
            t_save = time.perf_counter()
            for i, image in enumerate(result):
                image.save(out / f"plain-{i:02d}.png")
            pixels = np.stack([np.asarray(im) for im in result])
        else:
            fam.set_flow_shift(p.flow_shift)
            frames = fam.pipe(prompt=prompt, negative_prompt=neg, height=p.height, width=p.width,
                              num_frames=p.frames, num_inference_steps=p.steps, guidance_scale=p.guidance,
                              generator=generators(plan.seeds[:1])[0]).frames[0]
            pixels = (np.clip(frames, 0, 1) * 255).round().astype(np.uint8)
            t_save = time.perf_counter()
            if p.is_video:
                video = save_mp4(out / f"plain-{time.monotonic_ns()}.mp4", pixels, p.fps)
            else:
                from PIL import Image

                Image.fromarray(pixels[0]).save(out / "plain.png")
    sync(cache.device)
    t_end = time.perf_counter()
    if p.is_video:  # compared after the same encoding as ourvidz's own MP4
        from ourvidz.outputs import read_video_frames

        pixels = read_video_frames(video)
    return pixels, t_end - t0, t_end - t_save


def pixels_of(result) -> np.ndarray:
    from PIL import Image

    images = [Image.open(f) for f in result.files if f.suffix == ".png"]
    if images:
        return np.stack([np.asarray(im.convert("RGB")) for im in images])
    from ourvidz.outputs import read_video_frames

    return read_video_frames(next(f for f in result.files if f.suffix == ".mp4"))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def run_bench(cfg: BenchConfig, log: Callable[[str], None] = print,
              save: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Family by family (sdxl, then wan): plain diffusers for every job of the family, then the
    speed-ups (stage by stage for the ablation jobs), then the same jobs through ourvidz. Results
    are saved after every row, so a run cut short keeps what it measured; past cfg.deadline_s the
    remaining jobs are skipped and listed."""
    from ourvidz.bench.architectures import RANDOM_LOADERS
    from ourvidz.report import device_name, versions
    from ourvidz.weights import token_counter

    t_start = time.monotonic()
    demo = cfg.weights == "demo"
    loaders = RANDOM_LOADERS if cfg.weights == "random" else {}
    cache = ModelCache(models_file=cfg.models_file, demo=demo or cfg.weights == "random", device=cfg.device,
                       speedups=Speedups.off(), loaders=loaders, vram_budget_gb=1e6)
    device = cache.device
    work = Path(tempfile.mkdtemp(prefix="ourvidz-bench-"))
    counter = token_counter(cfg.models_file, demo)
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"), "card": device_name(device), "versions": versions(),
        "weights": cfg.weights, "runs": cfg.runs, "video_runs": cfg.video_runs or cfg.runs,
        "overrides": cfg.overrides, "prompt": PROMPT, "seed": SEED, "speedups": Speedups().to_dict(),
        "matmul_tflops": card_matmul_tflops(device), "rows": {}, "ablation": {}, "skipped": [],
    }
    this_call = {"jobs": cfg.job_types, "seconds": None}  # merged files keep one entry per bench process
    results["calls"] = {time.strftime("%Y-%m-%dT%H:%M:%S"): this_call}
    save = save or (lambda r: None)

    def make_plan(job: str, tag: str, **extra):
        preset = load_preset(job)  # a quick run's --frames/--num-images apply where the job has them
        over = {k: v for k, v in cfg.overrides.items()
                if not (k == "frames" and not preset.is_video or k == "num_images" and preset.family != "sdxl")}
        plan = plan_job(job, PROMPT, overrides={**over, **extra}, seed=SEED, counter=counter,
                        demo=demo, out_dir=work / f"{job}-{tag}-{time.monotonic_ns()}")
        if plan.enhance and cfg.weights == "random":
            # Random weights write degenerate text, which would trigger every retry; a real model's
            # enhancement takes one attempt, so that is what is timed (to max_new_tokens).
            plan.enhancement = plan.enhancement_settings().model_copy(update={"attempts": 1})
        return plan

    def runs_for(plan) -> int:
        return (cfg.video_runs or cfg.runs) if plan.preset.is_video else cfg.runs

    def out_of_time(job: str, what: str) -> bool:
        if cfg.deadline_s and time.monotonic() - t_start > cfg.deadline_s:
            results["skipped"].append(f"{job} ({what}): past the {cfg.deadline_s:.0f} s deadline")
            log(f"skip    {job:24s} {what}: past the deadline")
            return True
        return False

    flop_shapes: dict[tuple, tuple[float, float]] = {}  # one count per family and shape

    def job_flops(plan, out: Path) -> float | None:
        p = plan.preset
        if device.type != "cuda" or plan.enhance:
            return None
        key = (p.family, p.width, p.height, p.frames, p.num_images)
        if key not in flop_shapes:
            from torch.utils.flop_counter import FlopCounterMode

            counts = []
            for steps in (1, 2):
                with FlopCounterMode(display=False) as counter_mode:
                    plain_job(cache, make_plan(plan.job_type, "flops", steps=steps), out)
                counts.append(counter_mode.get_total_flops())
            flop_shapes[key] = (2 * counts[0] - counts[1], counts[1] - counts[0])
        fixed, per_step = flop_shapes[key]
        return fixed + per_step * p.steps

    # Two caches with the same weights: plain (no speed-ups) and ourvidz. Random weights are built
    # from the same seed, so both hold identical models; Qwen has no speed-ups and is shared.
    fast = ModelCache(models_file=cfg.models_file, demo=demo or cfg.weights == "random", device=cfg.device,
                      speedups=Speedups.off(), loaders=loaders, vram_budget_gb=1e6)
    full = Speedups()
    families: dict[str, list[str]] = {}
    for job in cfg.job_types:
        families.setdefault(load_preset(job).family, []).append(job)
    def bench_job(job: str, family: str, ablate: list[str]) -> None:
        # 1. Plain diffusers: a 2-step warm-up (kernels, allocator), the measured runs, the FLOPs.
        plan = make_plan(job, "plain")
        plan.out_dir.mkdir(parents=True)
        t_load = time.perf_counter()
        for fam in [family] + (["qwen"] if plan.enhance else []):
            cache.get(fam)
        if plan.enhance:
            fast.resident.setdefault("qwen", cache.resident["qwen"])
        load = time.perf_counter() - t_load
        first = plain_job(cache, make_plan(job, "warm", steps=2), plan.out_dir)[1]
        runs = [plain_job(cache, plan, plan.out_dir) for _ in range(runs_for(plan))]
        times = [seconds for _, seconds, _ in runs]
        row = results["rows"][job] = {"plain": {**stats(times), "first": first, "model_build_s": load,
                                                "save_s": statistics.median(s for _, _, s in runs)},
                                      "flops": job_flops(plan, plan.out_dir)}
        log(f"plain   {job:24s} median {statistics.median(times):8.2f} s  (warm-up {first:.2f} s)")

        # 2. Ablation: the speed-ups added one at a time on the ourvidz models.
        model, _ = fast.get(family)
        if job in ablate:
            stages = []
            # First ourvidz with every switch off (resident models, bytes made on the GPU, PNGs
            # saved in parallel), so that each switch's row shows what that switch adds.
            warm = run_job(make_plan(job, "abl-none", steps=2), fast).report["total"]
            abl = [run_job(make_plan(job, "abl-none"), fast).report["total"] for _ in range(runs_for(plan))]
            stages.append({"added": "none", **stats(abl), "first": warm})
            log(f"ablate  {job:24s} {'(no switch)':19s} median {statistics.median(abl):8.2f} s  (warm-up {warm:.2f} s)")
            for name in SWITCHES:
                before = list(model.__dict__.get("speedups_applied", []))
                apply(model, full, only=SWITCHES[: SWITCHES.index(name) + 1])
                if model.__dict__.get("speedups_applied", []) == before:
                    continue  # this switch does nothing for this family or card
                warm = run_job(make_plan(job, f"abl-{name}", steps=2), fast).report["total"]  # compiles
                abl = [run_job(make_plan(job, f"abl-{name}"), fast).report["total"] for _ in range(runs_for(plan))]
                stages.append({"added": name, **stats(abl), "first": warm})
                log(f"ablate  {job:24s} +{name:18s} median {statistics.median(abl):8.2f} s  (warm-up {warm:.2f} s)")
            results["ablation"][job] = stages
        apply(model, full)

        # 3. ourvidz: the same job as a user runs it, models resident.
        first_run = run_job(make_plan(job, "first", steps=2), fast)  # the warm-up: compiles this shape
        reports = [run_job(make_plan(job, "fast"), fast) for _ in range(runs_for(plan))]
        totals = [r.report["total"] for r in reports]
        phases = {k: statistics.median([r.report["phases"].get(k, 0.0) for r in reports])
                  for k in ("encode", "denoise", "decode", "save")}
        enh = [r.report["enhancement"]["seconds"] for r in reports if r.report.get("enhancement")]
        if enh:
            phases["enhance"] = statistics.median(enh)
        ours = pixels_of(reports[-1])
        row["ourvidz"] = {**stats(totals), "first": first_run.report["total"], "phases": phases,
                          "load_in_job_s": sum(reports[-1].report["load"].values()),
                          "peak_gpu_memory_gb": max((r.report["peak_gpu_memory_gb"] or 0) for r in reports) or None,
                          "speedups": reports[-1].report["models"][family].get("speedups", [])}
        row["ratio"] = row["plain"]["median"] / row["ourvidz"]["median"]
        # The same ratio with the saving left out of both sides: the GPU work alone (ourvidz saves
        # PNGs in parallel threads, which a plain script does not).
        row["ratio_unsaved"] = (statistics.median(seconds - saving for _, seconds, saving in runs)
                                / statistics.median(r.report["total"] - r.report["phases"]["save"] for r in reports))
        row["exact"] = {"psnr_db": psnr(ours, runs[-1][0]),
                        "max_abs_diff": int(np.abs(ours.astype(int) - runs[-1][0].astype(int)).max())}
        if row["flops"]:
            row["achieved_tflops"] = row["flops"] / row["ourvidz"]["median"] / 1e12
            if results["matmul_tflops"]:
                row["floor_s"] = row["flops"] / (results["matmul_tflops"] * 1e12)
        doc = plan.preset.seed_doc
        row["seed_doc"] = {"seconds": doc.seconds, "status": doc.status} if doc else None
        log(f"ourvidz {job:24s} median {row['ourvidz']['median']:8.2f} s  ratio {row['ratio']:.2f}x  "
            f"PSNR vs plain {row['exact']['psnr_db']:.1f} dB")
        if cfg.step_cache is not None and family == "wan":  # lossy opt-in: speed and distance from exact
            from ourvidz.speedups import set_step_cache

            set_step_cache(model, cfg.step_cache)
            try:
                run_job(make_plan(job, "lossy-warm", steps=2), fast)
                lossy = [run_job(make_plan(job, "lossy"), fast) for _ in range(runs_for(plan))]
            except Exception as exc:  # the exact row stands; the lossy column says why it is empty
                from ourvidz.model_cache import one_line

                row["lossy"] = {"step_cache": cfg.step_cache, "error": one_line(exc)}
                log(f"error   {job:24s} lossy: {one_line(exc)}")
            else:
                med = statistics.median(r.report["total"] for r in lossy)
                row["lossy"] = {"step_cache": cfg.step_cache, **stats([r.report["total"] for r in lossy]),
                                "ratio": row["plain"]["median"] / med,
                                "psnr_vs_exact_db": psnr(pixels_of(lossy[-1]), ours)}
                log(f"lossy   {job:24s} median {med:8.2f} s  ratio {row['lossy']['ratio']:.2f}x  "
                    f"PSNR vs exact ourvidz {row['lossy']['psnr_vs_exact_db']:.1f} dB")
            finally:
                set_step_cache(model, None)
        save(results)

    for family, jobs in families.items():
        ablate = [j for j in jobs if j in cfg.ablation]
        jobs = ablate + [j for j in jobs if j not in ablate]  # ablation before any full speed-up run
        for job in jobs:
            if out_of_time(job, "plain and ourvidz"):
                continue
            try:
                bench_job(job, family, ablate)
            except Exception as exc:  # one job's failure is recorded; the others still run
                from ourvidz.model_cache import one_line

                results["rows"].setdefault(job, {})["error"] = one_line(exc)
                log(f"error   {job:24s} {one_line(exc)}")
                save(results)
        for c in (cache, fast):  # the next family gets the GPU memory
            c.resident.pop(family, None)
            c._free_memory()
    results["cache_stats"] = {"plain": cache.stats, "ourvidz": fast.stats}
    results["bench_seconds"] = time.monotonic() - t_start
    this_call["seconds"] = results["bench_seconds"]
    save(results)
    return results


def cold_starts(results: dict[str, Any], jobs: list[str], weights: str, device: str | None, models_file,
                log: Callable[[str], None] = print,
                save: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Process start to files on disk, as a user runs `ourvidz generate`: once as it is by default
    (a one-job process does not compile), then with --compile twice on one fresh inductor cache:
    the first run fills it, the second is the warm-cache cold start a new process gets."""
    import json
    import os
    import subprocess
    import sys

    from ourvidz.pipelines.base import resolve_device
    from ourvidz.report import device_name, versions

    results = results or {"date": time.strftime("%Y-%m-%d"), "card": device_name(resolve_device(device)),
                          "versions": versions(), "weights": weights, "runs": 1, "rows": {}, "ablation": {}}
    flags = {"random": ["--random-weights"], "demo": ["--demo"], "configured": []}[weights]
    flags += (["--models", str(models_file)] if models_file else []) + (["--device", device] if device else [])
    cold = results.setdefault("cold_start", {})
    work = Path(tempfile.mkdtemp(prefix="ourvidz-cold-"))
    save = save or (lambda r: None)

    def generate(job: str, tag: str, extra: list[str], env: dict[str, str]) -> tuple[float, dict]:
        out = work / f"{job}-{tag}"
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "ourvidz", "generate", job, PROMPT, "--seed", str(SEED),
                               "--out", str(out), *flags, *extra], capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t0
        if proc.returncode:
            raise RuntimeError(f"cold start of {job} ({tag}) failed: {proc.stderr.strip().splitlines()[-1:]}")
        return wall, json.loads((out / "report.json").read_text())

    for job in jobs:
        wall, report = generate(job, "default", [], os.environ.copy())
        row = cold[job] = {"wall_s": wall, "load_s": sum(report["load"].values()),
                           "denoise_s": report["phases"]["denoise"], "job_total_s": report["total"]}
        log(f"cold    {job:24s} {wall:8.2f} s to files on disk (no compile)")
        save(results)
        if weights == "demo":
            continue  # nothing is compiled on the CPU
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(work / f"inductor-{job}")}
        for tag in ("compile_first", "compile_cached"):
            wall, report = generate(job, tag, ["--compile"], env)
            row[f"{tag}_s"] = wall
            row[f"{tag}_denoise_s"] = report["phases"]["denoise"]
            log(f"cold    {job:24s} {wall:8.2f} s to files on disk (--compile, {tag.split('_')[1]} inductor cache)")
            save(results)
    return results
