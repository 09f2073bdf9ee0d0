"""The preset schema and the loading of presets/*.yaml.

A preset is one job type: everything a run needs except the prompt and the seed. The YAML
files are the single place where the job types' parameters live; this module only says
what a valid preset is. Users add their own presets through a search path:
--presets-dir, then $OURVIDZ_PRESETS (os.pathsep-separated), then the built-in folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ourvidz import families
from ourvidz.datafiles import RuleError, describe, read_yaml, search_path
from ourvidz.enhancement import check_overrides
from ourvidz.errors import BadInput
from ourvidz.overrides import FIELDS as OVERRIDABLE
from ourvidz.overrides import Overrides

DATA_FILES = ("negatives", "enhancement", "safety_terms")  # beside the presets, not job types
# The schema's bounds: what planning refuses (exit 2) at every entry point, so nothing too big
# reaches a GPU. Wan 2.1 was trained on 81 frames; 241 is 15 s at 16 fps.
MAX_SIDE = 4096
MAX_STEPS = 1000
MAX_FRAMES = 241
MAX_VIDEO_VOLUME = 1280 * 720 * 241  # width x height x frames of one video
MAX_IMAGE_PIXELS = 64 * 1024 * 1024  # width x height x num_images of one job


class SeedDocTime(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    seconds: float = Field(gt=0)
    status: Literal["measured", "expected"]


class Preset(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    family: str  # a generator family of the registry (ourvidz.families)
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    steps: int = Field(ge=1, le=MAX_STEPS)
    guidance: float = Field(ge=0, le=50)
    scheduler: str  # one of the family's schedulers
    flow_shift: float | None = Field(default=None, gt=0)
    frames: int = Field(default=1, ge=1, le=MAX_FRAMES)
    fps: int | None = Field(default=None, ge=1, le=120)
    num_images: int = Field(default=1, ge=1, le=64)
    output: Literal["png", "mp4"]
    enhance: bool = False
    negative_strategy: Literal["sdxl", "wan_image", "wan_video"]
    priority: int = 100
    seed_doc: SeedDocTime | None = None
    enhancement: dict[str, Any] | None = None  # overrides of presets/enhancement.yaml for this job type

    @field_validator("enhancement")
    @classmethod
    def _enhancement(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        return check_overrides(value)

    @field_validator("family")
    @classmethod
    def _family(cls, value: str) -> str:
        if value not in families.generators():
            raise RuleError("family", f"must be one of {', '.join(families.generators())} (got {value!r})")
        return value

    @model_validator(mode="after")
    def _rules(self) -> Preset:
        family = families.get(self.family)
        m = family.size_multiple
        for field in ("width", "height"):
            value = getattr(self, field)
            if value % m:
                raise RuleError(field, f"must be a multiple of {m} for the {self.family} family (got {value})")
            if value > MAX_SIDE:
                raise RuleError(field, f"must be at most {MAX_SIDE} (got {value})")
        if self.width * self.height * self.frames > MAX_VIDEO_VOLUME:
            raise RuleError("frames", f"{self.width}x{self.height} x {self.frames} frames is more than the limit of "
                            f"{MAX_VIDEO_VOLUME:,} pixels x frames (1280x720 x {MAX_FRAMES})")
        if self.width * self.height * self.num_images > MAX_IMAGE_PIXELS:
            raise RuleError("num_images", f"{self.num_images} images of {self.width}x{self.height} is more than the "
                            f"limit of {MAX_IMAGE_PIXELS:,} pixels a job")
        if self.scheduler not in family.schedulers:
            raise RuleError("scheduler", f"the {self.family} family uses " + " or ".join(map(repr, family.schedulers)))
        if family.check_preset:
            family.check_preset(self, RuleError)
        if self.output == "mp4":
            if self.frames < 2:
                raise RuleError("frames", "an mp4 output needs more than one frame")
            if self.fps is None:
                raise RuleError("fps", "an mp4 output needs fps")
        elif self.frames != 1:
            raise RuleError("frames", "a png output is one frame: frames must be 1 (use output: mp4 for video)")
        return self

    @property
    def is_video(self) -> bool:
        return self.output == "mp4"

    @property
    def sampler(self) -> str:
        """The A1111 sampler name, with Wan's flow shift."""
        name = families.get(self.family).schedulers[self.scheduler]
        return name + (f" (flow shift {self.flow_shift:g})" if self.flow_shift else "")

    def with_overrides(self, overrides: Overrides | dict[str, Any]) -> Preset:
        """A copy with single fields replaced; re-validated. An OverrideError names the --option that
        broke a rule, and keeps the same description by field name for job files."""
        if not isinstance(overrides, Overrides):
            unknown = set(overrides) - set(OVERRIDABLE)
            if unknown:
                raise BadInput(f"cannot override {', '.join(sorted(unknown))}; overridable: {', '.join(OVERRIDABLE)}")
            overrides = Overrides(**{k: v for k, v in overrides.items() if v is not None})
        try:
            return Preset.model_validate(self.model_dump() | overrides.as_dict())
        except ValidationError as exc:
            raise OverrideError(f"{self.name}: {describe(exc, options=OVERRIDABLE)}", describe(exc)) from None


class OverrideError(BadInput):
    """Overrides that break the preset schema's rules for this job type."""

    def __init__(self, message: str, by_field: str):
        super().__init__(message)
        self.by_field = by_field  # "field 'width': must be ..." rather than "--width: must be ..."


def load_preset_file(path: Path) -> Preset:
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise BadInput(f"{path}: a preset is a mapping of fields, got {type(data).__name__}")
    if "name" in data:
        raise BadInput(f"{path}: field 'name': unknown field (the job type is the file name)")
    try:
        return Preset.model_validate({"name": path.stem, **data})
    except ValidationError as exc:
        raise BadInput(f"{path}: {describe(exc)}") from None


def _preset_files(presets_dir: Path | str | None) -> dict[str, Path]:
    """Job type -> file; earlier folders on the search path win."""
    found: dict[str, Path] = {}
    for d in search_path(presets_dir):
        for path in sorted(d.glob("*.yaml")):
            if path.stem in DATA_FILES:
                continue
            found.setdefault(path.stem, path)
    return found


def job_types(presets_dir: Path | str | None = None) -> list[str]:
    return sorted(_preset_files(presets_dir))


def load_preset(job_type: str, presets_dir: Path | str | None = None) -> Preset:
    files = _preset_files(presets_dir)
    if job_type not in files:
        raise BadInput(f"unknown job type '{job_type}'; known: {', '.join(sorted(files))}")
    return load_preset_file(files[job_type])


def load_all(presets_dir: Path | str | None = None) -> list[Preset]:
    presets = [load_preset_file(p) for p in _preset_files(presets_dir).values()]
    return sorted(presets, key=lambda p: (p.priority, p.name))
