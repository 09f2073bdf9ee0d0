"""`ourvidz enhance`: one prompt through the Qwen enhancer, with a job type's settings.

The enhancer itself (the model, its limits, what counts as a usable result) is
ourvidz.families.qwen.enhancer; this is the command around it.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from ourvidz import families
from ourvidz.enhancement import load_settings
from ourvidz.errors import BadInput
from ourvidz.progress import phase, within
from ourvidz.safety import check_prompt


@dataclass
class EnhanceRun:
    result: Any  # families.qwen.enhancer.EnhancementResult
    load: dict[str, float]
    seed: int
    model: dict[str, Any]
    demo: bool
    clip_tokens: int | None = None  # for an SDXL job type: the enhanced prompt's CLIP tokens


def enhance_prompt(prompt: str, *, job_type: str | None = None, seed: int | None = None, presets_dir=None,
                   models=None, demo: bool = False, device: str | None = None, cache=None) -> EnhanceRun:
    """One prompt through the enhancer, with a job type's settings when one is given."""
    from ourvidz.model_cache import ModelCache
    from ourvidz.plan import MAX_SEED, checked_prompt
    from ourvidz.presets import load_preset

    prompt = checked_prompt(prompt, "enhance")
    preset = load_preset(job_type, presets_dir) if job_type else None
    settings = load_settings(presets_dir, preset.enhancement if preset else None, job_type or "")
    if seed is None:
        seed = secrets.randbelow(MAX_SEED)
    elif not 0 <= seed <= MAX_SEED:
        raise BadInput(f"--seed must be between 0 and {MAX_SEED} (got {seed})")
    cache = cache or ModelCache(models_file=models, demo=demo, device=device)
    enhancer, load = cache.get(families.ENHANCER)
    with within(families.ENHANCER), phase("enhance prompt"):
        result = enhancer.enhance(prompt, seed=seed, settings=settings)
    check_prompt(result.text, what="enhanced prompt")
    run = EnhanceRun(result=result, load=load, seed=seed, model=enhancer.identity, demo=cache.is_demo(families.ENHANCER))
    if preset is not None and families.get(preset.family).clip_window:
        from ourvidz.clip_tokens import best_counter

        run.clip_tokens = best_counter().count(result.text)
    return run
