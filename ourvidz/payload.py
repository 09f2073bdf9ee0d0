"""A queued job's data: the production system's payload (shared/spec/job-types.md, "Queue and
job payload"), read into plan_job's arguments by the worker and written by `ourvidz submit`; the
Redis keys and what `ourvidz status` and `ourvidz queue` read from them; the completion callback.

Keys (the worker that uses them is ourvidz.queue):
  sdxl_queue, wan_queue                the production lists: producers LPUSH, workers take from the right
  ourvidz:processing:<worker>:<queue>  jobs a worker took from <queue> and has not acknowledged; one list
                                       per queue, so a dead worker's job goes back where it came from
  ourvidz:worker:<worker>              its heartbeat, SET PX --heartbeat-ttl, renewed every ttl/3
  ourvidz:workers                      hash worker -> host, pid, device, queues: whose heartbeat to check
  ourvidz:job:<id>                     hash: state (queued, running, completed, failed), worker, attempts,
                                       progress, error, note, out_dir, assets, files, timings, callback

A payload is taken as the web back end wrote it:
    {id, type, prompt, config: {size, sample_steps, sample_guide_scale, frame_num, enhance_prompt,
     expected_time, content_type, file_extension, ...}, user_id, created_at, negative_prompt,
     video_id, image_id, model_variant, bucket, metadata: {num_images, ...}}
Keys not listed here are ignored. Rules:
- config.size is the official Wan tool's "WIDTH*HEIGHT" ("480*832": 480 wide, 832 tall; portrait).
- frame_num: Wan makes 4k+1 frames. Another count is lowered to the 4k+1 below it (83 -> 81),
  which is what the official script did with it (its VAE keeps 1 + (n-1)//4 latent frames:
  the production asked 83 and got 81); the job's record carries a note saying so.
- A value equal to the preset's is the preset's, not an override: the back end always sends the
  full config, and only real overrides should stop --demo shrinking the size.
- negative_prompt is the user's own negative text; the priority-based one is added as usual.
- The seed is config.seed, else the top-level seed, else metadata.seed, else random.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import Any

import redis

from ourvidz.errors import BadInput, ServiceError
from ourvidz.presets import Preset, load_preset

QUEUES = {"sdxl": "sdxl_queue", "wan": "wan_queue"}  # the production routing: by model family
DEFAULT_QUEUES = tuple(QUEUES.values())
DEFAULT_URL = "redis://localhost:6379/0"
WORKERS = "ourvidz:workers"
RESULT_TTL = 7 * 24 * 3600  # finished jobs' records (ourvidz:job:<id>) expire after a week
JSON_FIELDS = ("files", "assets", "timings")
MODEL_VARIANTS = {"sdxl": "lustify_sdxl", "wan": "wan_2_1_t2v_1_3b"}
ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # ids name output folders
SIZE_RE = re.compile(r"\s*(\d+)\s*[*xX]\s*(\d+)\s*")


class MalformedJob(BadInput):
    """A payload the worker cannot run; job_id is what its failure is recorded under."""

    def __init__(self, message: str, job_id: str):
        super().__init__(message)
        self.job_id = job_id


@dataclass
class JobSpec:
    id: str
    job_type: str
    prompt: str
    preset: Preset
    overrides: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    negative: str = ""
    enhance: bool | None = None
    notes: list[str] = field(default_factory=list)
    payload: dict[str, Any] = field(default_factory=dict)


def fallback_id(raw: bytes) -> str:
    """The record name of a payload without a usable id: stable, so a retry finds the same record."""
    return "malformed-" + hashlib.sha256(raw).hexdigest()[:16]


def _id_of(data: dict[str, Any], raw: bytes) -> str:
    value = data.get("id", data.get("job_id", data.get("jobId")))
    if value is None or isinstance(value, bool) or not isinstance(value, (str, int)):
        raise MalformedJob(f"the payload has no usable 'id' (got {value!r})", fallback_id(raw))
    job_id = str(value)
    if not ID_RE.fullmatch(job_id):  # recorded under it all the same: the producer knows it by that id
        raise MalformedJob(f"id {job_id[:80]!r} cannot name an output folder (letters, digits, '.', '_', '-'; "
                           "at most 128)", job_id)
    return job_id


def _int(value: Any, name: str, job_id: str) -> int:
    if isinstance(value, bool):
        pass
    elif isinstance(value, int):
        return value
    elif isinstance(value, float) and value.is_integer():
        return int(value)
    elif isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise MalformedJob(f"{name} must be a whole number (got {value!r})", job_id)


def _float(value: Any, name: str, job_id: str) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise MalformedJob(f"{name} must be a number (got {value!r})", job_id)


def _bool(value: Any, name: str, job_id: str) -> bool:
    if isinstance(value, bool):
        return value
    if value in (0, 1) or (isinstance(value, str) and value.lower() in ("true", "false")):
        return value in (1, "true", "True", "TRUE")
    raise MalformedJob(f"{name} must be true or false (got {value!r})", job_id)


def _mapping(data: dict[str, Any], key: str, job_id: str) -> dict[str, Any]:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MalformedJob(f"'{key}' must be an object (got {type(value).__name__})", job_id)
    return value


def wan_frames(n: int) -> int:
    """The frame count Wan makes when asked for n: the 4k+1 at or below it."""
    return n - (n - 1) % 4


def parse(raw: bytes | str, presets_dir=None) -> JobSpec:
    """A payload -> what plan_job needs. Raises MalformedJob, naming the field, for what cannot run."""
    raw = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else raw
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedJob(f"the payload is not JSON ({exc}): {raw[:80]!r}", fallback_id(raw)) from None
    if not isinstance(data, dict):
        raise MalformedJob(f"the payload is JSON {type(data).__name__}, not an object", fallback_id(raw))
    job_id = _id_of(data, raw)
    job_type = data.get("type", data.get("job_type", data.get("jobType")))
    if not isinstance(job_type, str) or not job_type:
        raise MalformedJob(f"the payload has no job 'type' (got {job_type!r})", job_id)
    prompt = data.get("prompt")
    if not isinstance(prompt, str):
        raise MalformedJob(f"the payload has no 'prompt' text (got {prompt!r})", job_id)
    try:
        preset = load_preset(job_type, presets_dir)
    except BadInput as exc:
        raise MalformedJob(str(exc), job_id) from None
    config, metadata = _mapping(data, "config", job_id), _mapping(data, "metadata", job_id)
    notes: list[str] = []
    asked: dict[str, Any] = {}
    if config.get("size") is not None:
        m = SIZE_RE.fullmatch(str(config["size"]))
        if not m:
            raise MalformedJob(f"config.size must be 'WIDTH*HEIGHT' like '480*832' (got {config['size']!r})", job_id)
        asked["width"], asked["height"] = int(m.group(1)), int(m.group(2))
    if config.get("sample_steps") is not None:
        asked["steps"] = _int(config["sample_steps"], "config.sample_steps", job_id)
    if config.get("sample_guide_scale") is not None:
        asked["guidance"] = _float(config["sample_guide_scale"], "config.sample_guide_scale", job_id)
    if config.get("frame_num") is not None:
        frames = _int(config["frame_num"], "config.frame_num", job_id)
        if preset.family == "wan" and frames > 1 and wan_frames(frames) != frames:
            notes.append(f"config.frame_num {frames} -> {wan_frames(frames)} (Wan makes 4k+1 frames)")
            frames = wan_frames(frames)
        asked["frames"] = frames
    if metadata.get("num_images") is not None:
        asked["num_images"] = _int(metadata["num_images"], "metadata.num_images", job_id)
    enhance = None
    if config.get("enhance_prompt") is not None:
        enhance = _bool(config["enhance_prompt"], "config.enhance_prompt", job_id)
    seed = next((s for s in (config.get("seed"), data.get("seed"), metadata.get("seed")) if s is not None), None)
    if seed is not None:
        seed = _int(seed, "seed", job_id)
    negative = data.get("negative_prompt")
    if negative is not None and not isinstance(negative, str):
        raise MalformedJob(f"negative_prompt must be text (got {type(negative).__name__})", job_id)
    overrides = {k: v for k, v in asked.items() if v != getattr(preset, k)}
    return JobSpec(id=job_id, job_type=job_type, prompt=prompt, preset=preset, overrides=overrides, seed=seed,
                   negative=negative or "", enhance=enhance, notes=notes, payload=data)


def queue_for(preset: Preset) -> str:
    return QUEUES[preset.family]


def build(plan, *, seed: int | None = None, negative: str = "", job_id: str | None = None,
          user_id: str | None = None) -> dict[str, Any]:
    """The payload of a planned job, as the production back end wrote it."""
    p = plan.preset
    job_id = job_id or str(uuid.uuid4())
    config: dict[str, Any] = {
        "size": f"{p.width}*{p.height}", "sample_steps": p.steps, "sample_guide_scale": p.guidance,
        "enhance_prompt": plan.enhance, "expected_time": p.seed_doc.seconds if p.seed_doc else None,
        "content_type": "video" if p.is_video else "image", "file_extension": p.output,
    }
    if p.family == "wan":
        config["frame_num"] = p.frames
    if seed is not None:
        config["seed"] = seed
    return {
        "id": job_id, "type": plan.job_type, "prompt": plan.prompt, "config": config, "user_id": user_id,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "negative_prompt": negative,
        "video_id": job_id if p.is_video else None, "image_id": None if p.is_video else job_id,
        "model_variant": MODEL_VARIANTS[p.family], "bucket": plan.job_type,
        "metadata": {"num_images": p.num_images, "submitted_by": "ourvidz submit"},
    }


# ---------------------------------------------------------------- Redis: keys, records, views
def job_key(job_id: str) -> str:
    return f"ourvidz:job:{job_id}"


def heartbeat_key(worker: str) -> str:
    return f"ourvidz:worker:{worker}"


def processing_key(worker: str, queue: str) -> str:
    return f"ourvidz:processing:{worker}:{queue}"


def text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def enqueue(client, job: dict[str, Any], queue: str) -> None:
    """Record the job as queued and LPUSH it (the production producers' end), in one transaction."""
    fields = {"id": job["id"], "type": job["type"], "state": "queued", "queue": queue, "attempts": 0,
              "queued_at": time.time(), "prompt": job["prompt"][:500]}
    with client.pipeline(transaction=True) as pipe:
        pipe.hset(job_key(job["id"]), mapping=fields)
        pipe.lpush(queue, json.dumps(job))
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
                "queued_at", "started_at", "finished_at", "timings", "seed", "out_dir", "assets", "files", "callback")


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
    """The URL without its password, for messages."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"


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


def overview_table(data: dict[str, Any]):
    from rich.table import Table

    table = Table(title="ourvidz queue", title_justify="left", caption=f"{data['running']} job(s) running")
    for col in ("queue / worker", "state", "heartbeat", "job", "queues", "device"):
        table.add_column(col)
    for q, depth in data["queues"].items():
        table.add_row(q, f"{depth} waiting", "", "", "", "")
    for w in data["workers"]:
        job = f"{w['job']} ({w['job_type']}, {w['job_seconds']:.0f} s)" if w["alive"] and w["job"] else "-"
        state = "alive" if w["alive"] else f"dead, holds {w['held']}: requeued at the next sweep"
        beat = f"{w['beat_age']:.1f} s ago" if w["alive"] else "expired"
        table.add_row(w["id"], state, beat, job, ",".join(w.get("queues", [])), w.get("device", ""))
    return table


# ---------------------------------------------------------------- the completion callback
def callback_body(job_id: str, status: str, assets: list[str], error: str | None) -> dict[str, Any]:
    return {"job_id": job_id, "status": status, "assets": assets, "error_message": error}


def post_callback(url: str, body: dict[str, Any], attempts: int = 3, timeout: float = 10.0) -> str:
    """POST the completion callback; returns what happened, for the job's record (never raises)."""
    data = json.dumps(body).encode("utf-8")
    outcome = ""
    for i in range(attempts):
        request = urllib.request.Request(url, data=data, method="POST",
                                         headers={"Content-Type": "application/json", "User-Agent": "ourvidz"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return f"delivered: HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            outcome = f"HTTP {exc.code}"
            if exc.code < 500:
                break  # the receiver refused it; sending it again would not help
        except (urllib.error.URLError, OSError) as exc:
            outcome = str(getattr(exc, "reason", exc))
        if i + 1 < attempts:
            time.sleep(2**i)
    return f"not delivered: {outcome}"
