"""A queued job's data: the production system's payload (shared/spec/job-types.md, "Queue and
job payload"), read into plan_job's arguments by the worker and written by `ourvidz submit`.

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
import uuid
from dataclasses import dataclass, field
from typing import Any

from ourvidz import families
from ourvidz.errors import BadInput
from ourvidz.jsonio import loads_bounded, short
from ourvidz.overrides import Overrides
from ourvidz.presets import Preset, load_preset

ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # ids name output folders
SIZE_RE = re.compile(r"\s*(\d+)\s*[*xX]\s*(\d+)\s*")


class MalformedJob(BadInput):
    """A payload the worker cannot run; job_id is what its failure is recorded under."""

    def __init__(self, message: str, job_id: str):
        super().__init__(message)
        self.job_id = job_id


@dataclass
class QueuedJob:
    """A payload read: what plan_job needs, the notes for the job's record, the payload itself."""

    id: str
    job_type: str
    prompt: str
    preset: Preset
    overrides: Overrides = field(default_factory=Overrides)
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
    if not ID_RE.fullmatch(job_id):  # recorded under it all the same (the producer knows it by that id),
        # unless it is too long to be a key or a log line: then under the payload's hash
        raise MalformedJob(f"id {short(job_id)} cannot name an output folder (letters, digits, '.', '_', '-'; "
                           f"at most 128; this one has {len(job_id)})",
                           job_id if len(job_id) <= 128 else fallback_id(raw))
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


def made_frames(n: int, step: int) -> int:
    """The frame count a family with this frame step makes when asked for n: the step*k+1 at or below it."""
    return n - (n - 1) % step


def parse(raw: bytes | str, presets_dir=None) -> QueuedJob:
    """A payload -> what plan_job needs. Raises MalformedJob, naming the field, for what cannot run."""
    raw = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else raw
    try:  # bounded: size and nesting are checked before parsing, so nothing but BadInput escapes
        data = loads_bounded(raw, what="the payload")
    except BadInput as exc:
        raise MalformedJob(f"{exc}: {short(raw)}", fallback_id(raw)) from None
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
        family = families.get(preset.family)
        step = family.frame_step
        if step and frames > 1 and made_frames(frames, step) != frames:
            notes.append(f"config.frame_num {frames} -> {made_frames(frames, step)} "
                         f"({family.title} makes {step}k+1 frames)")
            frames = made_frames(frames, step)
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
    overrides = Overrides(**{k: v for k, v in asked.items() if v != getattr(preset, k)})
    return QueuedJob(id=job_id, job_type=job_type, prompt=prompt, preset=preset, overrides=overrides, seed=seed,
                   negative=negative or "", enhance=enhance, notes=notes, payload=data)


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
    if families.get(p.family).frame_step:
        config["frame_num"] = p.frames
    if seed is not None:
        config["seed"] = seed
    return {
        "id": job_id, "type": plan.job_type, "prompt": plan.prompt, "config": config, "user_id": user_id,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "negative_prompt": negative,
        "video_id": job_id if p.is_video else None, "image_id": None if p.is_video else job_id,
        "model_variant": families.get(p.family).model_variant, "bucket": plan.job_type,
        "metadata": {"num_images": p.num_images, "submitted_by": "ourvidz submit"},
    }


