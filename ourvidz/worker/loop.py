"""`ourvidz worker`: production jobs from Redis lists, run with resident models (one ModelCache per
process, the one generate and batch use). The key layout is in ourvidz.worker.keys.

Taking (ourvidz.worker.take): an atomic move from each queue's consumption end, the one opposite
the producers' push (--push-end: production RPUSHes since 2025-08-16, so workers take from the
left), so every list is first in, first out; one wait on all queues at once, or, where Redis
refuses CLIENT commands, one queue at a time. A job is prepared (reference fetched, plan made:
ourvidz.worker.prepare) before any model loads, and delivered (thumbnails, --store upload, the
signed callback: ourvidz.worker.deliver, upload, callback) before it is recorded done
(ourvidz.worker.results). A job's files are written in the background while the next job already
waiting generates (ourvidz.tails); it is recorded before that job is, and before the worker exits.

Every state change is one Lua call: starting an attempt; recording a result together with the
acknowledgement (LREM from the processing list), only by the worker that holds the job's current
attempt, so a worker given up on that finishes anyway records nothing; putting a dead worker's
jobs back on the consumption end of their queues (they were next, so they stay next) or, once
out of attempts, failing them with the last error.
"""

from __future__ import annotations

import functools
import os
import secrets
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import redis

from ourvidz import layout
from ourvidz.errors import BadInput, ServiceError
from ourvidz.http_post import check_callback_url
from ourvidz.jsonio import short
from ourvidz.redact import mask_text, url_secrets
from ourvidz.tails import TailWriter
from ourvidz.worker import attempts, callback
from ourvidz.worker.keys import (
    DEFAULT_QUEUES, DEFAULT_URL, RESULT_TTL, job_key, processing_key, push_ends, take_end,
)
from ourvidz.worker.results import InHand, Results, _flat
from ourvidz.worker.store import connect, safe_url, text
from ourvidz.worker.take import Taker
from ourvidz.worker.recovery import Recovery
from ourvidz.worker.transitions import FINISH, GIVE_BACK, MINE, REAP, START

REDIS_PATIENCE = 300  # how long a worker rides out a Redis outage before exiting
JOB_TIMEOUT = 1800  # --job-timeout's default, seconds

class Worker(Recovery, Results):
    def __init__(self, url: str = DEFAULT_URL, *, queues=DEFAULT_QUEUES, out: Path = layout.ROOT, models=None,
                 demo: bool = False, device: str | None = None, vram_budget: float | None = None,
                 callback_url: str | None = None, max_jobs: int | None = None, idle_exit: float | None = None,
                 heartbeat_ttl: float = 15, max_attempts: int = 3, presets_dir=None, result_ttl: int = RESULT_TTL,
                 log: Callable[[str], None] | None = None, push_end: str | None = None, store: str | None = None,
                 reference_root: Path | None = None, job_timeout: float | None = JOB_TIMEOUT):
        if not queues:
            raise BadInput("--queues: name at least one queue")
        if heartbeat_ttl < 1 or max_attempts < 1:
            raise BadInput("--heartbeat-ttl and --max-attempts must be at least 1")
        if job_timeout is not None and job_timeout <= 0:
            raise BadInput(f"--job-timeout must be more than 0 seconds (got {job_timeout:g})")
        if callback_url:
            check_callback_url(callback_url, "--callback-url")  # http(s) only: never file:// or the like
        host = "".join(c if c.isalnum() or c in ".-" else "-" for c in socket.gethostname())
        self.id = f"{host}-{os.getpid()}-{secrets.token_hex(2)}"
        self.url, self.queues, self.out, self.presets_dir = url, list(queues), Path(out), presets_dir
        self.cache_args = {"models_file": models, "demo": demo, "device": device, "vram_budget_gb": vram_budget}
        self.callback_url, self.max_jobs, self.idle_exit = callback_url, max_jobs, idle_exit
        self.credentials = callback.Credentials.from_env()  # never logged, never recorded
        self.ends = push_ends(push_end, self.queues)
        self.take_ends = {q: take_end(e) for q, e in self.ends.items()}
        self.reference_root = Path(reference_root) if reference_root else None
        self.store = None
        if store:
            from ourvidz.worker.upload import ObjectStore

            self.store = ObjectStore(store)
        self.ttl, self.max_attempts, self.result_ttl = heartbeat_ttl, max_attempts, result_ttl
        self._log = log or functools.partial(print, flush=True)
        self._secrets = url_secrets(url) + url_secrets(callback_url)  # every log line is masked
        self.job_timeout = job_timeout
        self._outage = attempts.OutageLog(self.log, "heartbeat")
        self.stopping = False
        self.current: tuple[str, str, float] | None = None  # job id, type, start time
        self.jobs_done = 0
        self.started_at = time.time()
        self._beats = threading.Event()
        self._callbacks: list[threading.Thread] = []
        self.tails = TailWriter()  # the job taken before the current one, its files being written

    def log(self, message: str) -> None:
        self._log(mask_text(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}", self._secrets))

    # ---------------------------------------------------------------- lifecycle
    def run(self, runner=None, cache=None) -> int:
        """Take and run jobs until stopped (signal, --max-jobs, --idle-exit); the number handled."""
        from ourvidz.model_cache import ModelCache
        from ourvidz.families.weights import token_counter

        self.connect()
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BadInput(f"--out {self.out}: cannot create it: {exc.strerror}") from None
        self.cache = cache or ModelCache(**self.cache_args)
        self.runner = runner  # --gpus: each job on the ranks of ourvidz.ranks; else run_job here
        self.counter = token_counter(self.cache_args["models_file"], self.cache_args["demo"])
        if self.store:
            self.store.check()
        self.taker = Taker(self.r, self.url, self.id, self.queues, self.take_ends, self._give_back, self.log)
        self._beat()
        self.reap(startup=True)
        beats = threading.Thread(target=self._beat_loop, name="ourvidz-heartbeat", daemon=True)
        beats.start()
        previous = self._install_signals()
        self.log(f"worker {self.id}: queues {', '.join(f'{q} (taken from the {self.take_ends[q].lower()})' for q in self.queues)}; "
                 f"device {self.cache.device}; outputs in {self.out}"
                 + (f", uploaded to {self.store.shown}" if self.store else "") + f"; heartbeat {self.ttl:g} s"
                 + (f"; callbacks {'signed' if self.credentials.secret else 'unsigned'}" if self.callback_url else "")
                 + (" (demo models)" if self.cache.demo else ""))
        try:
            self._loop()
        except KeyboardInterrupt:
            self.tails.close()  # a tail still writing ends first: nothing is handed back half-written
            self.release("worker interrupted")
            raise
        finally:
            self.tails.close()
            self._beats.set()
            beats.join(timeout=5)
            for thread in self._callbacks:
                thread.join(timeout=60)
            self.release("worker stopped")  # a no-op unless a job is still in hand
            self._deregister()
            self.taker.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        self.log(f"worker {self.id}: stopped after {self.jobs_done} job(s)")
        return self.jobs_done

    def connect(self) -> None:
        self.r = connect(self.url, socket_timeout=30)
        try:
            version = text(self.r.info("server").get("redis_version", "0"))
        except redis.ResponseError:  # a managed service may refuse INFO: LMOVE below says enough
            version = "6.2"
        if tuple(int(x) for x in version.split(".")[:2] if x.isdigit()) < (6, 2):
            raise ServiceError(f"Redis {version} at {safe_url(self.url)} lacks BLMOVE; the worker needs 6.2 or later")
        for what, probe in (("Lua scripts (EVAL)", lambda: self.r.eval("return 1", 0)),
                            ("LMOVE", lambda: self.r.lmove("ourvidz:probe", "ourvidz:probe"))):
            try:
                probe()
            except redis.ResponseError as exc:
                raise ServiceError(f"Redis at {safe_url(self.url)} refuses {what} ({str(exc)[:120]}); the worker "
                                   "needs Redis 6.2+ with LMOVE/BLMOVE, EVAL/EVALSHA and lists") from None
        self.scripts = {name: self.r.register_script(src) for name, src in
                        (("start", START), ("finish", FINISH), ("reap", REAP), ("give_back", GIVE_BACK),
                         ("mine", MINE))}

    def _install_signals(self) -> dict:
        if threading.current_thread() is not threading.main_thread():
            return {}

        def on_signal(signum, frame):
            if signum == signal.SIGINT and self.stopping:
                raise KeyboardInterrupt
            if not self.stopping:
                self.stopping = True
                again = "; Ctrl-C again to stop now" if signum == signal.SIGINT else ""
                self.log(f"{signal.Signals(signum).name}: finishing the current job, then exiting{again}")

        return {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}

    def _loop(self) -> None:
        idle_since = time.monotonic()
        try:
            while not self.stopping and not (self.max_jobs and self.jobs_done >= self.max_jobs):
                deadline = idle_since + self.idle_exit if self.idle_exit is not None else None
                # While a job's tail is pending only a job already waiting is taken (no wait): with none,
                # that job is recorded now, not after whatever job comes next.
                took = self._retrying(self._take, deadline, self.tails.pending is None)
                if took:
                    self._handle(*took)
                    self.jobs_done += 1
                    idle_since = time.monotonic()
                elif self.tails.pending is not None:
                    self._settle()
                elif deadline is not None and time.monotonic() >= deadline:
                    self.log(f"idle for {self.idle_exit:g} s: exiting")
                    return
        except ServiceError:
            self._settle(record=False)  # Redis is gone: nothing more can be recorded
            raise
        finally:
            self._settle()  # stopped (signal, --max-jobs, --idle-exit, Ctrl-C): the job in hand recorded first

    def _retrying(self, fn, *args):
        """fn(*args), riding out a Redis outage (redis-py reconnects) for up to REDIS_PATIENCE seconds."""
        delay, give_up = 1.0, None
        while True:
            try:
                return fn(*args)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if give_up is None:
                    give_up = time.monotonic() + REDIS_PATIENCE
                    self.log(f"Redis unreachable ({exc}); retrying for up to {REDIS_PATIENCE} s")
                if time.monotonic() > give_up:
                    raise ServiceError(f"Redis at {safe_url(self.url)} unreachable for {REDIS_PATIENCE} s: {exc}") from None
                if self.stopping and fn == self._take:
                    return None
                time.sleep(delay)
                delay = min(2 * delay, 10.0)

    # ---------------------------------------------------------------- taking a job
    def _take(self, deadline: float | None, block: bool = True) -> tuple[str, bytes] | None:
        held = self.tails.pending.tag.queue if self.tails.pending else None  # its payload is in its list
        with self.r.pipeline(transaction=False) as pipe:
            for q in self.queues:
                pipe.llen(processing_key(self.id, q))
            lengths = pipe.execute()
        if any(n > int(q == held) for q, n in zip(self.queues, lengths)):  # a move whose reply a dropped connection lost
            self._settle()  # the job in hand recorded first: release() hands back all the lists hold
            self.release("job taken but its reply lost")
        return self.taker.take(lambda: self.stopping, lambda: deadline is not None and time.monotonic() >= deadline,
                               block=block)

    def _refill(self, queue: str, ends: dict | None = None) -> str:
        """The push that puts a job back on the consumption end (it was next, it stays next)."""
        return "RPUSH" if (ends or self.take_ends).get(queue, "LEFT") == "RIGHT" else "LPUSH"

    def _give_back(self, queue: str, raw: bytes) -> None:
        self.scripts["give_back"](keys=[processing_key(self.id, queue), queue], args=[raw, self._refill(queue)])

    # ---------------------------------------------------------------- running it
    def _handle(self, queue: str, raw: bytes) -> None:
        from ourvidz.job import run_job
        from ourvidz.worker.prepare import prepare

        spec, problem, job_id = attempts.read_payload(raw, self.presets_dir)
        now, dirs = time.time(), attempts.JobDirs(self.out, job_id) if spec else None
        fields = {"id": job_id, "queue": queue, "started_at": now, "progress": ""}
        if spec:
            fields |= spec.record_fields() | {"out_dir": str(dirs.final.resolve())}
        attempt = self._retrying(self.scripts["start"], [job_key(job_id)], [self.id, *_flat(fields)])
        if attempt < 0:
            self.log(f"{short(job_id)}: already {'completed' if attempt == -1 else 'running'}; dropping the repeated payload")
            self._retrying(self.r.lrem, processing_key(self.id, queue), 1, raw)
            return
        label = f"{short(job_id)} ({spec.job_type if spec else 'malformed'})"
        self.current = (job_id, spec.job_type if spec else "", now)
        self._beat()
        self.log(f"{label}: taken from {queue}, attempt {attempt}/{self.max_attempts}")
        job, generated = InHand(queue, raw, job_id, attempt, label, spec, dirs), None
        try:
            if problem:
                raise problem
            job.result = dirs.existing()  # promoted by an earlier attempt that died before recording it
            if job.result is None:
                job.mine = dirs.fresh(self.id, attempt)
                plan = prepare(spec, out_dir=job.mine, presets_dir=self.presets_dir, counter=self.counter,
                               demo=self.cache.source(spec.preset.family).is_demo, reference_root=self.reference_root)
                on_step = attempts.on_step_with_deadline(self._progress(job_key(job_id)), self.job_timeout, job_id)
                generated = (self.runner or run_job)(plan, self.cache, on_step, defer_tail=True)
        except Exception as exc:  # noqa: BLE001 - recorded as InHand.failed says
            job.failed(exc, self.max_attempts)
        finally:
            self.current = None
        self._settle()  # the job taken before this one, its files written while this one generated: first
        if generated is not None:  # its files written in the background (only into its attempt's folder)
            self.tails.submit(job, generated)
        else:
            self._conclude(job)

    def _progress(self, key: str):
        last = [0.0]

        def on_step(done: int, total: int) -> None:
            if done == total or time.monotonic() - last[0] >= 1.0:
                last[0] = time.monotonic()
                try:
                    self.r.hset(key, "progress", f"{done}/{total} steps")
                except redis.RedisError:
                    pass  # progress is a nicety; the result is what must get through

        return on_step


def stderr_line(line: str) -> None:
    """The worker's log lines: stderr, one a line, flushed (a module function: ranks pickle it)."""
    print(line, file=sys.stderr, flush=True)


def run_on_ranks(gpus: int, worker_args: dict) -> int:
    """`ourvidz worker --gpus N`: this worker's jobs each on N GPUs (ourvidz.ranks); rank 0 is the
    worker. A rank that dies ends the worker with one error; the job it held goes back on its
    queue when the heartbeat expires (another worker's sweep)."""
    from ourvidz.ranks import on_ranks

    cache_args = {k: worker_args.get(k) for k in ("models", "demo", "vram_budget")}
    return on_ranks(gpus, _worker_on_rank0, functools.partial(_rank_cache, **cache_args), worker_args,
                    device=worker_args.get("device"))


def _rank_cache(device, models=None, demo=False, vram_budget=None):
    from ourvidz.model_cache import ModelCache

    return ModelCache(models_file=models, demo=demo, device=device, vram_budget_gb=vram_budget)


def _worker_on_rank0(runner, cache, worker_args: dict) -> int:
    return Worker(**worker_args).run(runner=runner, cache=cache)
