"""The worker's heartbeat and the fleet's recovery: each worker renews its heartbeat from a
background thread, watches its own job's time limit, and puts the jobs of workers whose heartbeat
expired back on their queues (or fails them once out of attempts). A mixin of Worker: the state
is the worker's (its Redis client, scripts, queues, current job)."""

from __future__ import annotations

import json
import os
import socket
import time

import redis

from ourvidz.errors import EXIT_GENERATION
from ourvidz.jsonio import short
from ourvidz.worker import attempts
from ourvidz.worker.keys import WORKERS, heartbeat_key, processing_key
from ourvidz.worker.store import record, text


class Recovery:
    def _beat(self) -> None:
        job = self.current
        state = {"beat": time.time(), "jobs_done": self.jobs_done, "job": job and job[0],
                 "job_type": job and job[1], "job_started_at": job and job[2]}
        info = {"host": socket.gethostname(), "pid": os.getpid(), "device": str(self.cache.device),
                "queues": self.queues, "take_ends": self.take_ends, "started_at": self.started_at}
        with self.r.pipeline(transaction=False) as pipe:
            pipe.set(heartbeat_key(self.id), json.dumps(state), px=int(self.ttl * 1000))
            pipe.hset(WORKERS, self.id, json.dumps(info))  # again each beat: back if given up on
            pipe.execute()

    def _beat_loop(self) -> None:
        next_reap = time.monotonic() + self.ttl
        while not self._beats.wait(self.ttl / 3):
            try:
                self._watchdog()
                self._beat()
                if time.monotonic() >= next_reap:
                    next_reap = time.monotonic() + self.ttl
                    self.reap()
                self._outage.ok()
            except Exception as exc:  # noqa: BLE001 - the heartbeat must outlive anything
                self._outage.failed(exc)  # rate-limited: one line, then one every 30 s, then "back"

    def _watchdog(self) -> None:
        """A job stuck past --job-timeout with no step to stop it at (a hung kernel, a hung load):
        hand it back (an attempt counted) and exit, so a supervisor restarts a healthy process."""
        job = self.current
        if not (job and self.job_timeout):
            return
        over = time.time() - job[2] - self.job_timeout
        if over > max(30.0, 0.1 * self.job_timeout):
            self.log(f"{short(job[0])}: {over:.0f} s past --job-timeout {self.job_timeout:g} s and not stopping; "
                     "handing it back and exiting")
            self.release("job past --job-timeout")
            os._exit(EXIT_GENERATION)

    def reap(self, startup: bool = False) -> None:
        """Put the jobs of workers whose heartbeat expired back on their queues."""
        registry = {text(w): json.loads(info) for w, info in self.r.hgetall(WORKERS).items()}
        lists = {w: set(info.get("queues", [])) for w, info in registry.items()}
        if startup:  # also lists of workers in no registry (one that crashed at the worst moment)
            for key in self.r.scan_iter(match="ourvidz:processing:*", count=1000):
                wid, q = text(key).split(":", 3)[2:]
                lists.setdefault(wid, set()).add(q)
        for wid, queues in lists.items():
            ends = registry.get(wid, {}).get("take_ends")
            if wid != self.id and self._requeue(wid, queues, False, f"worker {wid} stopped (heartbeat expired)", ends):
                if not self.r.exists(heartbeat_key(wid)):
                    self.r.hdel(WORKERS, wid)

    def release(self, reason: str) -> None:
        """Put this worker's unacknowledged jobs back at once (an interrupt; a job in hand at exit)."""
        try:
            self._requeue(self.id, self.queues, True, f"{reason} ({self.id})")
        except redis.RedisError as exc:
            self.log(f"could not hand jobs back ({exc}); another worker will once the heartbeat expires")

    def _requeue(self, wid: str, queues, force: bool, reason: str, ends: dict | None = None) -> bool:
        for q in sorted(queues):
            res = self.scripts["reap"](keys=[heartbeat_key(wid), processing_key(wid, q), q],
                                       args=[int(force), self.max_attempts, time.time(), reason, self.result_ttl,
                                             self._refill(q, ends)])
            if res is None:
                return False  # alive
            if res[0]:
                self.log(f"{reason}: {res[0]} job(s) back on {q}")
            for raw in res[1:]:
                job_id = _job_id(raw)
                self.log(f"{job_id}: failed: {reason}; out of attempts")
                self._callback(job_id, "failed", [], (record(self.r, job_id) or {}).get("error", reason))
        return True

    def _deregister(self) -> None:
        try:
            self.r.delete(heartbeat_key(self.id))
            self.r.hdel(WORKERS, self.id)
        except redis.RedisError:
            pass


def _job_id(raw: bytes) -> str:
    return attempts.read_payload(raw)[2]
