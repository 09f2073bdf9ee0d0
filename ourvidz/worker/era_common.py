"""What every production payload era's reader shares: the job types and their aliases, the
reference modes, the normalized job, the malformed-payload error and small readers of fields."""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from typing import Any

from ourvidz import families
from ourvidz.errors import BadInput

# The production system has two workers, known by their queues; each is one of ourvidz's families.
_FAMILY_OF_QUEUE = {f.queue: name for name, f in families.FAMILIES.items() if f.queue}
SDXL, WAN = _FAMILY_OF_QUEUE["sdxl_queue"], _FAMILY_OF_QUEUE["wan_queue"]

JOB_TYPES = (
    "sdxl_image_fast", "sdxl_image_high", "image_fast", "image_high", "video_fast", "video_high",
    "image7b_fast_enhanced", "image7b_high_enhanced", "video7b_fast_enhanced", "video7b_high_enhanced",
)
ALIASES = {  # names the producers used for the ten types
    "wan_video_fast": "video_fast", "wan_video_high": "video_high",  # queue-job 6ed7b328 (2025-08-17) on
    "wan_image_fast": "image_fast", "wan_image_high": "image_high",
}
REFERENCE_MODES = ("img2img", "exact_copy", "wan_start_frame", "wan_end_frame", "wan_start_end")
ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
RESOLUTION_RE = re.compile(r"\s*(\d{1,5})\s*[*xX]\s*(\d{1,5})\s*")
SDXL_NUM_IMAGES = (1, 3, 6)  # the SDXL worker ran any other count as 1
EXACT_COPY_MAX_DENOISE = 0.05  # sdxl_worker.py clamps exact-copy denoise to <= 0.05 (11cb465 on)


class PayloadError(BadInput):
    """A list element that cannot be run; job_id is what its failure is reported under."""

    def __init__(self, message: str, job_id: str | None = None):
        super().__init__(message)
        self.job_id = job_id


@dataclass
class NormalizedJob:
    id: str
    era: str
    job_type: str
    prompt: str
    negative_prompt: str = ""  # the user's own negative text only
    overrides: dict[str, Any] = field(default_factory=dict)  # steps/guidance/width/height/frames/num_images/seed
    enhance: bool | None = None
    compel_weights: str | None = None
    reference: dict[str, Any] | None = None  # {mode, images: [url, ...], denoise_strength}
    user_id: str | None = None
    callback: dict[str, Any] = field(default_factory=dict)
    ignored: dict[str, Any] = field(default_factory=dict)  # asked for, not used by that era's worker
    unknown: dict[str, Any] = field(default_factory=dict)  # keys not used, dotted paths
    notes: list[str] = field(default_factory=list)
    payload: dict[str, Any] = field(default_factory=dict)


def fallback_id(raw: bytes) -> str:
    """A stable record name for an element that names no usable id (the worker's record name for it)."""
    return "malformed-" + hashlib.sha256(raw).hexdigest()[:16]


# ------------------------------------------------------------------ small readers
class _Ctx:
    def __init__(self, job_id: str | None):
        self.job_id = job_id

    def fail(self, message: str):
        raise PayloadError(message, self.job_id)

    def int_(self, value: Any, name: str, minimum: int | None = None) -> int:
        out: int | None = None
        if isinstance(value, bool):
            pass
        elif isinstance(value, int):
            out = value
        elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
            out = int(value)
        elif isinstance(value, str) and re.fullmatch(r"\s*-?\d{1,20}\s*", value):
            out = int(value)
        if out is None:
            self.fail(f"{name} must be a whole number (got {_short(value)})")
        if minimum is not None and out < minimum:
            self.fail(f"{name} must be at least {minimum} (got {out})")
        return out

    def float_(self, value: Any, name: str) -> float:
        out: float | None = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out = float(value)
        elif isinstance(value, str):
            try:
                out = float(value)
            except ValueError:
                pass
        if out is None or not math.isfinite(out):
            self.fail(f"{name} must be a number (got {_short(value)})")
        return out

    def bool_(self, value: Any, name: str) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        self.fail(f"{name} must be true or false (got {_short(value)})")

    def str_(self, value: Any, name: str) -> str:
        if not isinstance(value, str):
            self.fail(f"{name} must be text (got {type(value).__name__})")
        return value

    def obj(self, value: Any, name: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(f"'{name}' must be an object (got {type(value).__name__})")
        return value


def _short(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a repr must never be what fails
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 80 else text[:77] + "..."


def _present(value: Any) -> bool:
    return value is not None and value != ""


# ------------------------------------------------------------------ unwrapping
def _job_type(value: Any, ctx: _Ctx) -> str:
    if not isinstance(value, str) or not value.strip():
        ctx.fail(f"the payload has no job 'type' (got {_short(value)})")
    name = value.strip().lower()
    name = ALIASES.get(name, name)
    if name not in JOB_TYPES:
        ctx.fail(f"unknown job type {value[:60]!r} (one of {', '.join(JOB_TYPES)})")
    return name


def _leftover(data: dict[str, Any], used: set[str], prefix: str = "") -> dict[str, Any]:
    return {prefix + k: v for k, v in data.items() if k not in used}


def _user_id(value: Any, ctx: _Ctx, name: str) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        ctx.fail(f"{name} must be text (got {type(value).__name__})")
    return str(value)


def _prompt(value: Any, ctx: _Ctx, *, exact_copy: bool) -> str:
    if value is None and exact_copy:
        return ""  # an exact copy has no prompt by design
    if not isinstance(value, str):
        ctx.fail(f"the payload has no 'prompt' text (got {_short(value)})")
    return value


def _family(job_type: str) -> str:
    return SDXL if job_type.startswith("sdxl_") else WAN


def made_frames(n: int, step: int) -> int:
    """The frame count a family with this frame step makes when asked for n: the step*k+1 at or below it."""
    return n - (n - 1) % step
