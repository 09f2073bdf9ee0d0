"""A batch's planning and ordering (ourvidz.batch runs it): every job of the file planned, and so
checked, before any model loads; the run order that loads each model once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ourvidz.errors import BadInput
from ourvidz.jobfile import Unit


def plan_units(units: list[Unit], records: dict[str, dict], batch_dir: Path, job_file: Path, *, models=None,
               demo: bool = False, presets_dir=None) -> dict[str, Any]:
    """uid -> JobPlan for every unit not done; the first problem (in file order) is raised, naming
    file, line and job. Seeds drawn for earlier runs (in `records`) are reused."""
    from ourvidz.errors import PromptRefused
    from ourvidz.plan import plan_job
    from ourvidz.presets import OverrideError, load_preset
    from ourvidz.families.weights import resolve_sources, token_counter

    sources = resolve_sources(models, demo)
    counter = token_counter(models, demo)
    plans, problems = {}, []
    for u in units:
        rec = records.get(u.uid)
        if rec and rec["state"] == "done":
            continue
        line = u.line
        try:
            preset = load_preset(u.job_type, presets_dir)
            seed = rec["seed"] if rec else u.seed
            if rec is None and u.seed is not None and u.seed_step:
                seed = u.seed + u.seed_step * (u.overrides.num_images or preset.num_images)
            source = sources.get(preset.family)
            try:
                plans[u.uid] = plan_job(
                    u.job_type, u.prompt, overrides=u.overrides, seed=seed, negative=u.negative,
                    auto_negative=u.auto_negative, enhance=u.enhance, out_dir=batch_dir / u.uid,
                    presets_dir=presets_dir, counter=counter, demo=source is not None and source.is_demo)
            except OverrideError as exc:  # named as the job file names it
                line = u.overrides_line
                raise BadInput(f"overrides: {exc.by_field}") from None
        except (BadInput, PromptRefused) as exc:
            line = u.prompt_line if isinstance(exc, PromptRefused) else line
            problems.append(type(exc)(f"{job_file}:{line}: job {u.job} ({u.job_type}): {exc}"))
    if problems:
        first = problems[0]
        more = f" (+{len(problems) - 1} more problems; nothing was run)" if len(problems) > 1 else " (nothing was run)"
        raise type(first)(f"{first}{more}")
    return plans


def run_order(records: list[dict], keep_order: bool = False) -> list[dict]:
    """Grouped by model family, families in the order of their most urgent (lowest) priority;
    within a family, the jobs that need Qwen enhancement form one stretch, the stretches again
    ordered by their lowest priority; within a stretch lower priority first, ties in file order.
    So each model is needed in one stretch, and fast job types run first where grouping allows.
    --keep-order: file order."""
    if keep_order:
        return sorted(records, key=lambda r: r["n"])
    family_best: dict[str, int] = {}
    stretch_best: dict[tuple, int] = {}
    for r in records:
        family_best[r["family"]] = min(family_best.get(r["family"], r["priority"]), r["priority"])
        key = (r["family"], r["enhance"])
        stretch_best[key] = min(stretch_best.get(key, r["priority"]), r["priority"])
    return sorted(records, key=lambda r: (family_best[r["family"]], r["family"],
                                          stretch_best[(r["family"], r["enhance"])], r["enhance"],
                                          r["priority"], r["n"]))
