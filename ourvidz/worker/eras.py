"""Every form of job the production back end (Lazyjimpressions/ourvidz, supabase/functions/queue-job)
has pushed onto its Redis lists, read into one NormalizedJob. Pure Python, no dependencies beyond the
standard library and ourvidz.errors. See docs/production-payloads.md for the history and the evidence.

    parse_element(element) -> NormalizedJob      element: the exact list element (str or bytes)

Eras (named by the month each began; the doc gives the commits):
  "2025-06"       camelCase {jobId, jobType, userId, prompt, videoId, imageId, ...}; LPUSH
                  (ourvidz_job_queue, then job_queue, from 2025-07-02 sdxl_queue / wan_queue).
                  From 2025-07-03 numImages, from 2025-07-06 negativePrompt.
  "2025-07"       {id, type, prompt, config, user_id, created_at, bucket, metadata, ...}; LPUSH.
                  Wan config {size, sample_steps, sample_guide_scale, frame_num, enhance_prompt, ...};
                  from 2025-07-20 the SDXL config is {width, height, num_inference_steps,
                  guidance_scale, scheduler, ...}.
  "2025-08-data"  2025-08-16 only: RPUSH of the object {"data": "<payload as a JSON string>"}.
  "2025-08"       {id, type, prompt, user_id, config: {pipeline, num_images, num_inference_steps,
                  guidance_scale, denoise_strength, resolution, seed, image, first_frame, last_frame,
                  sample_solver}, metadata, negative_prompt, compel_*, job_id, job_type, quality,
                  format, content_type}; RPUSH.
  "2026-02"       the same payload, but the list element is a JSON array holding the payload as a
                  JSON string: '["{\\"id\\": ...}"]' (Upstash appends the POST body as the value).
  "ourvidz"       what `ourvidz submit` writes (the 2025-07 shape, metadata.submitted_by =
                  "ourvidz submit"): every value in it is meant and taken.

The per-era readers are in ourvidz.worker.era_shapes; ourvidz.worker.payload.parse turns the
result into the worker's QueuedJob (the one parse path).

`overrides` holds only what the payload sets *and* the production worker of that era used;
what the payload asks for but the worker ignored is in `ignored` (normalised names), and the
keys this parser did not use at all are in `unknown` (dotted paths, raw values).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from ourvidz.errors import BadInput

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
def _decode(element: Any) -> tuple[Any, bytes, str | None]:
    """The JSON value of the element, the raw bytes (for fallback ids) and the wrapper it came in."""
    if isinstance(element, (bytes, bytearray, memoryview)):
        raw = bytes(element)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PayloadError(f"the element is not UTF-8 text ({exc.reason} at byte {exc.start})",
                               fallback_id(raw)) from None
    elif isinstance(element, str):
        text = element
        raw = element.encode("utf-8", "surrogatepass")
    else:
        raise PayloadError(f"the element must be str or bytes (got {type(element).__name__})", None)
    data = _loads(text, raw)
    wrapper = None
    if isinstance(data, list):
        # 2026-02 on: queue-job POSTs JSON.stringify([JSON.stringify(payload)]) to /rpush/<queue>;
        # Upstash appends the whole body as the value, so the element is that array.
        if len(data) == 1 and isinstance(data[0], str):
            data, wrapper = _loads(data[0], raw), "array"
        elif len(data) == 1 and isinstance(data[0], dict):
            data, wrapper = data[0], "array"
        else:
            raise PayloadError(f"the element is a JSON array of {len(data)} item(s), not an object; the producer wraps "
                               "exactly one JSON string", _id_in_list(data, raw))
    elif isinstance(data, dict) and set(data) == {"data"} and isinstance(data["data"], str):
        # 2025-08-16 (queue-job 120a8cf6..8b8f7537): body {"data": JSON.stringify(payload)}
        data, wrapper = _loads(data["data"], raw), "data"
    if not isinstance(data, dict):
        raise PayloadError(f"the payload is JSON {type(data).__name__}, not an object", fallback_id(raw))
    return data, raw, wrapper


def _loads(text: str, raw: bytes) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise PayloadError(f"the element is not JSON ({str(exc)[:120]}): {_short(text[:80])}",
                           fallback_id(raw)) from None


def _id_in_list(items: list, raw: bytes) -> str:
    for item in items:
        candidate = item
        if isinstance(item, str):
            try:
                candidate = json.loads(item)
            except (ValueError, RecursionError):
                continue
        if isinstance(candidate, dict):
            found = _raw_id(candidate)
            if found:
                return found
    return fallback_id(raw)


def _raw_id(data: dict[str, Any]) -> str | None:
    for key in ("id", "job_id", "jobId"):
        value = data.get(key)
        if isinstance(value, str) and value.strip():
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            try:
                return str(value)
            except ValueError:  # an int too long to print
                return None
    return None


# ------------------------------------------------------------------ era recognition
def _era(data: dict[str, Any], wrapper: str | None) -> str:
    metadata = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
    if metadata.get("submitted_by") == "ourvidz submit":
        return "ourvidz"
    if wrapper == "data":
        return "2025-08-data"
    if "id" not in data and ("jobId" in data or "jobType" in data):
        return "2025-06"
    if wrapper == "array":
        return "2026-02"
    config = data.get("config") if isinstance(data.get("config"), dict) else {}
    if any(k in config for k in ("pipeline", "resolution", "num_images")) or "job_type" in data or "quality" in data:
        if not any(k in config for k in ("size", "sample_steps", "frame_num", "width", "scheduler")):
            return "2025-08"
    if "job_type" in data and "config" not in data:
        return "2025-08-data"  # the 65f3014b/8b8f7537 inner form, pushed without its wrapper
    return "2025-07"


def _job_type(value: Any, ctx: _Ctx) -> str:
    if not isinstance(value, str) or not value.strip():
        ctx.fail(f"the payload has no job 'type' (got {_short(value)})")
    name = value.strip().lower()
    name = ALIASES.get(name, name)
    if name not in JOB_TYPES:
        ctx.fail(f"unknown job type {value[:60]!r} (one of {', '.join(JOB_TYPES)})")
    return name


def _identify(data: dict[str, Any], raw: bytes) -> str:
    value = next((data[k] for k in ("id", "job_id", "jobId") if data.get(k) is not None), None)
    if value is None or isinstance(value, bool) or not isinstance(value, (str, int)):
        raise PayloadError(f"the payload has no usable 'id' (got {_short(value)})", fallback_id(raw))
    try:
        job_id = str(value)
    except ValueError:
        raise PayloadError("the payload's id is a number too long to use", fallback_id(raw)) from None
    if not ID_RE.fullmatch(job_id):  # reported under it all the same: the producer knows the job by it
        raise PayloadError(f"id {job_id[:80]!r} cannot name an output folder (letters, digits, '.', '_', '-'; "
                           "at most 128)", job_id)
    return job_id


# ------------------------------------------------------------------ the parser
def parse_element(element: str | bytes) -> NormalizedJob:
    """One Redis list element -> NormalizedJob. Raises PayloadError (and nothing else)."""
    data, raw, wrapper = _decode(element)
    job_id = _identify(data, raw)
    try:
        return _parse(data, job_id, _era(data, wrapper))
    except PayloadError:
        raise
    except Exception as exc:  # noqa: BLE001 - a bug here must still be reported under the job's id
        raise PayloadError(f"unreadable payload ({type(exc).__name__}: {str(exc)[:120]})", job_id) from None


def _parse(data: dict[str, Any], job_id: str, era: str) -> NormalizedJob:
    from ourvidz.worker.era_shapes import _august, _camel, _data_era, _july

    ctx = _Ctx(job_id)
    reader = {"2025-06": _camel, "2025-07": _july, "ourvidz": _july, "2025-08-data": _data_era,
              "2025-08": _august, "2026-02": _august}[era]
    job = reader(data, ctx, era)
    job.payload = data
    return job


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
    return "sdxl" if job_type.startswith("sdxl_") else "wan"
