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

import json
from typing import Any

from ourvidz.errors import BadInput
from ourvidz.jsonio import loads_bounded

from ourvidz.worker.era_common import (  # noqa: F401 - the shared names are part of this module's interface
    ALIASES, EXACT_COPY_MAX_DENOISE, ID_RE, JOB_TYPES, REFERENCE_MODES, RESOLUTION_RE, SDXL_NUM_IMAGES, NormalizedJob,
    PayloadError, _Ctx, _family, _job_type, _leftover, _present, _prompt, _short, _user_id, fallback_id,
)
from ourvidz.worker.era_shapes import _august, _camel, _data_era, _july


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
    """Bounded (ourvidz.jsonio: size and nesting checked before parsing): nothing but PayloadError."""
    try:
        return loads_bounded(text, what="the element")
    except BadInput as exc:
        raise PayloadError(f"{exc}: {_short(text[:80])}", fallback_id(raw)) from None


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


def _identify(data: dict[str, Any], raw: bytes) -> str:
    value = next((data[k] for k in ("id", "job_id", "jobId") if data.get(k) is not None), None)
    if value is None or isinstance(value, bool) or not isinstance(value, (str, int)):
        raise PayloadError(f"the payload has no usable 'id' (got {_short(value)})", fallback_id(raw))
    try:
        job_id = str(value)
    except ValueError:
        raise PayloadError("the payload's id is a number too long to use", fallback_id(raw)) from None
    if not ID_RE.fullmatch(job_id):  # reported under it all the same: the producer knows the job by it
        # Reported under it all the same, unless it is too long to be a key or a log line: then under
        # the payload's hash.
        raise PayloadError(f"id {_short(job_id)} cannot name an output folder (letters, digits, '.', '_', '-'; "
                           f"at most 128; this one has {len(job_id)})", job_id if len(job_id) <= 128 else fallback_id(raw))
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

    ctx = _Ctx(job_id)
    reader = {"2025-06": _camel, "2025-07": _july, "ourvidz": _july, "2025-08-data": _data_era,
              "2025-08": _august, "2026-02": _august}[era]
    job = reader(data, ctx, era)
    job.payload = data
    return job
