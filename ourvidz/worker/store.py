"""What the queue keeps in Redis, read and written outside the worker loop: connecting, a job's
record (ourvidz:job:<id>), enqueueing as the production producers do, and the queue overview.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from ourvidz.errors import BadInput, ServiceError
from ourvidz.redact import mask_url
from ourvidz.worker.keys import DEFAULT_QUEUES, WORKERS, heartbeat_key, job_key, processing_key

JSON_FIELDS = ("files", "assets", "timings", "reference", "ignored", "unknown", "stored")


def text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def enqueue(client, job: dict[str, Any], queue: str, push_end: str = "right") -> None:
    """Record the job as queued and push it at the producers' end (--push-end), in one transaction."""
    fields = {"id": job["id"], "type": job["type"], "state": "queued", "queue": queue, "attempts": 0,
              "queued_at": time.time(), "prompt": job["prompt"][:500]}
    with client.pipeline(transaction=True) as pipe:
        pipe.hset(job_key(job["id"]), mapping=fields)
        (pipe.rpush if push_end == "right" else pipe.lpush)(queue, json.dumps(job))
        pipe.execute()


def record(client, job_id: str) -> dict[str, Any] | None:
    """A job's record (ourvidz:job:<id>), JSON fields decoded; None if there is none."""
    data = {text(k): text(v) for k, v in client.hgetall(job_key(job_id)).items()}
    if not data:
        return None
    for name in JSON_FIELDS:
        if data.get(name):
            data[name] = json.loads(data[name])
    return data


STATUS_ORDER = ("id", "type", "state", "queue", "worker", "attempts", "progress", "error", "note", "prompt",
                "queued_at", "started_at", "finished_at", "timings", "seed", "era", "user_id", "reference",
                "compel_weights", "ignored", "unknown", "out_dir", "assets", "files", "stored", "callback")


def describe(rec: dict[str, Any]) -> str:
    """A record as `ourvidz status` prints it: set fields only, times local and relative."""
    lines = []
    for key in sorted(rec, key=lambda k: STATUS_ORDER.index(k) if k in STATUS_ORDER else len(STATUS_ORDER)):
        value = rec[key]
        if value in ("", None, []):
            continue
        if key.endswith("_at"):
            value = f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(float(value)))} ({time.time() - float(value):.0f} s ago)"
        elif key == "timings":
            value = ", ".join(f"{k} {v:.2f} s" for k, v in value.items())
        elif isinstance(value, list):
            value = "".join(f"\n  {v}" for v in value)
        lines.append(f"{key}: {value}")
    return "\n".join(lines)


def safe_url(url: str) -> str:
    """The URL with every secret masked (user:pass@, ?password=, tokens), for messages."""
    return mask_url(url)


def connect(url: str, **kwargs) -> redis.Redis:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_keepalive=True, **kwargs)
        client.ping()
    except ValueError as exc:
        raise BadInput(f"--redis {safe_url(url)}: {exc}") from None
    except redis.RedisError as exc:
        raise ServiceError(f"cannot reach Redis at {safe_url(url)}: {exc}") from None
    return client


def overview(client: redis.Redis, queues: list[str] | None = None) -> dict[str, Any]:
    """Queue depths, registered workers (alive or not, with their current job), jobs running."""
    now = time.time()
    workers, names = [], set(queues or DEFAULT_QUEUES)
    for wid, info in sorted(client.hgetall(WORKERS).items()):
        wid, info = text(wid), json.loads(info)
        beat = client.get(heartbeat_key(wid))
        state = json.loads(beat) if beat else {}
        names.update(info.get("queues", []))
        held = sum(client.llen(processing_key(wid, q)) for q in info.get("queues", []))
        workers.append({"id": wid, "alive": bool(beat), "beat_age": now - state["beat"] if beat else None,
                        "job": state.get("job"), "job_type": state.get("job_type"),
                        "job_seconds": now - state["job_started_at"] if state.get("job") else None,
                        "jobs_done": state.get("jobs_done", 0), "held": held, **info})
    return {"queues": {q: client.llen(q) for q in sorted(names)}, "workers": workers,
            "running": sum(1 for w in workers if w["alive"] and w["job"])}
