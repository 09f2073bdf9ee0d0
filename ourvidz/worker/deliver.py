"""What a finished job hands on: thumbnails beside its media, its files in the object store
(--store), and the callback's asset objects and job metadata (production contract:
docs/production-payloads.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image

from ourvidz import layout

THUMB_SIDE = 256  # the long side, as the production worker made them (WEBP, quality 85)


def thumbnail_name(media: Path) -> Path:
    return media.with_name(layout.thumbnail(media.name))


def make_thumbnail(media: Path) -> Path:
    """media's thumbnail beside it: a PNG scaled, or a video's first frame; 256 px long side, WEBP."""
    if media.suffix == ".mp4":
        import av

        with av.open(str(media)) as container:
            image = next(container.decode(video=0)).to_image()
    else:
        with Image.open(media) as img:
            image = img.convert("RGB")
    image.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.LANCZOS)
    if max(image.size) < THUMB_SIDE:  # a small (demo) output: scaled up, so every thumbnail is 256 long
        scale = THUMB_SIDE / max(image.size)
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.LANCZOS)
    out = thumbnail_name(media)
    tmp = out.with_suffix(".tmp")
    image.save(tmp, "WEBP", quality=85)
    tmp.replace(out)
    return out


def asset_objects(result, media: list[Path], urls: list[str], thumbs: list[str], spec) -> list[dict[str, Any]]:
    """One object per media file: {type, url, thumbnail_url, metadata: {seed, ...}}."""
    plan, preset = result.plan, result.plan.preset
    ref = plan.reference
    assets = []
    for i, (path, url, thumb) in enumerate(zip(media, urls, thumbs)):
        meta: dict[str, Any] = {
            "seed": plan.seeds[i] if not preset.is_video else plan.seed, "asset_index": i,
            "width": preset.width, "height": preset.height, "format": path.suffix.lstrip("."),
            "file_size_bytes": path.stat().st_size, "steps": preset.steps, "guidance_scale": preset.guidance,
            "negative_prompt_used": bool(plan.negative.text), "batch_size": len(media),
        }
        if preset.is_video:
            meta |= {"frame_num": preset.frames, "fps": preset.fps, "duration_seconds": preset.frames / preset.fps,
                     "generation_seed": plan.seed}
        if ref is not None:
            meta |= {"pipeline": "img2img", "denoise_strength": ref.denoise_strength, "reference_mode": ref.mode}
        assets.append({"type": "video" if preset.is_video else "image", "url": url, "thumbnail_url": thumb,
                       "metadata": meta})
    return assets


def job_metadata(result, spec) -> dict[str, Any]:
    """The callback's job metadata: seed, generation_time, num_images, frame_num and the like."""
    plan, preset, report = result.plan, result.plan.preset, result.report
    meta: dict[str, Any] = {
        "seed": plan.seed, "generation_time": round(report["total"], 3), "num_images": len(plan.files),
        "frame_num": preset.frames, "job_type": plan.job_type, "era": spec.era, "width": preset.width,
        "height": preset.height, "steps": preset.steps, "guidance_scale": preset.guidance,
        "final_prompt": plan.prompt, "demo": bool(report.get("demo")),
    }
    if spec.compel_weights:
        meta["compel_weights"] = spec.compel_weights  # recorded; weighting is not applied here
    if plan.reference is not None:
        meta |= {"reference_mode": plan.reference.mode, "denoise_strength": plan.reference.denoise_strength}
    return meta


def deliver(result, spec, store) -> dict[str, Any]:
    """Thumbnails made, files uploaded (all of them, or the attempt fails), callback parts built."""
    from ourvidz.worker.upload import storage_keys

    media = [p for p in result.files if p.suffix in (".png", ".mp4")]
    thumbs = [make_thumbnail(p) for p in media]
    stored: list[str] = []
    if store is not None:
        keys = storage_keys(spec.user_id, spec.id, [p.name for p in media])
        stored = store.upload([(t, tk) for t, (_, tk) in zip(thumbs, keys)] + [(m, mk) for m, (mk, _) in zip(media, keys)])
        thumb_urls, urls = stored[:len(media)], stored[len(media):]
    else:
        urls, thumb_urls = [str(p.resolve()) for p in media], [str(t.resolve()) for t in thumbs]
    return {"assets": asset_objects(result, media, urls, thumb_urls, spec), "metadata": job_metadata(result, spec),
            "stored": stored, "thumbnails": [str(t.resolve()) for t in thumbs]}
