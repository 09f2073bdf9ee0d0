"""Overrides: the preset fields a single job may change, in one typed model.

Every entry point builds one: the CLI's --steps --guidance --width --height --frames --num-images,
a job file's `overrides:` mapping, a queue payload's config, the bench's quick-run settings.
Types are checked here; whether a value suits the job type (a multiple of 16 for Wan, 4k+1
frames, ...) is the preset schema's rule, checked when the plan applies them
(Preset.with_overrides). The seed is not an override: it is not a preset field, and every
entry point takes it on its own.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class Overrides(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: int | None = None
    guidance: float | None = None
    width: int | None = None
    height: int | None = None
    frames: int | None = None
    num_images: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """The fields that are set: what sidecars record and what the preset takes."""
        return self.model_dump(exclude_none=True)

    def merged(self, other: Overrides | dict[str, Any]) -> Overrides:
        """These overrides with the set fields of `other` on top."""
        more = other.as_dict() if isinstance(other, Overrides) else {k: v for k, v in other.items() if v is not None}
        return Overrides(**(self.as_dict() | more))

    def __bool__(self) -> bool:
        return bool(self.as_dict())


FIELDS: tuple[str, ...] = tuple(Overrides.model_fields)
