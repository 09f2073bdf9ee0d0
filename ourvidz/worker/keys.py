"""The Redis names the worker, `submit`, `status` and `queue` share, and the queue routing.

Keys:
  <family queue>                       the production lists (sdxl_queue, wan_queue): producers LPUSH, workers take from the right
  ourvidz:processing:<worker>:<queue>  jobs a worker took from <queue> and has not acknowledged; one list
                                       per queue, so a dead worker's job goes back where it came from
  ourvidz:worker:<worker>              its heartbeat, SET PX --heartbeat-ttl, renewed every ttl/3
  ourvidz:workers                      hash worker -> host, pid, device, queues: whose heartbeat to check
  ourvidz:job:<id>                     hash: state (queued, running, completed, failed), worker, attempts,
                                       progress, error, note, out_dir, assets, files, timings, callback
"""

from __future__ import annotations

from ourvidz import families

DEFAULT_URL = "redis://localhost:6379/0"
DEFAULT_QUEUES = tuple(families.queues().values())  # the production routing: one list per generator family
WORKERS = "ourvidz:workers"
RESULT_TTL = 7 * 24 * 3600  # finished jobs' records (ourvidz:job:<id>) expire after a week


def queue_for(family: str) -> str:
    return families.queues()[family]


def job_key(job_id: str) -> str:
    return f"ourvidz:job:{job_id}"


def heartbeat_key(worker: str) -> str:
    return f"ourvidz:worker:{worker}"


def processing_key(worker: str, queue: str) -> str:
    return f"ourvidz:processing:{worker}:{queue}"
