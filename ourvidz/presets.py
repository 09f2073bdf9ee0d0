"""The preset schema and the loading of presets/*.yaml.

A preset is one job type: everything a run needs except the prompt and the seed. The YAML
files are the single place where the job types' parameters live; this module only says
what a valid preset is. Users add their own presets through a search path:
--presets-dir, then $OURVIDZ_PRESETS (os.pathsep-separated), then the built-in folder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ourvidz.errors import BadInput

# Latent sizes: SDXL's VAE downsamples by 8; Wan's by 8 and its transformer patches 2x2.
SIZE_MULTIPLE = {"sdxl": 8, "wan": 16}
FAMILIES = ("sdxl", "wan")
# Overrides a user may pass on the command line, by preset field.
OVERRIDABLE = ("width", "height", "steps", "guidance", "frames", "num_images")


class SeedDocTime(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    seconds: float = Field(gt=0)
    status: Literal["measured", "expected"]


class Preset(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    family: Literal["sdxl", "wan"]
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    steps: int = Field(ge=1, le=1000)
    guidance: float = Field(ge=0, le=50)
    scheduler: Literal["euler", "unipc"]
    flow_shift: float | None = Field(default=None, gt=0)
    frames: int = Field(default=1, ge=1)
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
        from ourvidz.enhancement import check_overrides  # it imports this module

        return check_overrides(value)

    @model_validator(mode="after")
    def _rules(self) -> Preset:
        m = SIZE_MULTIPLE[self.family]
        for field in ("width", "height"):
            value = getattr(self, field)
            if value % m:
                raise _rule(field, f"must be a multiple of {m} for the {self.family} family (got {value})")
            if value > 4096:
                raise _rule(field, f"must be at most 4096 (got {value})")
        if self.family == "sdxl":
            if self.scheduler != "euler":
                raise _rule("scheduler", "the sdxl family uses 'euler'")
            if self.frames != 1:
                raise _rule("frames", "the sdxl family makes images: frames must be 1")
        else:
            if self.scheduler != "unipc":
                raise _rule("scheduler", "the wan family uses 'unipc'")
            if self.flow_shift is None:
                raise _rule("flow_shift", "the wan family needs a flow shift (5.0 in production)")
            if (self.frames - 1) % 4:
                raise _rule("frames", f"wan frame counts are 4k+1 (1, 5, ..., 81); got {self.frames}")
            if self.num_images != 1:
                raise _rule("num_images", "a wan job makes one image or one video: num_images must be 1")
        if self.output == "mp4":
            if self.frames < 2:
                raise _rule("frames", "an mp4 output needs more than one frame")
            if self.fps is None:
                raise _rule("fps", "an mp4 output needs fps")
        elif self.frames != 1:
            raise _rule("frames", "a png output is one frame: frames must be 1 (use output: mp4 for video)")
        return self

    @property
    def is_video(self) -> bool:
        return self.output == "mp4"

    def with_overrides(self, overrides: dict[str, Any]) -> Preset:
        """A copy with single fields replaced; re-validated, errors name the option."""
        unknown = set(overrides) - set(OVERRIDABLE)
        if unknown:
            raise BadInput(f"cannot override {', '.join(sorted(unknown))}; overridable: {', '.join(OVERRIDABLE)}")
        data = self.model_dump() | {k: v for k, v in overrides.items() if v is not None}
        try:
            return Preset.model_validate(data)
        except ValidationError as exc:
            raise BadInput(f"{self.name}: {_describe(exc, option=True)}") from None


class PresetRuleError(ValueError):
    def __init__(self, field: str, rule: str):
        super().__init__(rule)
        self.field, self.rule = field, rule


def _rule(field: str, rule: str) -> PresetRuleError:
    return PresetRuleError(field, rule)


def _describe(exc: ValidationError, option: bool = False) -> str:
    """One line naming each bad field and its rule."""
    parts = []
    for err in exc.errors():
        ctx_error = (err.get("ctx") or {}).get("error")
        if isinstance(ctx_error, PresetRuleError):
            field, rule = ctx_error.field, ctx_error.rule
        else:
            field = ".".join(str(p) for p in err["loc"]) or "(top level)"
            rule = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
            if err["type"] != "extra_forbidden" and "input" in err and not isinstance(err["input"], dict):
                rule += f" (got {err['input']!r})"
        label = f"--{field.replace('_', '-')}" if option and field in OVERRIDABLE else f"field '{field}'"
        parts.append(f"{label}: {rule}")
    return "; ".join(parts)


def builtin_presets_dir() -> Path:
    """presets/ ships inside the wheel as ourvidz/_presets; a source checkout has it at the root."""
    packaged = Path(__file__).parent / "_presets"
    return packaged if packaged.is_dir() else Path(__file__).parent.parent / "presets"


def search_path(presets_dir: Path | str | None = None) -> list[Path]:
    dirs: list[Path] = []
    if presets_dir:
        dirs.append(Path(presets_dir))
    env = os.environ.get("OURVIDZ_PRESETS", "")
    dirs += [Path(p) for p in env.split(os.pathsep) if p]
    dirs.append(builtin_presets_dir())
    for d in dirs[:-1]:
        if not d.is_dir():
            raise BadInput(f"presets folder {d} does not exist")
    return dirs


def find_data_file(name: str, presets_dir: Path | str | None = None) -> Path:
    """The first file called `name` on the search path (negatives.yaml, enhancement.yaml)."""
    for d in search_path(presets_dir):
        if (d / name).is_file():
            return d / name
    raise BadInput(f"{name} not found in any presets folder")


def read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise BadInput(f"{path}:{where}: malformed YAML: {problem}") from None
    except OSError as exc:
        raise BadInput(f"{path}: cannot read: {exc.strerror}") from None


def load_preset_file(path: Path) -> Preset:
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise BadInput(f"{path}: a preset is a mapping of fields, got {type(data).__name__}")
    if "name" in data:
        raise BadInput(f"{path}: field 'name': unknown field (the job type is the file name)")
    try:
        return Preset.model_validate({"name": path.stem, **data})
    except ValidationError as exc:
        raise BadInput(f"{path}: {_describe(exc)}") from None


def _preset_files(presets_dir: Path | str | None) -> dict[str, Path]:
    """Job type -> file; earlier folders on the search path win."""
    found: dict[str, Path] = {}
    for d in search_path(presets_dir):
        for path in sorted(d.glob("*.yaml")):
            if path.stem in ("negatives", "enhancement", "safety_terms"):
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
