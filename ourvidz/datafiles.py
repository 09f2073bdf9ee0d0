"""The data files ourvidz reads (presets/*.yaml and the vocabularies beside them): the search
path, reading YAML with one-line errors, and describing a validation error in one line.

The lowest layer of configuration: presets, negative prompts and enhancement settings all read
their files through here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ourvidz import yamlio
from ourvidz.errors import BadInput


class RuleError(ValueError):
    """A rule of a data file's schema, raised inside a validator: names the field it is about."""

    def __init__(self, field: str, rule: str):
        super().__init__(rule)
        self.field, self.rule = field, rule


def describe(exc: ValidationError, options: tuple[str, ...] = ()) -> str:
    """One line naming each bad field and its rule; a field in `options` is named as its --option."""
    parts = []
    for err in exc.errors():
        ctx_error = (err.get("ctx") or {}).get("error")
        if isinstance(ctx_error, RuleError):
            field, rule = ctx_error.field, ctx_error.rule
        else:
            field = ".".join(str(p) for p in err["loc"]) or "(top level)"
            rule = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
            if err["type"] != "extra_forbidden" and "input" in err and not isinstance(err["input"], dict):
                rule += f" (got {err['input']!r})"
        label = f"--{field.replace('_', '-')}" if field in options else f"field '{field}'"
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
    """The file's document; a one-line BadInput for an unreadable file, malformed YAML, a duplicate
    key, an alias bomb or nesting too deep (ourvidz.yamlio)."""
    return yamlio.read_yaml(path)


