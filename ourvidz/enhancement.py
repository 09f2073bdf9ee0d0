"""Prompt-enhancement settings: presets/enhancement.yaml, with a preset's `enhancement:` overrides.

The instruction text, the sampling settings, the token and time limits and the rules that tell a
usable result from a degenerate one are data; ourvidz/families/qwen/enhancer.py only applies them.
No torch here: plans resolve these settings before any model loads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from ourvidz.errors import BadInput
from ourvidz.datafiles import RuleError, describe, find_data_file, read_yaml

FILE = "enhancement.yaml"
PLACEHOLDER = "{prompt}"


def _check_instruction(value: str) -> str:
    if value.count(PLACEHOLDER) != 1:
        raise RuleError("instruction", f"must contain {PLACEHOLDER} exactly once (found {value.count(PLACEHOLDER)})")
    if not value.split(PLACEHOLDER)[1].strip():
        raise RuleError("instruction", f"must end with a cue after {PLACEHOLDER}, e.g. 'Enhanced prompt:'")
    return value


def _check_markers(value: list[str]) -> list[str]:
    if not all(value):
        raise RuleError("end_markers", "must be non-empty strings")
    return value


class EnhancementSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    instruction: str  # plain text around one {prompt}; it ends with the cue for the enhanced prompt
    end_markers: list[str] = Field(min_length=1)  # the enhanced text ends before the first of these
    temperature: float = Field(gt=0, le=5)
    top_p: float = Field(gt=0, le=1)
    top_k: int = Field(ge=0)
    repetition_penalty: float = Field(gt=0, le=5)
    max_new_tokens: int = Field(ge=1, le=4096)
    max_input_tokens: int = Field(ge=16, le=131072)
    timeout_seconds: float = Field(gt=0)
    attempts: int = Field(ge=1, le=10)
    min_chars: int = Field(ge=1)
    repeat_ngram: int = Field(ge=1, le=10)
    max_repeat_ratio: float = Field(gt=0, le=1)
    max_instruction_overlap: float = Field(gt=0, le=1)

    @field_validator("instruction")
    @classmethod
    def _instruction(cls, value: str) -> str:
        return _check_instruction(value)

    @field_validator("end_markers")
    @classmethod
    def _end_markers(cls, value: list[str]) -> list[str]:
        return _check_markers(value)

    @property
    def parts(self) -> tuple[str, str]:
        """(the text before the user's prompt, the text after it: the cue)."""
        head, _, tail = self.instruction.partition(PLACEHOLDER)
        return head, tail


def check_overrides(overrides: Any) -> dict[str, Any]:
    """A preset's `enhancement:` mapping: known fields, each valid on its own (RuleError otherwise)."""
    if not isinstance(overrides, dict):
        raise RuleError("enhancement", f"must be a mapping of {FILE} fields, got {type(overrides).__name__}")
    fields = EnhancementSettings.model_fields
    for key, value in overrides.items():
        where = f"enhancement.{key}"
        if key not in fields:
            raise RuleError(where, f"unknown field; known: {', '.join(fields)}")
        try:
            info = fields[key]
            kind = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
            value = TypeAdapter(kind).validate_python(value)
            {"instruction": _check_instruction, "end_markers": _check_markers}.get(key, lambda v: v)(value)
        except ValidationError as exc:
            raise RuleError(where, exc.errors()[0]["msg"] + f" (got {value!r})") from None
        except RuleError as exc:
            raise RuleError(where, exc.rule) from None
    return overrides


def load_settings(presets_dir: Path | str | None = None, overrides: dict[str, Any] | None = None,
                  preset_name: str = "") -> EnhancementSettings:
    path = find_data_file(FILE, presets_dir)
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise BadInput(f"{path}: expected a mapping of settings")
    try:
        base = EnhancementSettings.model_validate(data)
    except ValidationError as exc:
        raise BadInput(f"{path}: {describe(exc)}") from None
    if not overrides:
        return base
    try:
        return EnhancementSettings.model_validate(base.model_dump() | overrides)
    except ValidationError as exc:
        raise BadInput(f"preset {preset_name}: enhancement: {describe(exc)}") from None
