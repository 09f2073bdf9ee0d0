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

from ourvidz import families
from ourvidz.errors import one_line
from ourvidz.bench.measure import card_matmul_tflops, pixels_of, psnr, stats
from ourvidz.families.base import sync
from ourvidz.job import run_job
from ourvidz.model_cache import ModelCache
from ourvidz.overrides import Overrides
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
    overrides: Overrides = field(default_factory=Overrides)  # e.g. steps/frames for a quick CPU run
    video_runs: int | None = None  # fewer runs for the 81-frame jobs
    deadline_s: float | None = None  # skip what would start past this many seconds
    step_cache: float | None = None  # also time the lossy first-block cache (wan jobs) at this threshold
    gpus: int = 1  # ourvidz spreads each job over this many GPUs (ourvidz.ranks); plain diffusers uses one
    # Rows of this call's one-GPU run: their plain diffusers timings and FLOPs stand for this run's
    # too (the same card, weights and process kind), so plain runs once, for its pixels only.
    plain_reference: dict[str, dict] = field(default_factory=dict)


def plain_job(cache: ModelCache, plan, out: Path) -> tuple[Any, float, float]:
    """The job through the plain diffusers pipeline call a user would write (each family's
    plain_call), saved the way such a user saves it: PIL's image.save one after the other, our MP4
    writer for video. Returns the pixels, the job's seconds and the part of them spent saving."""
    p = plan.preset
    t0 = time.perf_counter()
    prompt = plan.prompt
    if plan.enhance:
        enhancer, _ = cache.get(families.ENHANCER)
        prompt = enhancer.enhance(plan.prompt, seed=plan.seed, settings=plan.enhancement_settings()).text
    fam, _ = cache.get(p.family)
    with torch.inference_mode():
        made = fam.plain_call(prompt, plan.negative.text or None, p, plan.seeds)  # PIL images or uint8 frames
    t_save = time.perf_counter()
    if p.is_video:
        from ourvidz.outputs import read_video_frames, save_mp4

        video = save_mp4(out / f"plain-{time.monotonic_ns()}.mp4", made, p.fps)
    else:
        from PIL import Image

        images = [im if isinstance(im, Image.Image) else Image.fromarray(im) for im in made]
        for i, image in enumerate(images):
            image.save(out / f"plain-{i:02d}.png")
        pixels = np.stack([np.asarray(im) for im in images])
    sync(cache.device)
    t_end = time.perf_counter()
    if p.is_video:  # compared after the same encoding as ourvidz's own MP4
        pixels = read_video_frames(video)
    return pixels, t_end - t0, t_end - t_save


class Bench:
    """One bench process: two caches with the same weights (plain: no speed-ups; ourvidz), the
    results so far, and the steps of a row, each a method."""

    def __init__(self, cfg: BenchConfig, log: Callable[[str], None], save: Callable[[dict[str, Any]], None],
                 runner: Callable = run_job, fast: ModelCache | None = None):
        from ourvidz.families.weights import token_counter
        from ourvidz.report import device_name, versions

        self.cfg, self.log, self.save, self.runner = cfg, log, save, runner
        self.t_start = time.monotonic()
        self.demo = cfg.weights == "demo"
        # Random weights are built from the same seed, so both caches hold identical models; the
        # enhancer has no speed-ups and is shared. On several GPUs the ourvidz cache is rank 0's,
        # its models sped up as the other ranks' are (bench_cache), and there is no ablation.
        self.plain_cache = bench_cache(cfg, None, full=False)
        self.fast = fast or bench_cache(cfg, None, full=False)
        self.device = self.plain_cache.device
        self.work = Path(tempfile.mkdtemp(prefix="ourvidz-bench-"))
        self.counter = token_counter(cfg.models_file, self.demo)
        self.results: dict[str, Any] = {
            "date": time.strftime("%Y-%m-%d"), "card": device_name(self.device), "versions": versions(),
            "weights": cfg.weights, "runs": cfg.runs, "video_runs": cfg.video_runs or cfg.runs,
            "overrides": cfg.overrides.as_dict(), "prompt": PROMPT, "seed": SEED, "speedups": Speedups().to_dict(),
            "matmul_tflops": card_matmul_tflops(self.device), "rows": {}, "ablation": {}, "skipped": [],
        }
        self.results["gpus"] = cfg.gpus
        self.this_call = {"jobs": cfg.job_types, "gpus": cfg.gpus, "seconds": None}  # merged files keep one entry per process
        self.results["calls"] = {time.strftime("%Y-%m-%dT%H:%M:%S"): self.this_call}
        self.flop_shapes: dict[tuple, tuple[float, float]] = {}  # one count per family and shape

    def make_plan(self, job: str, tag: str, **extra):
        preset = load_preset(job)  # a quick run's --frames/--num-images apply where the job has them
        family = families.get(preset.family)
        over = {k: v for k, v in self.cfg.overrides.as_dict().items()
                if not (k == "frames" and not preset.is_video or k == "num_images" and not family.multi_image)}
        plan = plan_job(job, PROMPT, overrides=Overrides(**(over | extra)), seed=SEED, counter=self.counter,
                        demo=self.demo, out_dir=self.work / f"{job}-{tag}-{time.monotonic_ns()}")
        if plan.enhance and self.cfg.weights == "random":
            # Random weights write degenerate text, which would trigger every retry; a real model's
            # enhancement takes one attempt, so that is what is timed (to max_new_tokens).
            plan.enhancement = plan.enhancement_settings().model_copy(update={"attempts": 1})
        return plan

    def runs_for(self, plan) -> int:
        return (self.cfg.video_runs or self.cfg.runs) if plan.preset.is_video else self.cfg.runs

    def out_of_time(self, job: str, what: str) -> bool:
        if self.cfg.deadline_s and time.monotonic() - self.t_start > self.cfg.deadline_s:
            self.results["skipped"].append(f"{job} ({what}): past the {self.cfg.deadline_s:.0f} s deadline")
            self.log(f"skip    {job:24s} {what}: past the deadline")
            return True
        return False

    def job_flops(self, plan, out: Path) -> float | None:
        p = plan.preset
        if self.device.type != "cuda" or plan.enhance:
            return None
        key = (p.family, p.width, p.height, p.frames, p.num_images)
        if key not in self.flop_shapes:
            from torch.utils.flop_counter import FlopCounterMode

            counts = []
            for steps in (1, 2):
                with FlopCounterMode(display=False) as counter_mode:
                    plain_job(self.plain_cache, self.make_plan(plan.job_type, "flops", steps=steps), out)
                counts.append(counter_mode.get_total_flops())
            self.flop_shapes[key] = (2 * counts[0] - counts[1], counts[1] - counts[0])
        fixed, per_step = self.flop_shapes[key]
        return fixed + per_step * p.steps

    def timed_runs(self, job: str, tag: str) -> tuple[float, list]:
        """A 2-step warm-up (compiles this shape) and the measured runs of the job through ourvidz."""
        first = self.runner(self.make_plan(job, f"{tag}-warm", steps=2), self.fast)
        plan = self.make_plan(job, tag)
        return first.report["total"], [self.runner(self.make_plan(job, tag), self.fast)
                                       for _ in range(self.runs_for(plan))]

    def key(self, job: str) -> str:
        """A row's name: the job type, with the GPU count past one."""
        return job if self.cfg.gpus == 1 else f"{job} x{self.cfg.gpus} GPUs"

    def plain_row(self, job: str, family: str) -> tuple[dict, list, Any]:
        """Plain diffusers: a 2-step warm-up (kernels, allocator), the measured runs, the FLOPs."""
        plan = self.make_plan(job, "plain")
        plan.out_dir.mkdir(parents=True)
        t_load = time.perf_counter()
        for fam in [family] + ([families.ENHANCER] if plan.enhance else []):
            self.plain_cache.get(fam)
        if plan.enhance:
            self.fast.resident.setdefault(families.ENHANCER, self.plain_cache.resident[families.ENHANCER])
        load = time.perf_counter() - t_load
        ref = self.cfg.plain_reference.get(job)
        if ref and ref.get("plain"):
            runs = [plain_job(self.plain_cache, plan, plan.out_dir)]
            row = self.results["rows"][self.key(job)] = {
                "job_type": job, "gpus": self.cfg.gpus, "flops": ref.get("flops"),
                "plain": {**ref["plain"], "reused": "the one-GPU row of this call (plain ran once here, for pixels)"}}
            self.log(f"plain   {job:24s} median {ref['plain']['median']:8.2f} s  (this call's one-GPU row)")
            return row, runs, plan
        first = plain_job(self.plain_cache, self.make_plan(job, "warm", steps=2), plan.out_dir)[1]
        runs = [plain_job(self.plain_cache, plan, plan.out_dir) for _ in range(self.runs_for(plan))]
        times = [seconds for _, seconds, _ in runs]
        row = self.results["rows"][self.key(job)] = {
            "job_type": job, "gpus": self.cfg.gpus,
            "plain": {**stats(times), "first": first, "model_build_s": load,
                      "save_s": statistics.median(s for _, _, s in runs)},
            "flops": self.job_flops(plan, plan.out_dir)}
        self.log(f"plain   {job:24s} median {statistics.median(times):8.2f} s  (warm-up {first:.2f} s)")
        return row, runs, plan

    def ablation(self, job: str, model, plain: np.ndarray | None = None) -> None:
        """The speed-ups added one at a time on the ourvidz models, starting from every switch off
        (resident models, bytes made on the GPU, PNGs saved in parallel), so that each switch's row
        shows what that switch adds, and how far its pixels are from the stage before (an exact
        switch: identical) and from plain diffusers."""
        stages: list[dict] = []
        previous = None
        for name in ("none", *SWITCHES):
            if name != "none":
                before = list(model.__dict__.get("speedups_applied", []))
                apply(model, Speedups(), only=SWITCHES[: SWITCHES.index(name) + 1])
                if model.__dict__.get("speedups_applied", []) == before:
                    continue  # this switch does nothing for this family or card
            warm, reports = self.timed_runs(job, f"abl-{name}")
            abl = [r.report["total"] for r in reports]
            pixels = pixels_of(reports[-1])
            stage = {"added": name, **stats(abl), "first": warm, "max_over_min": max(abl) / min(abl),
                     "denoise_median": statistics.median(r.report["phases"].get("denoise", 0.0) for r in reports),
                     **exactness(pixels, previous, "previous"), **exactness(pixels, plain, "plain")}
            notes = reports[-1].report["models"].get(model.family, {}).get("speedup_notes")
            if notes:
                stage["notes"] = notes
            stages.append(stage)
            previous = pixels
            vs = "" if "psnr_vs_previous_db" not in stage else f"  PSNR vs previous {stage['psnr_vs_previous_db']:.1f} dB"
            self.log(f"ablate  {job:24s} {'(no switch)' if name == 'none' else '+' + name:19s} median "
                     f"{statistics.median(abl):8.2f} s  (warm-up {warm:.2f} s){vs}")
        self.results["ablation"][job] = stages

    def ourvidz_row(self, job: str, family: str, row: dict, runs: list, plan) -> np.ndarray:
        """The same job as a user runs it, models resident; the ratio and the distance from plain."""
        first, reports = self.timed_runs(job, "fast")
        totals = [r.report["total"] for r in reports]
        phases = {k: statistics.median([r.report["phases"].get(k, 0.0) for r in reports])
                  for k in ("encode", "denoise", "decode", "save")}
        enh = [r.report["enhancement"]["seconds"] for r in reports if r.report.get("enhancement")]
        if enh:
            phases["enhance"] = statistics.median(enh)
        ours = pixels_of(reports[-1])
        row["ourvidz"] = {**stats(totals), "first": first, "phases": phases,
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
            if self.results["matmul_tflops"]:
                row["floor_s"] = row["flops"] / (self.results["matmul_tflops"] * 1e12)
        doc = plan.preset.seed_doc
        row["seed_doc"] = {"seconds": doc.seconds, "status": doc.status} if doc else None
        self.log(f"ourvidz {self.key(job):24s} median {row['ourvidz']['median']:8.2f} s  ratio {row['ratio']:.2f}x  "
                 f"PSNR vs plain {row['exact']['psnr_db']:.1f} dB")
        return ours

    def lossy_row(self, job: str, model, row: dict, ours: np.ndarray) -> None:
        """Lossy opt-in: the step cache's speed and its distance from the exact output."""
        from ourvidz.speedups import set_step_cache

        set_step_cache(model, self.cfg.step_cache)
        try:
            _, lossy = self.timed_runs(job, "lossy")
        except Exception as exc:  # the exact row stands; the lossy column says why it is empty
            row["lossy"] = {"step_cache": self.cfg.step_cache, "error": one_line(exc)}
            self.log(f"error   {job:24s} lossy: {one_line(exc)}")
        else:
            med = statistics.median(r.report["total"] for r in lossy)
            row["lossy"] = {"step_cache": self.cfg.step_cache, **stats([r.report["total"] for r in lossy]),
                            "ratio": row["plain"]["median"] / med, "psnr_vs_exact_db": psnr(pixels_of(lossy[-1]), ours)}
            self.log(f"lossy   {job:24s} median {med:8.2f} s  ratio {row['lossy']['ratio']:.2f}x  "
                     f"PSNR vs exact ourvidz {row['lossy']['psnr_vs_exact_db']:.1f} dB")
        finally:
            set_step_cache(model, None)

    def job(self, job: str, family: str, ablate: list[str]) -> None:
        row, runs, plan = self.plain_row(job, family)
        model, _ = self.fast.get(family)
        if job in ablate and self.cfg.gpus == 1:
            self.ablation(job, model, runs[-1][0])
        apply(model, Speedups())
        ours = self.ourvidz_row(job, family, row, runs, plan)
        if self.cfg.step_cache is not None and families.get(family).step_cache and self.cfg.gpus == 1:
            self.lossy_row(job, model, row, ours)
        self.save(self.results)

    def run(self) -> dict[str, Any]:
        by_family: dict[str, list[str]] = {}
        for job in self.cfg.job_types:
            by_family.setdefault(load_preset(job).family, []).append(job)
        for family, jobs in by_family.items():
            ablate = [j for j in jobs if j in self.cfg.ablation]
            jobs = ablate + [j for j in jobs if j not in ablate]  # ablation before any full speed-up run
            for job in jobs:
                if self.out_of_time(job, "plain and ourvidz"):
                    continue
                try:
                    self.job(job, family, ablate)
                except Exception as exc:  # one job's failure is recorded; the others still run
                    self.results["rows"].setdefault(self.key(job), {})["error"] = one_line(exc)
                    self.log(f"error   {job:24s} {one_line(exc)}")
                    self.save(self.results)
            for c in (self.plain_cache, self.fast):  # the next family gets the GPU memory
                c.resident.pop(family, None)
                c._free_memory()
        self.results["cache_stats"] = {"plain": self.plain_cache.stats, "ourvidz": self.fast.stats}
        self.results["bench_seconds"] = time.monotonic() - self.t_start
        self.this_call["seconds"] = self.results["bench_seconds"]
        self.save(self.results)
        return self.results


def exactness(a: np.ndarray, b: np.ndarray | None, name: str) -> dict[str, float]:
    """PSNR and the largest pixel difference of a against b (nothing when there is no b)."""
    if b is None or a.shape != b.shape:
        return {}
    return {f"psnr_vs_{name}_db": psnr(a, b), f"max_abs_diff_vs_{name}": int(np.abs(a.astype(int) - b.astype(int)).max())}


def bench_cache(cfg: BenchConfig, device: str | None, full: bool = True) -> ModelCache:
    """A model cache for the bench: the configured, demo or random full-size weights; with every
    exact speed-up (full: a rank's ourvidz models) or none (they are switched on by the bench)."""
    return ModelCache(models_file=cfg.models_file, demo=cfg.weights == "demo", device=device or cfg.device,
                      speedups=Speedups() if full else Speedups.off(), random_weights=cfg.weights == "random",
                      vram_budget_gb=1e6)


def run_bench(cfg: BenchConfig, log: Callable[[str], None] = print,
              save: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Family by family: plain diffusers for every job of the family, then the speed-ups (stage by
    stage for the ablation jobs), then the same jobs through ourvidz. Results are saved after every
    row, so a run cut short keeps what it measured; past cfg.deadline_s the remaining jobs are
    skipped and listed. cfg.gpus > 1: ourvidz runs each job on that many GPUs (ourvidz.ranks), the
    bench itself on rank 0, plain diffusers on one GPU beside it."""
    if cfg.gpus == 1:
        return Bench(cfg, log, save or (lambda r: None)).run()
    import functools

    from ourvidz.ranks import on_ranks

    return on_ranks(cfg.gpus, _bench_on_rank0, functools.partial(bench_cache, cfg), cfg, log, save,
                    device=cfg.device)


def _bench_on_rank0(runner, cache, cfg: BenchConfig, log, save) -> dict[str, Any]:
    return Bench(cfg, log, save or (lambda r: None), runner=runner, fast=cache).run()
