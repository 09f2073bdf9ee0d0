"""Taking a job off the queues: one atomic move from a queue's consumption end (the end opposite
the producers' push, --push-end) into the worker's own processing list.

With CLIENT commands (a plain redis-server): LMOVE from each queue in --queues order, so the first
listed wins when several have jobs; when all are empty, one BLMOVE per queue, each on its own
connection, waits on all at once, and CLIENT UNBLOCK ends the other waits when one gets a job (a
job another wait took in the same instant goes back where it was): no polling interval.

Managed Redis services (Upstash and the like) may refuse CLIENT commands. Then the worker says so
at start and waits with BLMOVE on one queue at a time, POLL_SECONDS each, in turn: a job on another
queue waits up to POLL_SECONDS * (queues - 1) longer; everything else works the same.
"""

from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Callable

import redis

from ourvidz.worker.keys import processing_key
from ourvidz.worker.store import connect

BLOCK_SECONDS = 30  # a BLMOVE's own limit; waits normally end with a job or CLIENT UNBLOCK
POLL_SECONDS = 1.0  # each queue's turn when CLIENT commands are refused


def client_commands(r: redis.Redis) -> str | None:
    """None if this connection may use CLIENT ID and CLIENT UNBLOCK; else the server's refusal."""
    try:
        r.client_unblock(r.client_id())  # unblocking a client that is not blocked: a no-op
        return None
    except redis.ResponseError as exc:
        return str(exc).splitlines()[0][:200]


class Taker:
    def __init__(self, r: redis.Redis, url: str, worker_id: str, queues: list[str], ends: dict[str, str],
                 give_back, log: Callable[[str], None]):
        self.r, self.worker_id, self.queues, self.ends, self.give_back = r, worker_id, queues, ends, give_back
        self.refused = client_commands(r)
        self.turn = 0
        if self.refused:
            log(f"Redis refuses CLIENT commands ({self.refused}): waiting on one queue at a time, "
                f"{POLL_SECONDS:g} s each, instead of on all at once")
            return
        self.blockers = [connect(url, single_connection_client=True, socket_timeout=BLOCK_SECONDS + 15)
                         for _ in queues]
        self.blocker_ids = [0] * len(queues)
        self.pool = ThreadPoolExecutor(len(queues), thread_name_prefix="ourvidz-take")

    def close(self) -> None:
        if not self.refused:
            self.pool.shutdown(wait=False, cancel_futures=True)

    def _move(self, conn, q: str, block: float | None):
        args = (q, processing_key(self.worker_id, q), self.ends[q], "LEFT")
        return conn.lmove(*args) if block is None else conn.blmove(q, args[1], block, args[2], "LEFT")

    def take(self, stopping: Callable[[], bool], deadline_passed: Callable[[], bool],
             block: bool = True) -> tuple[str, bytes] | None:
        """(queue, payload) of the next job, or None when stopping or past the deadline; block=False:
        only a job already waiting, else None at once."""
        for q in self.queues:
            raw = self._move(self.r, q, None)
            if raw is not None:
                return q, raw
        if not block:
            return None
        if self.refused:
            q = self.queues[self.turn % len(self.queues)]
            self.turn += 1
            raw = None if stopping() or deadline_passed() else self._move(self.r, q, POLL_SECONDS)
            return (q, raw) if raw is not None else None
        futures = [self.pool.submit(self._wait_on, i) for i in range(len(self.queues))]
        try:
            while not stopping() and not deadline_passed():
                if wait(futures, timeout=0.25, return_when=FIRST_COMPLETED).done:
                    break
        finally:
            while not all(f.done() for f in futures):
                for i, f in enumerate(futures):
                    if not f.done() and self.blocker_ids[i]:
                        self.r.client_unblock(self.blocker_ids[i])  # its BLMOVE returns as if timed out
                wait(futures, timeout=0.2)
        got = [(q, f.result()) for q, f in zip(self.queues, futures) if not f.exception() and f.result() is not None]
        keep = got[0] if got and not stopping() else None
        for q, raw in got:
            if (q, raw) != keep:
                self.give_back(q, raw)
        errors = [f.exception() for f in futures if f.exception()]
        if errors and keep is None:
            raise errors[0]
        return keep

    def _wait_on(self, i: int) -> bytes | None:
        conn = self.blockers[i]
        self.blocker_ids[i] = conn.client_id()
        return self._move(conn, self.queues[i], BLOCK_SECONDS)
