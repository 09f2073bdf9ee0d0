"""Shared by the fault tests (tests/test_faults_*.py): a real redis-server that can be stopped and
restarted on its port (AOF on or off), real `python -m ourvidz worker --demo` subprocesses, and
the checks that a queue run lost, duplicated or touched nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path


from ourvidz.worker import store
from ourvidz.worker.attempts import ATTEMPTS, MARKER, NAMESPACE
from ourvidz.worker.keys import WORKERS
from servers import RedisServer, free_port, wait_for  # noqa: F401 - the tests import them from here too


def worker_env(base: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OURVIDZ_MODELS", "OURVIDZ_PRESETS", "OURVIDZ_REDIS")}
    return env | {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "HOME": str(base / "home"),
                  "OURVIDZ_CACHE": os.environ.get("OURVIDZ_TEST_CACHE", str(base / "ourvidz-cache"))}


class Fleet:
    """Worker subprocesses on one Redis, each with its own log; restarted workers get new logs."""

    def __init__(self, redis: RedisServer, out: Path, logs: Path, env: dict, args=()):
        self.redis, self.out, self.logs, self.env, self.args = redis, out, logs, env, list(args)
        self.procs: list[subprocess.Popen] = []

    def start(self, *extra: str) -> subprocess.Popen:
        n = len(self.procs)
        cmd = [sys.executable, "-m", "ourvidz", "worker", "--redis", self.redis.url, "--demo", "--out", str(self.out),
               *self.args, *extra]
        self.procs.append(subprocess.Popen(cmd, env=self.env, stdout=subprocess.DEVNULL,
                                           stderr=open(self.logs / f"worker-{n:02d}.log", "ab")))
        return self.procs[-1]

    def alive(self) -> list[subprocess.Popen]:
        return [p for p in self.procs if p.poll() is None]

    def registered(self) -> int:
        try:
            return len(self.redis.client().hgetall(WORKERS))
        except Exception:
            return 0

    def busy(self) -> list[subprocess.Popen]:
        """The live workers whose heartbeat says they are running a job."""
        try:
            r = self.redis.client()
            pids = {json.loads(info)["pid"] for wid, info in r.hgetall(WORKERS).items()
                    if (beat := r.get(f"ourvidz:worker:{store.text(wid)}")) and json.loads(beat).get("job")}
        except Exception:
            return []
        return [p for p in self.alive() if p.pid in pids]

    def log(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.logs.glob("worker-*.log")))

    def record(self, job_id: str) -> dict:
        return store.record(self.redis.client(), job_id) or {}

    def wait_done(self, ids, timeout: float) -> list[dict]:
        def done():
            try:
                records = [self.record(i) for i in ids]
            except Exception:  # Redis restarting
                return None
            return records if all(r.get("state") in ("completed", "failed") for r in records) else None

        try:
            return wait_for(done, timeout, f"{len(ids)} job(s) to finish", interval=0.25)
        except AssertionError:
            states = {}
            for i in ids:
                states[self.record(i).get("state")] = states.get(self.record(i).get("state"), 0) + 1
            raise AssertionError(f"jobs not finished ({states}); worker logs:\n{self.log()[-5000:]}") from None

    def shutdown(self) -> None:
        for p in self.alive():
            p.send_signal(signal.SIGCONT)
            p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def image_job(job_id: str, steps: int = 2, prompt: str = "a lighthouse on a cliff", **config) -> dict:
    """A job as `ourvidz submit` writes it: every value applies (a raw 2025-07 payload's steps would
    not: that era's Wan worker ignored them)."""
    return {"id": job_id, "type": "image_fast", "prompt": prompt, "config": {"sample_steps": steps, "seed": 7, **config},
            "metadata": {"num_images": 1, "submitted_by": "ourvidz submit"}}


def push(client, jobs: list[dict], queue: str = "wan_queue") -> None:
    for job in jobs:
        store.enqueue(client, job, queue)


def snapshot(paths: list[Path]) -> dict[str, tuple]:
    """Foreign files' contents and inodes: what the worker must never touch."""
    return {str(p): (p.read_bytes(), p.stat().st_ino, p.stat().st_mtime_ns) for p in paths}


def check_job_folders(out: Path, records: dict[str, dict]) -> list[Path]:
    """Every completed job: one folder, made once, with exactly the files its record names, from one
    attempt (the marker's). Returns the attempt folders left of completed jobs (a stale attempt killed
    after it wrote again into a folder the winner had removed): harmless, never the job's folder."""
    for job_id, rec in records.items():
        final = out / NAMESPACE / job_id
        if rec.get("state") == "completed":
            marker = json.loads((final / MARKER).read_text())
            assert marker["job"] == job_id
            names = sorted(p.name for p in final.iterdir() if p.name != MARKER)
            assert names == sorted(Path(f).name for f in rec["files"]), (job_id, names, rec["files"])
            assert all(Path(f).parent == final.resolve() for f in rec["files"])
        else:
            assert not final.exists() or (final / MARKER).exists()
    attempts = out / NAMESPACE / ATTEMPTS
    left = [p for p in attempts.iterdir()] if attempts.exists() else []
    return [p for p in left if records.get(p.name, {}).get("state") == "completed" and any(p.iterdir())]
