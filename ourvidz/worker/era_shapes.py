"""The readers of each production era's payload shape (ourvidz.worker.eras recognises the era and
unwraps the element; docs/production-payloads.md has the history): 2025-06 camelCase, 2025-07
{id, type, config}, the 2025-08-16 {"data": ...} inner forms, 2025-08 / 2026-02 {config: {pipeline}},
and the callback contract each era's job-callback expected."""

from __future__ import annotations

from typing import Any

from ourvidz import families
from ourvidz.worker.era_common import (  # noqa: I001
    SDXL, WAN, made_frames,
    EXACT_COPY_MAX_DENOISE, RESOLUTION_RE, SDXL_NUM_IMAGES, NormalizedJob, _Ctx, _family, _job_type, _leftover,
    _present, _prompt, _short, _user_id,
)

# ---------------------------------------------------------- 2025-06: camelCase (worker.py, early sdxl/wan workers)
def _camel(data: dict[str, Any], ctx: _Ctx, era: str) -> NormalizedJob:
    job_type = _job_type(data.get("jobType"), ctx)
    metadata = ctx.obj(data.get("metadata"), "metadata")
    prompt = _prompt(data.get("prompt"), ctx, exact_copy=False)
    overrides: dict[str, Any] = {}
    ignored: dict[str, Any] = {}
    # sdxl_worker.py 1632e94 (2025-07-02) read metadata.num_images (default 6); Wan made one output.
    count = metadata.get("num_images", data.get("numImages"))
    if count is not None:
        count = ctx.int_(count, "numImages", 1)
        if _family(job_type) == SDXL:
            overrides["num_images"] = count if count in SDXL_NUM_IMAGES else 1
        elif count != 1:
            ignored["num_images"] = count
    negative = metadata.get("userNegativePrompt")
    negative = ctx.str_(negative, "metadata.userNegativePrompt") if negative is not None else ""
    if data.get("negativePrompt"):
        ignored["negative_prompt_composed"] = ctx.str_(data["negativePrompt"], "negativePrompt")
    used = {"jobId", "jobType", "prompt", "userId", "numImages", "negativePrompt", "metadata", "bucket",
            "videoId", "imageId"}
    bucket = data.get("bucket") if isinstance(data.get("bucket"), str) else job_type
    return NormalizedJob(
        id=ctx.job_id, era=era, job_type=job_type, prompt=prompt, negative_prompt=negative, overrides=overrides,
        enhance=job_type.endswith("_enhanced"), user_id=_user_id(data.get("userId"), ctx, "userId"),
        callback=_callback_old(data, ctx.job_id, job_type, bucket, camel=True),
        ignored=ignored, unknown={**_leftover(data, used), **_leftover(metadata, {"num_images", "userNegativePrompt"},
                                                                         "metadata.")})


# ---------------------------------------------------------- 2025-07: {id, type, config: {size|width..}} (LPUSH)
def _july(data: dict[str, Any], ctx: _Ctx, era: str) -> NormalizedJob:
    job_type = _job_type(data.get("type", data.get("job_type")), ctx)
    family = _family(job_type)
    config = ctx.obj(data.get("config"), "config")
    metadata = ctx.obj(data.get("metadata"), "metadata")
    everything = era == "ourvidz"  # our own submissions: every value is meant
    prompt = _prompt(data.get("prompt"), ctx, exact_copy=False)
    overrides: dict[str, Any] = {}
    ignored: dict[str, Any] = {}
    notes: list[str] = []
    used_cfg: set[str] = set()
    used_meta: set[str] = set()

    def put(name: str, value: Any, honoured: bool) -> None:
        (overrides if honoured or everything else ignored)[name] = value

    if config.get("size") is not None:
        m = RESOLUTION_RE.fullmatch(str(config["size"]))
        if not m:
            ctx.fail(f"config.size must be 'WIDTH*HEIGHT' like '480*832' (got {_short(config['size'])})")
        put("width", int(m.group(1)), False)
        put("height", int(m.group(2)), False)
        used_cfg.add("size")
    for key in ("width", "height"):
        if config.get(key) is not None:
            put(key, ctx.int_(config[key], f"config.{key}", 64), False)  # SDXL worker used its own 1024x1024
            used_cfg.add(key)
    steps_key = "num_inference_steps" if config.get("num_inference_steps") is not None else "sample_steps"
    if config.get(steps_key) is not None:
        put("steps", ctx.int_(config[steps_key], f"config.{steps_key}", 1), False)
        used_cfg.add(steps_key)
    guide_key = "guidance_scale" if config.get("guidance_scale") is not None else "sample_guide_scale"
    if config.get(guide_key) is not None:
        put("guidance", ctx.float_(config[guide_key], f"config.{guide_key}"), False)
        used_cfg.add(guide_key)
    used_cfg.update(k for k in ("num_inference_steps", "sample_steps", "guidance_scale", "sample_guide_scale")
                    if k in config and config[k] is None)
    if config.get("frame_num") is not None:
        frames = ctx.int_(config["frame_num"], "config.frame_num", 1)
        step = families.get(family).frame_step
        if step and frames > 1 and made_frames(frames, step) != frames:
            notes.append(f"config.frame_num {frames} -> {made_frames(frames, step)} "
                         f"({families.get(family).title} makes {step}k+1 frames)")
            frames = made_frames(frames, step)
        if family == WAN or everything:
            put("frames", frames, False)  # wan_worker.py generated with its own job_configs frame_num
        used_cfg.add("frame_num")
    # num_images: config (sdxl_worker.py d183f4a, 2025-07-13 on), else metadata (the 2025-07-06 form)
    count_src = "config" if config.get("num_images") is not None else "metadata"
    count = config.get("num_images") if count_src == "config" else metadata.get("num_images")
    if count is not None:
        count = ctx.int_(count, f"{count_src}.num_images", 1)
        if family == SDXL:
            put("num_images", count if (count in SDXL_NUM_IMAGES or everything) else 1, True)
        elif count != 1 or everything:
            put("num_images", count, False)
        (used_cfg if count_src == "config" else used_meta).add("num_images")
    seed_src = next((s for s in (("config", config.get("seed")), ("top", data.get("seed")),
                                 ("metadata", metadata.get("seed"))) if s[1] is not None), None)
    if seed_src:
        seed = ctx.int_(seed_src[1], "seed")
        # sdxl_worker.py 25979d5 (2025-07-18) on: config.seed, used when truthy; Wan never took a seed
        put("seed", seed, family == SDXL and seed_src[0] == "config" and seed != 0)
        {"config": used_cfg, "metadata": used_meta}.get(seed_src[0], set()).add("seed")
    enhance = None
    if config.get("enhance_prompt") is not None:
        enhance = ctx.bool_(config["enhance_prompt"], "config.enhance_prompt")  # wan_worker.py: final_config
        used_cfg.add("enhance_prompt")
    elif job_type.endswith("_enhanced"):
        enhance = True
    compel = _compel(data, config, ctx)
    negative = metadata.get("userNegativePrompt")
    negative = ctx.str_(negative, "metadata.userNegativePrompt") if negative is not None else ""
    used_meta.add("userNegativePrompt")
    top_negative = data.get("negative_prompt")
    if top_negative is not None:
        top_negative = ctx.str_(top_negative, "negative_prompt")
        if everything:
            negative = top_negative  # ourvidz submit sends the user's own text there
        elif top_negative:
            ignored["negative_prompt_composed"] = top_negative  # composed by queue-job; workers had their own
    reference = _july_reference(data, config, metadata, family, ctx, ignored, used_cfg, used_meta)
    used = {"id", "type", "job_type", "prompt", "config", "metadata", "user_id", "negative_prompt", "seed",
            "compel_enabled", "compel_weights", "bucket", "video_id", "image_id", "reference_image_url",
            "reference_strength", "reference_type", "exact_copy_mode", "start_reference_url", "end_reference_url"}
    used_cfg.update({"compel_enabled", "compel_weights"})
    return NormalizedJob(
        id=ctx.job_id, era=era, job_type=job_type, prompt=prompt, negative_prompt=negative, overrides=overrides,
        enhance=enhance, compel_weights=compel if family == SDXL else None, reference=reference,
        user_id=_user_id(data.get("user_id"), ctx, "user_id"),
        callback=_callback_old(data, ctx.job_id, job_type,
                               data["bucket"] if isinstance(data.get("bucket"), str) else job_type, camel=False),
        ignored=ignored, notes=notes,
        unknown={**_leftover(data, used), **_leftover(config, used_cfg, "config."),
                 **_leftover(metadata, used_meta, "metadata.")})


def _compel(data: dict[str, Any], config: dict[str, Any], ctx: _Ctx) -> str | None:
    enabled = data.get("compel_enabled", config.get("compel_enabled"))
    weights = data.get("compel_weights", config.get("compel_weights"))
    if enabled is not None:
        enabled = ctx.bool_(enabled, "compel_enabled")
    if weights is not None:
        weights = ctx.str_(weights, "compel_weights")
    # sdxl_worker.py used the weights only when compel_enabled and compel_weights were both set
    return weights if enabled and weights else None


def _july_reference(data, config, metadata, family, ctx, ignored, used_cfg, used_meta):
    if family == WAN:
        start = config.get("first_frame") or metadata.get("start_reference_url") or data.get("start_reference_url")
        end = config.get("last_frame") or metadata.get("end_reference_url") or data.get("end_reference_url")
        single = config.get("image") or metadata.get("reference_image_url")
        used_cfg.update({"first_frame", "last_frame", "image", "reference_image_url", "reference_strength",
                         "reference_type", "exact_copy_mode"})
        used_meta.update({"start_reference_url", "end_reference_url", "reference_image_url", "reference_strength"})
        strength = metadata.get("reference_strength")
        denoise = None if strength is None else round(1.0 - ctx.float_(strength, "metadata.reference_strength"), 6)
        return _wan_reference(single, start, end, denoise, ctx)
    # sdxl_worker.py (2025-07) read only metadata.reference_image_url / reference_strength / reference_type;
    # queue-job put the URL at the top level and in config (its metadata carried the client's reference_url).
    url = metadata.get("reference_image_url")
    used_meta.update({"reference_image_url", "reference_strength", "reference_type"})
    used_cfg.update({"reference_image_url", "reference_strength", "reference_type", "exact_copy_mode",
                     "denoise_strength"})
    if _present(url):
        strength = metadata.get("reference_strength", 0.5)
        return {"mode": "img2img", "images": [ctx.str_(url, "metadata.reference_image_url")],
                "denoise_strength": round(1.0 - ctx.float_(strength, "metadata.reference_strength"), 6)}
    asked = data.get("reference_image_url") or config.get("reference_image_url")
    if _present(asked):
        exact = data.get("exact_copy_mode", config.get("exact_copy_mode"))
        ignored["reference"] = {"mode": "exact_copy" if exact is True else "img2img", "images": [asked],
                                "denoise_strength": config.get("denoise_strength")}
    return None


def _wan_reference(single, start, end, denoise, ctx) -> dict[str, Any] | None:
    for name, value in (("image", single), ("first_frame", start), ("last_frame", end)):
        if value is not None and not isinstance(value, str):
            ctx.fail(f"reference {name} must be a URL (got {type(value).__name__})")
    if start and end:
        return {"mode": "wan_start_end", "images": [start, end], "denoise_strength": denoise}
    if start:
        return {"mode": "wan_start_frame", "images": [start], "denoise_strength": denoise}
    if end:
        return {"mode": "wan_end_frame", "images": [end], "denoise_strength": denoise}
    if single:  # wan_worker.py 'single' mode: the image conditions the opening frame
        return {"mode": "wan_start_frame", "images": [single], "denoise_strength": denoise, "wan_mode": "single"}
    return None


# ---------------------------------------------------------- 2025-08-16: {"data": "..."} (RPUSH), inner forms
def _data_era(data: dict[str, Any], ctx: _Ctx, era: str) -> NormalizedJob:
    """queue-job 120a8cf6..8b8f7537: no config at all; workers of the day read id/type/user_id/config,
    so camelCase inners failed there (KeyError 'id') and the snake inner ran on worker defaults."""
    job_type = _job_type(data.get("type", data.get("job_type", data.get("jobType"))), ctx)
    family = _family(job_type)
    metadata = ctx.obj(data.get("metadata"), "metadata")
    prompt = _prompt(data.get("prompt", data.get("enhanced_prompt", data.get("enhancedPrompt"))), ctx,
                     exact_copy=bool(metadata.get("exact_copy_mode")))
    ignored: dict[str, Any] = {}
    if data.get("seed") is not None:
        ignored["seed"] = ctx.int_(data["seed"], "seed")  # top-level seed: no worker read it
    url = data.get("reference_image_url", data.get("referenceImageUrl"))
    if _present(url):
        ignored["reference"] = {"mode": "img2img", "images": [url], "denoise_strength": None}
    used = {"id", "jobId", "job_id", "type", "job_type", "jobType", "prompt", "enhanced_prompt", "enhancedPrompt",
            "user_id", "userId", "seed", "reference_image_url", "referenceImageUrl", "metadata"}
    return NormalizedJob(
        id=ctx.job_id, era=era, job_type=job_type, prompt=prompt, overrides={}, enhance=False,
        user_id=_user_id(data.get("user_id", data.get("userId")), ctx, "user_id"),
        callback=_callback_new(ctx.job_id, data.get("user_id", data.get("userId")), family),
        ignored=ignored, unknown={**_leftover(data, used), **_leftover(metadata, set(), "metadata.")},
        notes=["the producer's prompt is already enhanced (or deliberately not)"])


# ---------------------------------------------------------- 2025-08 / 2026-02: {id, type, config: {pipeline..}}
def _august(data: dict[str, Any], ctx: _Ctx, era: str) -> NormalizedJob:
    job_type = _job_type(data.get("type", data.get("job_type")), ctx)
    family = _family(job_type)
    config = ctx.obj(data.get("config"), "config")
    metadata = ctx.obj(data.get("metadata"), "metadata")
    overrides: dict[str, Any] = {}
    ignored: dict[str, Any] = {}
    notes: list[str] = []
    used_cfg: set[str] = set()
    used_meta: set[str] = set()
    exact = metadata.get("exact_copy_mode")
    exact = ctx.bool_(exact, "metadata.exact_copy_mode") if exact is not None else False
    prompt = _prompt(data.get("prompt"), ctx, exact_copy=exact)
    sdxl = family == SDXL

    # steps: config.num_inference_steps (b2d9f604, 2025-08-20 on); config.steps before it, which no worker read
    for key, name in (("num_inference_steps", "steps"), ("steps", "steps"), ("guidance_scale", "guidance")):
        if config.get(key) is None:
            used_cfg.add(key)
            continue
        value = ctx.int_(config[key], f"config.{key}", 1) if name == "steps" else ctx.float_(config[key], f"config.{key}")
        used_cfg.add(key)
        honoured = sdxl and key != "steps" and not (exact and _present(metadata.get("reference_image_url")))
        if name in overrides or name in ignored:
            continue
        (overrides if honoured else ignored)[name] = value
    for key in ("width", "height"):  # not sent by queue-job, but the merged SDXL config (79ff477) takes them
        if config.get(key) is not None:
            (overrides if sdxl else ignored)[key] = ctx.int_(config[key], f"config.{key}", 64)
            used_cfg.add(key)
    if config.get("resolution") is not None:
        m = RESOLUTION_RE.fullmatch(str(config["resolution"])) if isinstance(config["resolution"], str) else None
        if m:  # neither worker read resolution, so a bad one never failed a job: keep it, raw, in unknown
            ignored.setdefault("width", int(m.group(1)))
            ignored.setdefault("height", int(m.group(2)))
            used_cfg.add("resolution")
        else:
            notes.append(f"config.resolution {_short(config['resolution'])} is not 'WIDTHxHEIGHT' (ignored)")
    count = config.get("num_images", metadata.get("num_images"))
    if count is not None:
        count = ctx.int_(count, "config.num_images", 1)
        if sdxl:
            overrides["num_images"] = count if count in SDXL_NUM_IMAGES else 1
        elif count != 1:
            ignored["num_images"] = count
        used_cfg.add("num_images")
        used_meta.add("num_images")
    if config.get("seed") is not None:
        seed = ctx.int_(config["seed"], "config.seed")
        (overrides if sdxl and seed != 0 else ignored)["seed"] = seed  # Wan never took a seed
        used_cfg.add("seed")
    if config.get("frame_num") is not None:
        ignored["frames"] = ctx.int_(config["frame_num"], "config.frame_num", 1)
        used_cfg.add("frame_num")
    for key in ("sample_solver", "sample_shift", "pipeline", "denoise_strength", "negative_prompt"):
        used_cfg.add(key)
    if config.get("sample_solver") is not None and not sdxl:
        ignored["sample_solver"] = config["sample_solver"]  # wan_worker.py used its job_configs' solver
    compel = _compel(data, {}, ctx) if sdxl else None
    # the user's own negative text: queue-job composed negative_prompt = base (negative_prompts table) + user's
    negative = metadata.get("negative_prompt")
    if negative is None and isinstance(config.get("negative_prompt"), str):
        negative = config["negative_prompt"]  # feb4264e..5340f900 put the user's text in config
    negative = ctx.str_(negative, "metadata.negative_prompt") if negative is not None else ""
    used_meta.add("negative_prompt")
    if isinstance(data.get("negative_prompt"), str) and data["negative_prompt"]:
        ignored["negative_prompt_composed"] = data["negative_prompt"]  # sdxl_worker.py used its own list
    elif data.get("negative_prompt") is not None and not isinstance(data["negative_prompt"], str):
        ctx.fail(f"negative_prompt must be text (got {type(data['negative_prompt']).__name__})")

    reference = None
    if sdxl:
        url = metadata.get("reference_image_url")
        used_meta.update({"reference_image_url", "denoise_strength", "reference_strength", "exact_copy_mode"})
        if _present(url):
            url = ctx.str_(url, "metadata.reference_image_url")
            denoise = metadata.get("denoise_strength")
            if denoise is not None:
                denoise = ctx.float_(denoise, "metadata.denoise_strength")
            else:  # sdxl_worker.py: 1 - reference_strength (default 0.5)
                denoise = 1.0 - ctx.float_(metadata.get("reference_strength", 0.5), "metadata.reference_strength")
            if exact:
                if denoise > EXACT_COPY_MAX_DENOISE:
                    notes.append(f"exact copy: denoise_strength {denoise} -> {EXACT_COPY_MAX_DENOISE} (worker clamp)")
                denoise = min(denoise, EXACT_COPY_MAX_DENOISE)
            reference = {"mode": "exact_copy" if exact else "img2img", "images": [url],
                         "denoise_strength": round(denoise, 6)}
            if exact:
                negative = ""  # the worker omits every negative prompt in an exact copy
    else:
        single = config.get("image") or metadata.get("reference_image_url")
        start = config.get("first_frame") or metadata.get("start_reference_url")
        end = config.get("last_frame") or metadata.get("end_reference_url")
        used_cfg.update({"image", "first_frame", "last_frame"})
        used_meta.update({"reference_image_url", "start_reference_url", "end_reference_url", "denoise_strength",
                          "reference_strength"})
        denoise = metadata.get("denoise_strength")
        if denoise is None and metadata.get("reference_strength") is not None:
            denoise = round(1.0 - ctx.float_(metadata["reference_strength"], "metadata.reference_strength"), 6)
        elif denoise is not None:
            denoise = ctx.float_(denoise, "metadata.denoise_strength")
        reference = _wan_reference(single, start, end, denoise, ctx)
    used = {"id", "type", "job_type", "job_id", "prompt", "user_id", "config", "metadata", "negative_prompt",
            "compel_enabled", "compel_weights"}
    return NormalizedJob(
        id=ctx.job_id, era=era, job_type=job_type, prompt=prompt, negative_prompt=negative, overrides=overrides,
        enhance=False, compel_weights=compel, reference=reference,
        user_id=_user_id(data.get("user_id"), ctx, "user_id"),
        callback=_callback_new(ctx.job_id, data.get("user_id"), family),
        ignored=ignored, notes=notes + ["the producer's prompt is already enhanced (or deliberately not)"],
        unknown={**_leftover(data, used), **_leftover(config, used_cfg, "config."),
                 **_leftover(metadata, used_meta, "metadata.")})


# ---------------------------------------------------------- callbacks
def _callback_old(data: dict[str, Any], job_id: str, job_type: str, bucket: str, camel: bool) -> dict[str, Any]:
    """2025-06/07: POST {SUPABASE_URL}/functions/v1/job-callback, Authorization: Bearer <service key>;
    files in a bucket named after the job type, assets as path strings."""
    user = data.get("userId" if camel else "user_id")
    return {"url_path": "/functions/v1/job-callback", "auth": "bearer_service_key", "signature": False,
            "body": "camel" if camel else "snake", "job_id": job_id, "bucket": bucket,
            "assets_as": "paths", "path_prefix": f"{user}/" if isinstance(user, (str, int)) else None,
            "video_id": data.get("videoId" if camel else "video_id"),
            "image_id": data.get("imageId" if camel else "image_id")}


def _callback_new(job_id: str, user_id: Any, family: str) -> dict[str, Any]:
    """2025-08 on: files in workspace-temp at {user_id}/{job_id}/{i}.png (0.mp4 for Wan) plus
    {i}.thumb.webp; assets as objects. job-callback verifies X-Callback-Signature from 2026-04-07."""
    user = str(user_id) if isinstance(user_id, (str, int)) and not isinstance(user_id, bool) else None
    ext = "png" if family == SDXL else "mp4"
    return {"url_path": "/functions/v1/job-callback", "auth": "bearer_service_key",
            "signature": "X-Callback-Signature: sha256=<hex HMAC-SHA256(JOB_CALLBACK_SECRET, raw body)>",
            "body": "snake", "job_id": job_id, "bucket": "workspace-temp", "assets_as": "objects",
            "path": f"{user}/{job_id}/{{i}}.{ext}" if user else None,
            "thumbnail": f"{user}/{job_id}/{{i}}.thumb.webp" if user else None}
