"""A queued job's data: every form the production back end has pushed (read by ourvidz.worker.eras,
era by era: docs/production-payloads.md) turned into the worker's QueuedJob, and the payload
`ourvidz submit` writes (build).

parse() is the one read path: eras.parse_element unwraps the element (a JSON array holding the
payload as a string, 2026-02 on; {"data": "<payload>"}, 2025-08-16), names its era and keeps what
that era's production worker used as overrides; the rest is kept for the job's record (ignored:
asked for but not used by production; unknown: keys nobody read). Rules kept from before:
- A value equal to the preset's is the preset's, not an override: the back end always sends the
  full config, and only real overrides should stop --demo shrinking the size.
- A malformed payload that names an id fails under that id; one that names none under
  fallback_id(raw), a stable name.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from ourvidz import families
from ourvidz.errors import BadInput
from ourvidz.overrides import Overrides
from ourvidz.presets import Preset, load_preset
from ourvidz.redact import mask_url
from ourvidz.worker import eras
from ourvidz.worker.era_common import made_frames  # noqa: F401 - part of this module's interface
from ourvidz.worker.eras import ID_RE, fallback_id  # noqa: F401 - part of this module's interface

MalformedJob = eras.PayloadError  # a payload the worker cannot run; .job_id is what its failure is recorded under


@dataclass
class QueuedJob:
    """A payload read: what plan_job needs, what the job's record keeps, the payload itself."""

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
    era: str = "ourvidz"
    user_id: str | None = None
    reference: dict[str, Any] | None = None  # {mode, images: [url or path], denoise_strength}
    compel_weights: str | None = None  # kept and recorded; the weighting itself is the prompts issue's
    ignored: dict[str, Any] = field(default_factory=dict)  # asked for, not used by that era's worker
    unknown: dict[str, Any] = field(default_factory=dict)  # keys nobody read (dotted paths)

    def record_fields(self) -> dict[str, str]:
        """What the job's record (ourvidz:job:<id>) keeps of the payload; reference URLs' tokens masked."""
        reference = self.reference and self.reference | {
            "images": [mask_url(u) if isinstance(u, str) else u for u in self.reference.get("images", [])]}
        return {"type": self.job_type, "prompt": self.prompt[:500], "note": "; ".join(self.notes), "era": self.era,
                "user_id": self.user_id or "", "compel_weights": self.compel_weights or "",
                "ignored": _bounded_json(self.ignored), "unknown": _bounded_json(self.unknown),
                "reference": json.dumps(reference) if reference else ""}


def _bounded_json(data: dict, limit: int = 20000) -> str:
    """data as JSON for the record; past the limit, only its keys (still JSON)."""
    text = json.dumps(data, default=str)
    return text if len(text) <= limit else json.dumps({"_keys_only": sorted(data)[:500]})


def parse(raw: bytes | str, presets_dir=None) -> QueuedJob:
    """A list element -> QueuedJob. Raises MalformedJob (with the job's id) for what cannot run."""
    raw = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else bytes(raw)
    try:
        job = eras.parse_element(raw)
    except eras.PayloadError as exc:
        raise MalformedJob(str(exc), exc.job_id or fallback_id(raw)) from None
    try:
        preset = load_preset(job.job_type, presets_dir)
    except BadInput as exc:
        raise MalformedJob(str(exc), job.id) from None
    if job.user_id is not None and not ID_RE.fullmatch(job.user_id):  # it names storage folders
        raise MalformedJob(f"user_id {job.user_id[:80]!r} cannot name a storage folder (letters, digits, "
                           "'.', '_', '-')", job.id)
    asked = dict(job.overrides)
    seed = asked.pop("seed", None)
    try:
        overrides = Overrides(**{k: v for k, v in asked.items() if v != getattr(preset, k)})
    except ValidationError as exc:
        raise MalformedJob(f"bad override: {exc.errors()[0].get('msg', exc)}", job.id) from None
    return QueuedJob(id=job.id, job_type=job.job_type, prompt=job.prompt, preset=preset, overrides=overrides,
                     seed=seed, negative=job.negative_prompt, enhance=job.enhance, notes=list(job.notes),
                     payload=job.payload, era=job.era, user_id=job.user_id, reference=job.reference,
                     compel_weights=job.compel_weights, ignored=job.ignored, unknown=job.unknown)


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


