"""`ourvidz batch FILE`: many jobs in one process, models loaded once, nothing lost.

The whole file is read and every job planned before any model loads. The batch folder holds
manifest.json, the state of every job (pending, running, done, failed), rewritten atomically
after each change; running the same command again resumes from it. Jobs run grouped by model
family to avoid switches (see run_order). A failed job is recorded and the batch goes on.
"""

from __future__ import annotations

import functools
import os
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ourvidz import __version__, layout
from ourvidz.errors import EXIT_BUG, BadInput, DiskFull, Interrupted, OurvidzError, one_line
from ourvidz.jobfile import Unit, file_digest, read_job_file
from ourvidz.layout import MANIFEST, SUMMARY_JSON, SUMMARY_MD
from ourvidz.manifest import (Manifest, batch_lock, build_summary, clear_partial, expected_writes, new_record, now,
                              summary_markdown)
from ourvidz.outputs import atomic_replace, to_json


class BatchFailed(OurvidzError):
    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


# ---------------------------------------------------------------- planning
def plan_units(units: list[Unit], records: dict[str, dict], batch_dir: Path, job_file: Path, *, models=None,
               demo: bool = False, presets_dir=None) -> dict[str, Any]:
    """uid -> JobPlan for every unit not done; the first problem (in file order) is raised, naming
    file, line and job. Seeds drawn for earlier runs (in `records`) are reused."""
    from ourvidz.errors import PromptRefused
    from ourvidz.plan import plan_job
    from ourvidz.presets import OverrideError, load_preset
    from ourvidz.families.weights import resolve_sources, token_counter

    sources = resolve_sources(models, demo)
    counter = token_counter(models, demo)
    plans, problems = {}, []
    for u in units:
        rec = records.get(u.uid)
        if rec and rec["state"] == "done":
            continue
        line = u.line
        try:
            preset = load_preset(u.job_type, presets_dir)
            seed = rec["seed"] if rec else u.seed
            if rec is None and u.seed is not None and u.seed_step:
                seed = u.seed + u.seed_step * (u.overrides.num_images or preset.num_images)
            source = sources.get(preset.family)
            try:
                plans[u.uid] = plan_job(
                    u.job_type, u.prompt, overrides=u.overrides, seed=seed, negative=u.negative,
                    auto_negative=u.auto_negative, enhance=u.enhance, out_dir=batch_dir / u.uid,
                    presets_dir=presets_dir, counter=counter, demo=source is not None and source.is_demo)
            except OverrideError as exc:  # named as the job file names it
                line = u.overrides_line
                raise BadInput(f"overrides: {exc.by_field}") from None
        except (BadInput, PromptRefused) as exc:
            line = u.prompt_line if isinstance(exc, PromptRefused) else line
            problems.append(type(exc)(f"{job_file}:{line}: job {u.job} ({u.job_type}): {exc}"))
    if problems:
        first = problems[0]
        more = f" (+{len(problems) - 1} more problems; nothing was run)" if len(problems) > 1 else " (nothing was run)"
        raise type(first)(f"{first}{more}")
    return plans


def run_order(records: list[dict], keep_order: bool = False) -> list[dict]:
    """Grouped by model family, families in the order of their most urgent (lowest) priority;
    within a family, the jobs that need Qwen enhancement form one stretch, the stretches again
    ordered by their lowest priority; within a stretch lower priority first, ties in file order.
    So each model is needed in one stretch, and fast job types run first where grouping allows.
    --keep-order: file order."""
    if keep_order:
        return sorted(records, key=lambda r: r["n"])
    family_best: dict[str, int] = {}
    stretch_best: dict[tuple, int] = {}
    for r in records:
        family_best[r["family"]] = min(family_best.get(r["family"], r["priority"]), r["priority"])
        key = (r["family"], r["enhance"])
        stretch_best[key] = min(stretch_best.get(key, r["priority"]), r["priority"])
    return sorted(records, key=lambda r: (family_best[r["family"]], r["family"],
                                          stretch_best[(r["family"], r["enhance"])], r["enhance"],
                                          r["priority"], r["n"]))


# ---------------------------------------------------------------- signals and rates
class StopSignals:
    """First Ctrl-C/SIGTERM: stop after the current job. Second: stop now (KeyboardInterrupt),
    but never in the middle of a manifest write."""

    def __init__(self):
        self.count = 0
        self._critical = False
        self._deferred = False
        self._old: dict[int, Any] = {}

    def _handle(self, signum, frame):
        self.count += 1
        if self.count == 1:
            os.write(2, b"\nstopping after the current job (signal again to stop now)\n")
        elif self._critical:
            self._deferred = True
        else:
            raise KeyboardInterrupt

    @property
    def requested(self) -> bool:
        return self.count > 0

    def hold(self) -> None:
        """From now on a signal is only counted, until release()."""
        self._critical = True

    def release(self) -> None:
        self._critical = False
        if self._deferred:
            self._deferred = False
            raise KeyboardInterrupt

    @contextmanager
    def critical(self):
        self._critical = True
        try:
            yield
        finally:
            self._critical = False
        if self._deferred:
            self._deferred = False
            raise KeyboardInterrupt

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


@dataclass
class Rates:
    """Seconds per job by job type, without model loads: the ETA's basis."""

    seen: dict[str, list[float]] = field(default_factory=dict)

    def add(self, rec: dict) -> None:
        self.seen.setdefault(rec["job_type"], []).append(max(0.0, rec["seconds"] - (rec["load_paid"] or 0.0)))

    def eta(self, remaining: list[dict]) -> float | None:
        every = [s for v in self.seen.values() for s in v]
        if not every:
            return None
        overall = sum(every) / len(every)
        means = {k: sum(v) / len(v) for k, v in self.seen.items()}
        return sum(means.get(r["job_type"], overall) for r in remaining)


# ---------------------------------------------------------------- running
@dataclass
class Outcome:
    batch_dir: Path
    manifest: dict[str, Any]
    summary: dict[str, Any]
    interrupted: bool = False
    disk_full: DiskFull | None = None

    def raise_for_status(self) -> None:
        t = self.summary["totals"] if self.summary else {"done": "?", "jobs": "?", "pending": "?"}
        if self.disk_full:
            raise DiskFull(f"{self.disk_full} ({t['done']} of {t['jobs']} jobs done, {t['pending']} left; "
                           f"manifest: {self.batch_dir / MANIFEST})")
        if self.interrupted:
            raise Interrupted(f"interrupted: {t['done']} of {t['jobs']} jobs done, {t['pending']} left; run the same "
                              f"command again to resume (manifest: {self.batch_dir / MANIFEST})")
        failed = [r for r in self.manifest["jobs"] if r["state"] == "failed"]
        if failed:
            first = min(failed, key=lambda r: r["finished"] or "")
            raise BatchFailed(f"{len(failed)} of {t['jobs']} jobs failed (first: {first['id']}: {first['error']}); see "
                              f"{self.batch_dir / SUMMARY_MD}; run the same command again to retry them",
                              first["exit_code"] or EXIT_BUG)


def run_batch(job_file: Path | str, out_dir: Path | None = None, *, keep_order: bool = False,
              vram_budget: float | None = None, models=None, demo: bool = False, device: str | None = None,
              presets_dir=None, console=None, dry_run: bool = False, cache=None, gpus: int = 1) -> Outcome:
    """The signal handler is installed before anything else: a SIGTERM or Ctrl-C at any moment, start-up
    and the final summary included, leaves a consistent manifest, and the batch exits 130."""
    with StopSignals() as stop:
        return _run_batch(job_file, out_dir, keep_order=keep_order, vram_budget=vram_budget, models=models, demo=demo,
                          device=device, presets_dir=presets_dir, console=console, dry_run=dry_run, cache=cache,
                          stop=stop, gpus=gpus)


def _run_batch(job_file, out_dir, *, keep_order, vram_budget, models, demo, device, presets_dir, console, dry_run,
               cache, stop: StopSignals, gpus: int = 1) -> Outcome:
    from rich.console import Console

    console = console or Console()
    job_file = Path(job_file)
    batch_dir = Path(out_dir) if out_dir else layout.batch_dir(job_file)
    units = read_job_file(job_file)
    digest = file_digest(units)
    old = Manifest.read(batch_dir)
    if old is not None and old.data.get("jobs_digest") != digest:
        done = old.counts()["done"]
        raise BadInput(f"{job_file} is not the job file of the batch in {batch_dir} (its jobs changed since "
                       f"{MANIFEST} was made; {done} jobs done there): restore the file, or give another --out")
    if dry_run:
        import tempfile

        with tempfile.TemporaryDirectory() as empty:  # an unfinished job's partial files don't count here
            plans = plan_units(units, old.by_id if old else {}, Path(empty), job_file, models=models, demo=demo,
                               presets_dir=presets_dir)
        recs = [old.by_id[u.uid] if old and u.uid in old.by_id else new_record(u, plans[u.uid]) for u in units]
        for u, r in zip(units, recs):
            if r["state"] == "pending" and u.seed is None and not old:
                r["seed"] = "random"
        from ourvidz.views import batch_order_table

        console.print(batch_order_table(run_order(recs, keep_order), batch_dir))
        return Outcome(batch_dir, old.data if old else {"jobs": recs}, {})
    # A new batch is planned (checked) before its folder exists: a bad file leaves nothing behind.
    plans = None if old else plan_units(units, {}, batch_dir, job_file, models=models, demo=demo,
                                        presets_dir=presets_dir)
    with batch_lock(batch_dir):
        manifest = Manifest.read(batch_dir)  # again, under the lock
        for tmp in batch_dir.glob(".*.tmp"):  # a killed run's unfinished manifest or summary write
            tmp.unlink()
        if manifest is not None:
            if manifest.data.get("jobs_digest") != digest:
                raise BadInput(f"the batch in {batch_dir} changed while this one started; use another --out")
            for rec in manifest.data["jobs"]:
                if rec["state"] != "done":
                    clear_partial(batch_dir, rec)
            plans = plan_units(units, manifest.by_id, batch_dir, job_file, models=models, demo=demo,
                               presets_dir=presets_dir)
        else:
            manifest = Manifest(batch_dir, {
                "ourvidz": __version__, "format": 1, "job_file": str(job_file.resolve()), "jobs_digest": digest,
                "created": now(), "updated": None, "order": [], "runs": [],
                "jobs": [new_record(u, plans[u.uid]) for u in units]})
        for rec in manifest.data["jobs"]:
            if rec["id"] in plans:  # presets may have changed since: refresh what ordering reads
                p = plans[rec["id"]]
                rec.update(family=p.preset.family, priority=p.preset.priority, enhance=p.enhance)
            if rec["state"] == "running":  # a run that was killed: it did not finish this job
                rec.update(state="pending", error="the batch stopped during this job (killed?); redone")
        for run in manifest.data["runs"]:
            if run["outcome"] == "running":
                run["outcome"] = "killed"
        order = run_order(manifest.data["jobs"], keep_order)
        manifest.data["order"] = [r["id"] for r in order]
        if gpus == 1:
            cache = cache or _cache(models, demo, vram_budget, device)
        stop.hold()  # signals only counted until _run handles them: the run is never left 'running'
        run = {"started": now(), "pid": os.getpid(), "finished": None, "outcome": "running", "families": {}}
        manifest.data["runs"].append(run)
        manifest.save()
        if gpus == 1:
            from ourvidz.job import run_job

            return _run(run_job, cache, manifest, order, plans, batch_dir, run, console, stop)
        # Each job on `gpus` GPUs: this process keeps the lock; rank 0 runs the batch as above,
        # with its own signal handling (a Ctrl-C reaches it with this process's group).
        from ourvidz.ranks import on_ranks

        return on_ranks(gpus, _run_on_rank0, functools.partial(_cache, models, demo, vram_budget), manifest, order,
                        plans, batch_dir, run, device=device)


def _cache(models, demo, vram_budget, device):
    from ourvidz.model_cache import ModelCache

    return ModelCache(models_file=models, demo=demo, device=device, vram_budget_gb=vram_budget)


def _run_on_rank0(runner, cache, manifest, order, plans, batch_dir, run) -> Outcome:
    with StopSignals() as stop:
        stop.hold()
        return _run(runner, cache, manifest, order, plans, batch_dir, run, None, stop)


def _run(runner, cache, manifest: Manifest, order: list[dict], plans: dict, batch_dir: Path, run: dict, console,
         stop: StopSignals) -> Outcome:
    from ourvidz.views import BatchProgress, batch_summary_tables
    from ourvidz.views import console as new_console

    console = console or new_console()

    t_start = time.perf_counter()
    rates = Rates()
    for rec in manifest.data["jobs"]:
        if rec["state"] == "done" and rec["seconds"] is not None:
            rates.add(rec)
    queue = [r for r in order if r["state"] != "done"]
    total, done = len(order), len(order) - len(queue)
    if cache.demo:
        console.print("[bold yellow]demo: random weights[/] (no models file: the tiny built-in demo models)")
    if done:
        console.print(f"resuming {batch_dir}: {done} of {total} jobs already done, {len(queue)} to run")
    interrupted, current, full = False, None, None
    with BatchProgress(console, total, done) as progress:
        progress.set_eta(rates.eta(queue))
        try:
            stop.release()  # held since the run was recorded; a second signal may stop a job from here
            for i, rec in enumerate(queue):
                if stop.requested:
                    interrupted = True
                    break
                plan, current = plans[rec["id"]], rec
                with stop.critical():
                    rec.update(state="running", attempts=rec["attempts"] + 1, started=now(), finished=None,
                               error=None, exit_code=None, error_class=None, files=[],
                               writes=expected_writes(plan, batch_dir))
                    manifest.save(cache)
                avoided0 = sum(s["avoided_seconds"] for s in cache.stats.values())
                t0 = time.perf_counter()
                try:
                    result = runner(plan, cache, progress.job(f"[{done + i + 1}/{total}] {rec['job_type']}"),
                                    progress.on_phase)
                except OurvidzError as exc:
                    failure = (str(exc), exc.exit_code, type(exc).__name__)
                    full = exc if isinstance(exc, DiskFull) else None
                except Exception as exc:  # a bug in one job must not end the night's batch
                    failure = (f"unexpected {one_line(exc)}", EXIT_BUG, "bug")
                else:
                    failure = None
                seconds = time.perf_counter() - t0
                with stop.critical():
                    rec["finished"] = now()
                    if failure is None:
                        report = result.report
                        rec.update(state="done", files=[str(p.relative_to(batch_dir)) for p in result.files],
                                   writes=[], seconds=report["total"], load_paid=sum(report["load"].values()),
                                   demo=report["demo"],
                                   load_avoided=sum(s["avoided_seconds"] for s in cache.stats.values()) - avoided0)
                        rates.add(rec)
                    else:  # `writes` stays: what it wrote is cleared before the retry
                        rec.update(state="failed", error=failure[0], exit_code=failure[1], error_class=failure[2],
                                   seconds=seconds)
                    current = None
                    manifest.save(cache)
                progress.finished(_job_line(rec, batch_dir), rates.eta(queue[i + 1:]))
                if full:  # every job after it would fail the same way
                    break
        except KeyboardInterrupt:
            interrupted = True
            if current is not None and current["state"] == "running":
                current.update(state="pending", finished=now(), error="interrupted; redone on the next run")
        except DiskFull as exc:  # a manifest save: the last saved manifest stands, resumable
            full = exc
    # From here a signal is only counted: the manifest's run and the summary are always written.
    stop.hold()
    interrupted = interrupted or stop.requested
    run.update(finished=now(), outcome="disk full" if full else "interrupted" if interrupted else "completed",
               seconds=time.perf_counter() - t_start, families=cache.stats)
    summary: dict[str, Any] = {}
    try:
        manifest.save()
        summary = build_summary(manifest, run, batch_dir)
        atomic_replace(batch_dir / SUMMARY_JSON, to_json(summary))
        atomic_replace(batch_dir / SUMMARY_MD, summary_markdown(summary).encode())
    except DiskFull as exc:
        full = full or exc
        summary = summary or build_summary(manifest, run, batch_dir)
        console.print(f"[red]the summary could not be written[/]: {exc}")
    for table in batch_summary_tables(summary):
        console.print(table)
    return Outcome(batch_dir, manifest.data, summary, interrupted or stop.requested, full)


def _job_line(rec: dict, batch_dir: Path) -> str:
    if rec["state"] == "done":
        load = f", load {rec['load_paid']:.1f} s" if rec["load_paid"] else ", models resident"
        return f"[green]done[/] {rec['id']} in {rec['seconds']:.1f} s{load} -> {batch_dir / rec['out_dir']}"
    return f"[red]failed[/] {rec['id']} (exit {rec['exit_code']}): {rec['error']}"
