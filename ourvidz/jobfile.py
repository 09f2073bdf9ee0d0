"""The batch job file: YAML (a list of jobs, or {jobs: [...]}) or JSON Lines (one job a line).

Reading it checks every job's fields (pydantic) and remembers the line of every field, so an
error names the file, the line and the field. Each job expands to units: one prompt with one
seed, which is what `plan_job` plans and `run_job` runs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ourvidz.errors import BadInput
from ourvidz.jsonio import loads_bounded
from ourvidz.overrides import FIELDS as OVERRIDABLE
from ourvidz.overrides import Overrides
from ourvidz.plan import MAX_SEED
from ourvidz.yamlio import load_yaml_text

JSONL_SUFFIXES = (".jsonl", ".ndjson")
MAX_UNITS = 10_000  # jobs a file may expand to; one manifest save stays a few ms


class FieldRule(ValueError):
    def __init__(self, field: str, rule: str):
        super().__init__(rule)
        self.field, self.rule = field, rule


class JobEntry(BaseModel):
    """One job of the file. It renders each prompt once per seed (seeds, or count seeds)."""

    model_config = ConfigDict(extra="forbid")
    job_type: str = Field(min_length=1)
    prompt: str | None = None
    prompts: list[str] | None = Field(default=None, min_length=1)
    overrides: Overrides = Field(default_factory=Overrides)
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    seeds: list[int] | None = Field(default=None, min_length=1)
    count: int | None = Field(default=None, ge=1, le=10_000)
    negative: str = ""
    auto_negative: bool = True
    enhance: bool | None = None

    @model_validator(mode="after")
    def _rules(self) -> JobEntry:
        if (self.prompt is None) == (self.prompts is None):
            raise FieldRule("prompt", "give either 'prompt' or 'prompts' (a list)")
        if self.seeds is not None and (self.seed is not None or self.count is not None):
            raise FieldRule("seeds", "'seeds' lists every seed: it goes without 'seed' and 'count'")
        for s in self.seeds or []:
            if not 0 <= s <= MAX_SEED:
                raise FieldRule("seeds", f"seeds are between 0 and {MAX_SEED} (got {s})")
        return self


@dataclass(frozen=True)
class Unit:
    """One prompt with one seed: one plan, one output folder."""

    uid: str  # stable: position in the file and a hash of the content
    n: int  # 1-based position among the units, in file order
    job: int  # 1-based job number in the file
    line: int
    job_type: str
    prompt: str
    prompt_line: int
    overrides_line: int
    seed: int | None  # None: drawn once when the batch starts, then kept in the manifest
    seed_step: int  # count with a seed: seed + seed_step * num_images
    overrides: Overrides
    negative: str
    auto_negative: bool
    enhance: bool | None
    digest: str


def _yaml_lines(text: str, path: Path) -> tuple[Any, dict[tuple, int]]:
    """The document and the 1-based line of every mapping key and sequence item, by path.

    ourvidz.yamlio checks it first: duplicate keys, alias bombs, deep nesting are one-line errors.
    """
    return load_yaml_text(text, path, fmt="{name}:{line}: {problem}")


def _read_yaml(path: Path, text: str) -> list[tuple[Any, int, dict[tuple, int]]]:
    data, lines = _yaml_lines(text, path)
    prefix: tuple = ()
    if isinstance(data, dict):
        extra = set(data) - {"jobs"}
        if extra:
            key = sorted(map(str, extra))[0]
            raise BadInput(f"{path}:{lines.get((key,), 1)}: field '{key}': unknown; the file is a list of jobs "
                           "or a mapping with 'jobs:'")
        data, prefix = data.get("jobs"), ("jobs",)
    if not isinstance(data, list) or not data:
        raise BadInput(f"{path}:{lines.get(prefix, 1)}: expected a list of jobs (each a mapping with job_type and "
                       "prompt), got " + ("nothing" if not data else type(data).__name__))
    subs: dict[int, dict[tuple, int]] = {}  # each job's lines, in one pass (not one pass a job)
    for k, v in lines.items():
        if len(k) > len(prefix) and k[: len(prefix)] == prefix and isinstance(k[len(prefix)], int):
            subs.setdefault(k[len(prefix)], {})[k[len(prefix):][1:]] = v
    return [(entry, lines.get(prefix + (i,), 1), subs.get(i, {})) for i, entry in enumerate(data)]


def _read_jsonl(path: Path, text: str) -> list[tuple[Any, int, dict[tuple, int]]]:
    out = []
    for no, raw in enumerate(text.splitlines(), 1):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        try:
            entry = loads_bounded(raw, what="the line")
        except BadInput as exc:  # never RecursionError or MemoryError: a one-line error with the line
            raise BadInput(f"{path}:{no}: malformed JSON: {exc}") from None
        out.append((entry, no, {}))
    if not out:
        raise BadInput(f"{path}: no jobs in it (JSON Lines: one job object a line)")
    return out


def _field_error(path: Path, job: int, line: int, lines: dict[tuple, int], exc: ValidationError,
                 job_type: str) -> BadInput:
    err = exc.errors()[0]
    ctx = (err.get("ctx") or {}).get("error")
    if isinstance(ctx, FieldRule):
        loc, rule = (ctx.field,), ctx.rule
    else:
        loc = tuple(err["loc"])
        rule = err["msg"]
        if err["type"] == "extra_forbidden":
            rule = "unknown field"
            if loc and loc[-1] in OVERRIDABLE and len(loc) == 1:
                rule += f" (put it under 'overrides:', e.g. overrides: {{{loc[-1]}: ...}})"
        elif "input" in err and not isinstance(err["input"], (dict, list)):
            rule += f" (got {err['input']!r})"
    at = next((lines[loc[:i]] for i in range(len(loc), 0, -1) if loc[:i] in lines), line)
    name = ".".join(str(p) for p in loc) or "(job)"
    more = f" (+{len(exc.errors()) - 1} more in this job)" if len(exc.errors()) > 1 else ""
    label = f"job {job}" + (f" ({job_type})" if job_type else "")
    return BadInput(f"{path}:{at}: {label}, field '{name}': {rule}{more}")


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def read_job_file(path: Path | str) -> list[Unit]:
    """Every unit of the file, in file order; BadInput naming file, line and field on any problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BadInput(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise BadInput(f"{path}: not UTF-8 text") from None
    jsonl = path.suffix.lower() in JSONL_SUFFIXES
    if not jsonl:
        try:
            entries = _read_yaml(path, text)
        except BadInput:
            # A JSON Lines file under another name: several lines, each an object.
            body = [ln for ln in text.splitlines() if ln.strip()]
            if len(body) > 1 and all(ln.lstrip().startswith("{") for ln in body):
                jsonl = True
            else:
                raise
    if jsonl:
        entries = _read_jsonl(path, text)
    units: list[Unit] = []
    for job, (entry, line, lines) in enumerate(entries, 1):
        if not isinstance(entry, dict):
            raise BadInput(f"{path}:{line}: job {job}: a job is a mapping (job_type, prompt, ...), "
                           f"got {type(entry).__name__}")
        job_type = entry.get("job_type") if isinstance(entry.get("job_type"), str) else ""
        try:
            spec = JobEntry.model_validate(entry)
        except ValidationError as exc:
            raise _field_error(path, job, line, lines, exc, job_type) from None
        prompts = [spec.prompt] if spec.prompt is not None else spec.prompts
        if spec.seeds is not None:
            slots = [(s, 0) for s in spec.seeds]
        elif spec.seed is not None:
            slots = [(spec.seed, k) for k in range(spec.count or 1)]
        else:
            slots = [(None, k) for k in range(spec.count or 1)]
        overrides = spec.overrides
        for p, prompt in enumerate(prompts):
            p_line = lines.get(("prompts", p), lines.get(("prompt",), line))
            for seed, k in slots:
                content = {"job_type": spec.job_type, "prompt": prompt, "overrides": overrides.as_dict(), "seed": seed,
                           "slot": k, "negative": spec.negative, "auto_negative": spec.auto_negative,
                           "enhance": spec.enhance}
                units.append(Unit(uid="", n=len(units) + 1, job=job, line=line, job_type=spec.job_type,
                                  prompt=prompt, prompt_line=p_line, overrides_line=lines.get(("overrides",), line),
                                  seed=seed, seed_step=k, overrides=overrides,
                                  negative=spec.negative, auto_negative=spec.auto_negative, enhance=spec.enhance,
                                  digest=_digest(content)))
                if len(units) > MAX_UNITS:
                    raise BadInput(f"{path}:{line}: job {job}: the file expands to more than {MAX_UNITS} jobs")
    width = max(3, len(str(len(units))))
    return [_with_uid(u, f"{u.n:0{width}d}-{u.job_type}-{u.digest[:8]}") for u in units]


def _with_uid(unit: Unit, uid: str) -> Unit:
    from dataclasses import replace

    return replace(unit, uid=uid)


def file_digest(units: list[Unit]) -> str:
    """Of the jobs' content and order, not the text: comments and layout may change freely."""
    return _digest([u.digest for u in units])
