"""Jobs' tails (saving media, sidecars, report.json: ourvidz.job.PendingJob.finish) in one background
thread, so the GPU generates job k+1 while the CPU encodes job k's MP4 or PNGs.

At most one tail is pending: the caller collects it (waits for it and records its result) before it
submits the next one, so job k+2's generation waits for job k's tail, memory stays bounded to one
generated job, and results are recorded in order. Nothing is ever abandoned: whatever stops the
caller (a signal, an exception), it collects the pending tail before it exits.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as WaitTimedOut
from typing import Any


class Tail:
    """One job's tail, submitted to a TailWriter: `tag` is the caller's (its record of the job)."""

    def __init__(self, tag: Any, pending, pool: ThreadPoolExecutor):
        self.tag, self.plan = tag, pending.plan
        self.started: float | None = None
        self.ended: float | None = None
        self._waited_from: float | None = None  # when the caller began to wait for it
        self._future: Future = pool.submit(self._run, pending)

    def _run(self, pending):
        self.started = time.perf_counter()
        try:
            return pending.finish(overlap=self._overlap)
        finally:
            self.ended = time.perf_counter()

    def _overlap(self) -> float:
        """The seconds this tail has run beside the caller's own work (the next job), not waited for."""
        end = time.perf_counter()
        if self._waited_from is not None:
            end = min(end, self._waited_from)
        return round(max(0.0, end - (self.started or end)), 3)

    def done(self) -> bool:
        return self._future.done()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until it is written or failed (whether it is). Interruptible: a signal handler's
        exception (KeyboardInterrupt) comes out of the wait, and the tail goes on."""
        if self._waited_from is None:
            self._waited_from = time.perf_counter()
        try:
            self._future.exception(timeout)
        except WaitTimedOut:
            return False
        return True

    def error(self) -> BaseException | None:
        """What the tail raised (None: it wrote everything); waits for it."""
        self.wait()
        return self._future.exception()

    def result(self):
        """The JobResult, its files written; the tail's exception if it failed. Waits for it."""
        self.wait()
        return self._future.result()


class TailWriter:
    """The one background thread; `pending` is the tail submitted and not yet collected."""

    def __init__(self):
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ourvidz-tail")
        self.pending: Tail | None = None

    def submit(self, tag: Any, pending) -> Tail:
        if self.pending is not None:
            raise RuntimeError("a job's tail is still pending: collect() it first")
        self.pending = Tail(tag, pending, self._pool)
        return self.pending

    def collect(self) -> Tail | None:
        """The pending tail once finished (its result() and error() then answer at once), no longer
        pending; None if there is none. A KeyboardInterrupt during the wait leaves it pending."""
        tail = self.pending
        if tail is not None:
            tail.wait()
            self.pending = None
        return tail

    def close(self) -> None:
        """The thread ends, once a tail still running has (callers collect theirs first; one left
        pending by a second Ctrl-C is finished here, never cut off half-written)."""
        self._pool.shutdown(wait=True)

    def __enter__(self) -> TailWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
