"""`ourvidz batch FILE`: many jobs in one process, models loaded once, nothing lost.

The whole file is read and every job planned before any model loads. The batch folder holds
manifest.json, the state of every job (pending, running, done, failed), rewritten atomically
after each change; running the same command again resumes from it. Jobs run grouped by model
family to avoid switches (ourvidz.batch_plan: planning, run_order). A failed job is recorded and
the batch goes on. Each job's files are written while the next job generates (ourvidz.tails).
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
from ourvidz.batch_plan import plan_units, run_order
from ourvidz.jobfile import file_digest, read_job_file
from ourvidz.layout import MANIFEST, SUMMARY_JSON, SUMMARY_MD
from ourvidz.manifest import (Manifest, batch_lock, build_summary, clear_partial, expected_writes, new_record, now,
                              summary_markdown)
from ourvidz.outputs import atomic_replace, to_json


class BatchFailed(OurvidzError):
    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


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
        if self._critical:  # within hold() or another critical(): it stays so, and raises nothing here
            yield
            return
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

    def add(self, rec: dict, overlapped: float = 0.0) -> None:
        """overlapped: the seconds its tail ran beside the next job (they cost the batch nothing)."""
        seconds = rec["seconds"] - (rec["load_paid"] or 0.0) - overlapped
        self.seen.setdefault(rec["job_type"], []).append(max(0.0, seconds))

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
    from ourvidz.tails import TailWriter
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
    if cache.random_weights:
        console.print("[bold yellow]random weights[/] (the full-size architectures with random values: speed tests)")
    elif cache.demo:
        console.print("[bold yellow]demo: random weights[/] (no models file: the tiny built-in demo models)")
    if done:
        console.print(f"resuming {batch_dir}: {done} of {total} jobs already done, {len(queue)} to run")
    interrupted, current, full = False, None, None
    # Job k's tail (its media, sidecars and report: ourvidz.tails) is written in a background thread
    # while job k+1 generates. It is recorded before job k+1 is, and before the run ends, whatever
    # ends it: a job is marked done only once its files are written.
    tails = TailWriter()

    def record(rec: dict, result, error: Exception | None, seconds: float, avoided: float) -> str:
        """One job's outcome into the manifest, saved (called under stop.critical()); its line."""
        nonlocal full
        rec["finished"] = now()
        if error is None:
            report = result.report
            rec.update(state="done", files=[str(p.relative_to(batch_dir)) for p in result.files],
                       writes=[], seconds=report["total"], load_paid=sum(report["load"].values()),
                       demo=report["demo"], load_avoided=avoided)
            rates.add(rec, report.get("tail_concurrent_seconds", 0.0))
        else:  # `writes` stays: what it wrote is cleared before the retry
            failure = _failure(error)
            rec.update(state="failed", error=failure[0], exit_code=failure[1], error_class=failure[2],
                       seconds=seconds)
            full = full or (error if isinstance(error, DiskFull) else None)  # every job after would fail so
        manifest.save(cache)
        return _job_line(rec, batch_dir)

    def collect() -> None:
        """The pending tail (the job before the current one) waited for, then recorded."""
        if tails.pending is None:
            return
        tails.pending.wait()  # a second signal may stop the wait; the tail goes on, still pending
        with stop.critical():  # taken off and recorded in one step no signal splits
            tail = tails.collect()
            (rec, i, t0, avoided), error = tail.tag, tail.error()
            line = record(rec, tail.result() if error is None else None, error, tail.ended - t0, avoided)
        progress.finished(line, rates.eta(queue[i + 1:]))

    with BatchProgress(console, total, done) as progress:
        progress.set_eta(rates.eta(queue))
        try:
            stop.release()  # held since the run was recorded; a second signal may stop a job from here
            for i, rec in enumerate(queue):
                if stop.requested:
                    interrupted = True
                    break
                if full:
                    break
                plan, current = plans[rec["id"]], rec
                with stop.critical():
                    rec.update(state="running", attempts=rec["attempts"] + 1, started=now(), finished=None,
                               error=None, exit_code=None, error_class=None, files=[],
                               writes=expected_writes(plan, batch_dir))
                    manifest.save(cache)
                avoided0 = _avoided(cache)
                t0 = time.perf_counter()
                label = f"[{done + i + 1}/{total}] {rec['job_type']}"
                try:
                    generated, error = runner(plan, cache, progress.job(label), progress.phases(label),
                                              defer_tail=True), None
                except Exception as exc:  # an OurvidzError; or a bug in one job: it must not end the night's batch
                    generated, error = None, exc
                avoided = _avoided(cache) - avoided0
                seconds = time.perf_counter() - t0
                collect()  # the job before this one: its tail ran while this one generated
                if error is not None or not hasattr(generated, "finish"):  # failed (or not deferred): recorded now
                    with stop.critical():
                        line = record(rec, generated, error, seconds, avoided)
                    progress.finished(line, rates.eta(queue[i + 1:]))
                elif full:  # the job before filled the disk: this one is not saved, and redone next time
                    rec.update(state="pending", finished=now(), error="not saved (the disk filled up); redone on "
                                                                      "the next run")
                else:
                    tails.submit((rec, i, t0, avoided), generated)  # no longer current: the pending tail's
                current = None
            collect()
        except KeyboardInterrupt:
            interrupted = True
            if current is not None and current["state"] == "running" and not (tails.pending and
                                                                              tails.pending.tag[0] is current):
                current.update(state="pending", finished=now(), error="interrupted; redone on the next run")
        except DiskFull as exc:  # a manifest save: the last saved manifest stands, resumable
            full = exc
        finally:
            # Whatever ended the loop (a signal, an exception), the pending tail is finished and recorded
            # first: never abandoned half-written. From here a signal is only counted.
            stop.hold()
            try:
                collect()
            except DiskFull as exc:
                full = full or exc
            finally:
                tails.close()
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


def _avoided(cache) -> float:
    return sum(s["avoided_seconds"] for s in cache.stats.values())


def _failure(exc: Exception) -> tuple[str, int, str]:
    """A failed job's error, exit code and error class, as the manifest records them."""
    if isinstance(exc, OurvidzError):
        return str(exc), exc.exit_code, type(exc).__name__
    return f"unexpected {one_line(exc)}", EXIT_BUG, "bug"


def _job_line(rec: dict, batch_dir: Path) -> str:
    if rec["state"] == "done":
        load = f", load {rec['load_paid']:.1f} s" if rec["load_paid"] else ", models resident"
        return f"[green]done[/] {rec['id']} in {rec['seconds']:.1f} s{load} -> {batch_dir / rec['out_dir']}"
    return f"[red]failed[/] {rec['id']} (exit {rec['exit_code']}): {rec['error']}"
