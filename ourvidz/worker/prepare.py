"""A queued job made ready to run, before any model loads: its reference image fetched and
checked, its plan made (prompt, sizes, seed, files), or a one-line error.

Reference modes (ourvidz.worker.eras):
- img2img: SDXL image-to-image on the resident SDXL components; denoise_strength from the payload
  (0 < d <= 1). diffusers runs int(steps * d) steps; when that is 0 the steps are raised to the
  fewest that run one, with a note in the record.
- exact_copy: the production worker's promptless copy: denoise <= 0.05 (and >= 0.01), guidance 1.0,
  no negative prompt, an empty prompt allowed; the steps are the fewest (at least 6) for which one
  denoising step runs (20 at 0.05).
- wan_start_frame, wan_end_frame, wan_start_end: need Wan image-to-video / first-last-frame weights
  that the ten job types do not load. Failed at once, naming the mode; never run as text-to-video.
"""

from __future__ import annotations

import math
from pathlib import Path

from ourvidz import families
from ourvidz.errors import BadInput
from ourvidz.worker.payload import QueuedJob

EXACT_COPY_DENOISE = (0.01, 0.05)
EXACT_COPY_MIN_STEPS = 6
WAN_MODES = {
    "wan_start_frame": "a start frame (image-to-video)",
    "wan_end_frame": "an end frame",
    "wan_start_end": "start and end frames (first-last-frame-to-video)",
}


def steps_running_one(denoise: float, at_least: int) -> int:
    """The fewest steps >= at_least for which int(steps * denoise) >= 1."""
    n = max(at_least, math.ceil(1 / denoise))
    while int(n * denoise) < 1:
        n += 1
    return n


def prepare(spec: QueuedJob, *, out_dir: Path, presets_dir, counter, demo: bool, reference_root: Path | None):
    """The job's plan, with its reference fetched; raises a one-line OurvidzError."""
    from ourvidz import reference as refs
    from ourvidz.plan import plan_job

    overrides, negative, auto_negative, ref = spec.overrides, spec.negative, True, None
    if spec.reference:
        mode = spec.reference.get("mode")
        if mode in WAN_MODES:
            raise BadInput(f"reference mode {mode} ({WAN_MODES[mode]}) needs Wan image-to-video weights that "
                           f"the ten job types do not load; {spec.job_type} runs text-to-video only, so this "
                           "job is refused rather than run without its reference")
        if mode not in ("img2img", "exact_copy") or not families.get(spec.preset.family).img2img:
            raise BadInput(f"reference mode {mode} is not supported for {spec.job_type} (SDXL img2img and "
                           "exact_copy are)")
        images = spec.reference.get("images") or []
        if len(images) != 1:
            raise BadInput(f"reference mode {mode} takes one image (got {len(images)})")
        denoise = spec.reference.get("denoise_strength")
        if denoise is None:
            denoise = 0.5
        if not 0 < denoise <= 1:
            raise BadInput(f"denoise_strength must be in (0, 1] (got {denoise})")
        steps = overrides.steps or spec.preset.steps
        if mode == "exact_copy":
            denoise = min(max(denoise, EXACT_COPY_DENOISE[0]), EXACT_COPY_DENOISE[1])
            overrides = overrides.merged({"guidance": 1.0, "steps": steps_running_one(denoise, EXACT_COPY_MIN_STEPS)})
            negative, auto_negative = "", False
        elif int(steps * denoise) < 1:
            spec.notes.append(f"steps {steps} at denoise_strength {denoise} run no step; raised to "
                              f"{steps_running_one(denoise, steps)}")
            overrides = overrides.merged({"steps": steps_running_one(denoise, steps)})
        ref = refs.fetch(images[0], local_root=reference_root)  # before the plan: an exact copy's prompt may be empty
        ref.mode, ref.denoise_strength = mode, round(denoise, 6)
    if spec.compel_weights:
        spec.notes.append("compel_weights recorded, not applied (prompt weighting is not part of this worker)")
    return plan_job(spec.job_type, spec.prompt, overrides=overrides, seed=spec.seed, negative=negative,
                    auto_negative=auto_negative, enhance=spec.enhance, out_dir=out_dir, presets_dir=presets_dir,
                    counter=counter, demo=demo, reference=ref)
