"""Commands on several GPUs of one host (`--gpus N`): the ranks start once, load their models once,
and run every job of the command together (ourvidz.distributed spreads one job over them).

Rank 0 is the command as it runs on one GPU (it plans, reads the queue, writes files, manifests
and reports); for each job it sends the plan to the other ranks, which follow: they run the same
job with their share of the work and write nothing. The plans travel over a CPU (gloo) control
group that never times out while rank 0 waits for work (a worker can sit idle for hours); the
work itself goes over NCCL. A rank that dies ends the command with one clear error
(ourvidz.distributed.launch), never a hang.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Callable

import torch.distributed as dist

from ourvidz.distributed import ParallelContext, launch, split_for_good
from ourvidz import job
from ourvidz.job import JobResult
from ourvidz.plan import one_gpu_reason

_STOP = "stop"


class RankJobs:
    """The jobs of one command on the ranks of ctx: rank 0 calls run() per job and close() at the
    end; every other rank calls follow()."""

    def __init__(self, ctx: ParallelContext):
        self.ctx = ctx
        self.group = dist.new_group(backend="gloo", timeout=timedelta(days=30)) if ctx.active else None

    def _send(self, obj) -> None:
        if self.group is not None:
            dist.broadcast_object_list([obj], src=0, group=self.group)

    def run(self, plan, cache, on_step=None, on_phase=None, defer_tail: bool = False) -> JobResult | job.PendingJob:
        """Rank 0: the job on every rank; the files are rank 0's. A job its family says does not
        scale (ourvidz.plan.one_gpu_reason: one-frame Wan) runs here alone, as on one GPU, and the
        report says why; the other ranks wait for the next job. defer_tail: rank 0 writes the files
        when the PendingJob's finish() is called (in batch and the worker, in a background thread,
        while every rank generates the next job); the other ranks have nothing to write."""
        if self.ctx.active:
            why = one_gpu_reason(plan.preset, self.ctx.world)
            resident = cache.resident.get(plan.preset.family)
            if why and not split_for_good(getattr(getattr(resident, "pipe", None), "transformer", None)):
                plan.note(why)
                return job.run_job(plan, cache, on_step, on_phase, defer_tail=defer_tail)
        self._send(plan)
        return job.run_job(plan, cache, on_step, on_phase, parallel=self.ctx if self.ctx.active else None,
                           defer_tail=defer_tail)

    def close(self) -> None:
        self._send(_STOP)

    def follow(self, cache) -> int:
        """Every rank but 0: run each job rank 0 sends until it says stop; the number run. A job
        that fails here fails on rank 0 too (same plan, same collectives), which records it."""
        done = 0
        while True:
            box: list[Any] = [None]
            dist.broadcast_object_list(box, src=0, group=self.group)
            if box[0] == _STOP:
                return done
            try:
                job.run_job(box[0], cache, None, parallel=self.ctx)
            except Exception:  # noqa: BLE001 - rank 0 reports it; this rank waits for the next job
                pass
            done += 1


def on_ranks(gpus: int, command: Callable[..., Any], make_cache: Callable[[str | None], Any], *args,
             device: str | None = None) -> Any:
    """command(runner, cache, *args) on `gpus` ranks, returning rank 0's result. runner(plan, cache,
    on_step, on_phase=None, defer_tail=False) runs one job on all ranks; make_cache(device) builds a
    rank's model cache (both must pickle: module-level functions, functools.partial). One GPU: here,
    in this process, with run_job. `device` "cpu" puts the ranks on the CPU (gloo): tests, and
    machines without GPUs."""
    if gpus == 1:
        return command(job.run_job, make_cache(None), *args)  # looked up now: tests substitute it
    # (A command whose every job runs on one GPU anyway is started on one by its caller: generate.)
    device_type = "cpu" if device and device.startswith("cpu") else None
    return launch(gpus, _rank, command, make_cache, args, device_type=device_type)


def _rank(ctx: ParallelContext, command, make_cache, args):
    jobs = RankJobs(ctx)
    cache = make_cache(str(ctx.device))
    if not ctx.is_main:
        jobs.follow(cache)
        return None
    try:
        return command(jobs.run, cache, *args)
    finally:
        jobs.close()
