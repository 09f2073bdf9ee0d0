"""The Redis names the worker, `submit`, `status` and `queue` share, and the queue routing.

Keys:
  <family queue>                       the production lists (sdxl_queue, wan_queue): producers push at one end
                                       (--push-end; production RPUSHes since 2025-08-16), workers take from the other
  ourvidz:processing:<worker>:<queue>  jobs a worker took from <queue> and has not acknowledged; one list
                                       per queue, so a dead worker's job goes back where it came from
  ourvidz:worker:<worker>              its heartbeat, SET PX --heartbeat-ttl, renewed every ttl/3
  ourvidz:workers                      hash worker -> host, pid, device, queues: whose heartbeat to check
  ourvidz:job:<id>                     hash: state (queued, running, completed, failed), worker, attempts,
                                       progress, error, note, out_dir, assets, files, timings, callback
"""

from __future__ import annotations

import os

from ourvidz import families
from ourvidz.errors import BadInput

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


PUSH_ENDS = ("left", "right")
DEFAULT_PUSH_END = "right"  # the production back end RPUSHes since 2025-08-16 (LPUSH before)


def push_ends(spec: str | None, queues) -> dict[str, str]:
    """Which end the producers push each queue at: 'right', 'left', or per queue 'right,wan_queue=left'
    (a bare end is the default for the rest). spec None: $OURVIDZ_PUSH_END, else DEFAULT_PUSH_END.
    Workers take from the other end, so every list is first in, first out."""
    spec = spec if spec is not None else os.environ.get("OURVIDZ_PUSH_END", DEFAULT_PUSH_END)
    default, named = DEFAULT_PUSH_END, {}
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        queue, _, end = part.rpartition("=")
        if end.strip().lower() not in PUSH_ENDS:
            raise BadInput(f"--push-end {spec!r}: {part!r} is not 'left', 'right' or QUEUE=left|right")
        if queue:
            named[queue.strip()] = end.strip().lower()
        else:
            default = end.strip().lower()
    return {q: named.get(q, default) for q in [*queues, *named]}


def take_end(push_end: str) -> str:
    """The end workers take from (as LMOVE names it): the other one."""
    return "LEFT" if push_end == "right" else "RIGHT"
