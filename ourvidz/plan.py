"""A job's resolved plan: the preset with overrides, the prompts, the seeds, the output files.

Every entry point (generate, batch, worker) makes a plan first; making it checks everything that
can be checked without a model (empty prompt, safety, sizes, existing files), so bad input fails
before anything loads.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ourvidz import families, layout
from ourvidz.clip_tokens import TokenCounter
from ourvidz.enhancement import EnhancementSettings, load_settings
from ourvidz.errors import BadInput
from ourvidz.negative import NegativePrompt, build_negative
from ourvidz.overrides import Overrides
from ourvidz.presets import Preset, load_preset
from ourvidz.safety import check_prompt

MAX_SEED = 2**32 - 1
DEMO_LONG_SIDE = 64  # the tiny demo models run at this size unless --width/--height say otherwise
MAX_PROMPT_CHARS = 20_000


@dataclass
class JobPlan:
    job_type: str
    preset: Preset  # with the overrides applied
    overrides: dict[str, Any]  # the fields the job changed (Overrides.as_dict()), as sidecars record them
    prompt: str
    negative: NegativePrompt
    auto_negative: bool
    seed: int
    enhance: bool
    out_dir: Path
    files: list[str] = field(default_factory=list)  # the media files, named by ourvidz.layout
    demo_resized_from: str | None = None  # "1024x1024" when the demo shrank the preset's size
    enhancement: EnhancementSettings | None = None  # resolved at plan time when enhance is on
    weighting: bool = True  # prompt weighting syntax, (word:1.3) and word++ (sdxl); False: literal text
    reference: Any = None  # ourvidz.reference.Reference: an image-to-image job's fetched reference
    notes: list[str] = field(default_factory=list)  # decisions taken for the job, in words (the report lists them)

    def note(self, text: str) -> None:
        if text not in self.notes:  # a plan run again (a retry) says it once
            self.notes.append(text)

    @property
    def seeds(self) -> list[int]:
        return [self.seed + i for i in range(self.preset.num_images)]

    def enhancement_settings(self) -> EnhancementSettings:
        """enhancement.yaml with the preset's `enhancement:` overrides, validated."""
        if self.enhancement is None:
            self.enhancement = load_settings(None, self.preset.enhancement, self.job_type)
        return self.enhancement

    def to_dict(self) -> dict[str, Any]:
        return {
            "job_type": self.job_type,
            "prompt": self.prompt,
            "negative_prompt": self.negative.to_dict(),
            "auto_negative": self.auto_negative,
            "seed": self.seed,
            "seeds": self.seeds,
            "enhance": self.enhance,
            "weighting": self.weighting,
            "overrides": self.overrides,
            "preset": self.preset.model_dump(),
            "out_dir": str(self.out_dir),
            "files": self.files,
            "demo_resized_from": self.demo_resized_from,
            "enhancement_settings": self.enhancement.model_dump() if self.enhancement else None,
            **({"reference": self.reference.to_dict()} if self.reference is not None else {}),
            **({"notes": list(self.notes)} if self.notes else {}),
        }


def one_gpu_reason(preset: Preset, gpus: int) -> str | None:
    """Why a job runs on one GPU although --gpus asked for more (its family's registry says which
    jobs do not scale: parallel_min_frames), in one line; None when it is spread over the GPUs."""
    spec = families.get(preset.family)
    if gpus <= 1 or not spec.parallel_min_frames or preset.frames >= spec.parallel_min_frames:
        return None
    what = "one-frame" if preset.frames == 1 else f"{preset.frames}-frame"
    return (f"ran on 1 of {gpus} GPUs: a {what} {spec.title} job is launch-bound and does not scale "
            f"(0.99x measured on 2 GPUs)")


def demo_size(preset: Preset) -> dict[str, int]:
    """The preset's aspect ratio at DEMO_LONG_SIDE, on the family's size grid: seconds on a CPU."""
    m = families.get(preset.family).size_multiple
    scale = DEMO_LONG_SIDE / max(preset.width, preset.height)
    return {k: max(m, round(getattr(preset, k) * scale / m) * m) for k in ("width", "height")}


def checked_prompt(prompt: str | None, purpose: str) -> str:
    """The prompt with whitespace collapsed, refused if empty, too long or unsafe."""
    prompt = " ".join((prompt or "").split())
    if not prompt:
        raise BadInput(f"the prompt is empty; say what to {purpose}")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise BadInput(f"the prompt is {len(prompt)} characters; the limit is {MAX_PROMPT_CHARS}")
    check_prompt(prompt)
    return prompt


def plan_job(
    job_type: str,
    prompt: str,
    *,
    overrides: Overrides | None = None,
    seed: int | None = None,
    negative: str = "",
    auto_negative: bool = True,
    enhance: bool | None = None,
    out_dir: Path | None = None,
    presets_dir: Path | str | None = None,
    counter: TokenCounter | None = None,
    demo: bool = False,
    weighting: bool = True,
    reference=None,
) -> JobPlan:
    """reference: a fetched ourvidz.reference.Reference (image-to-image); its exact-copy mode
    may have an empty prompt (an upload copied as it is)."""
    if reference is not None and reference.mode == "exact_copy" and not " ".join((prompt or "").split()):
        prompt = ""
    else:
        prompt = checked_prompt(prompt, "generate")
    # The negative prompt is not checked: it says what must NOT appear, so naming minors there
    # ("child, minor, ...", as the production system's own negative does) protects.
    overrides = overrides or Overrides()
    preset = load_preset(job_type, presets_dir).with_overrides(overrides)
    resized = None
    if demo and overrides.width is None and overrides.height is None:
        small = demo_size(preset)
        if (small["width"], small["height"]) != (preset.width, preset.height):
            resized = f"{preset.width}x{preset.height}"
            preset = preset.with_overrides(small)
    if seed is None:
        seed = secrets.randbelow(MAX_SEED - preset.num_images)
    elif not 0 <= seed <= MAX_SEED - preset.num_images + 1:
        raise BadInput(f"--seed must be between 0 and {MAX_SEED - preset.num_images + 1} (got {seed})")
    neg = build_negative(preset.negative_strategy, negative, auto=auto_negative, counter=counter)
    if weighting and families.get(preset.family).clip_window:
        from ourvidz.weighting import parse

        parse(prompt)  # bad weighting syntax fails here, before any model loads
        parse(neg.text)
    out_dir = Path(out_dir) if out_dir else layout.generate_dir(job_type, seed)
    files = layout.media_files(preset)
    taken = [f for f in files if (out_dir / f).exists()]
    if taken:
        raise BadInput(f"{out_dir} already holds {taken[0]}; ourvidz never overwrites: choose another --out")
    enhance = preset.enhance if enhance is None else enhance
    settings = load_settings(presets_dir, preset.enhancement, job_type) if enhance else None
    return JobPlan(
        job_type=job_type,
        preset=preset,
        overrides=overrides.as_dict(),
        prompt=prompt,
        negative=neg,
        auto_negative=auto_negative,
        seed=seed,
        enhance=enhance,
        out_dir=out_dir,
        files=files,
        demo_resized_from=resized,
        enhancement=settings,
        weighting=weighting,
        reference=reference,
    )
