"""Queue payloads (ourvidz.worker.payload): reading the production web back end's jobs and
building ours; no Redis, no worker. The worker loop against a real Redis is tests/test_worker.py."""

import json

import pytest

from ourvidz.overrides import Overrides
from ourvidz.plan import plan_job
from ourvidz.worker import payload

# A job as the production web back end pushed it (shared/spec/job-types.md), extra keys included.
PRODUCTION_VIDEO = {
    "id": "7d2c6f0e-3b1a-4c55-9a8e-0f6b2d9e4a11", "type": "video_fast", "prompt": "a sailboat crossing a calm bay at sunset",
    "config": {"size": "480*832", "sample_steps": 25, "sample_guide_scale": 6.5, "frame_num": 83,
               "enhance_prompt": False, "expected_time": 251.5, "content_type": "video", "file_extension": "mp4",
               "sample_solver": "unipc"},
    "user_id": "3f1e9b7c-2a44-4d0b-8c3e-6a5d1f2b9c70", "created_at": "2025-07-07T10:15:00.000Z",
    "negative_prompt": "blurry, watermark", "video_id": "c9a1e2f4-5b6d-4e7f-8a9b-0c1d2e3f4a5b", "image_id": None,
    "model_variant": "wan_2_1_1_3b", "bucket": "video_fast", "metadata": {"num_images": 1, "credits": 1, "source": "web"},
}
PRODUCTION_SDXL = {
    "id": "0b8e4a6c-1d2f-4e3a-9b5c-7d8e9f0a1b2c", "type": "sdxl_image_fast", "prompt": "a lighthouse on a cliff, stormy sky",
    "config": {"size": "1024*1024", "sample_steps": 15, "sample_guide_scale": 6.0, "enhance_prompt": False,
               "expected_time": 29.9, "content_type": "image", "file_extension": "png"},
    "user_id": "3f1e9b7c-2a44-4d0b-8c3e-6a5d1f2b9c70", "created_at": "2025-07-07T10:16:00.000Z",
    "negative_prompt": None, "video_id": None, "image_id": "5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9",
    "model_variant": "lustify_sdxl", "bucket": "sdxl_image_fast", "metadata": {"num_images": 2},
}



def test_parse_reads_the_production_fields():
    """A raw 2025-07 payload is taken as that era's worker took it: what it ignored (size, steps,
    guidance, frames, the composed negative) is recorded under `ignored`, not applied;
    `ourvidz submit`'s own payloads apply every value (the era tests cover each era)."""
    spec = payload.parse(json.dumps(PRODUCTION_VIDEO))
    assert (spec.id, spec.job_type, spec.era, spec.negative) == (PRODUCTION_VIDEO["id"], "video_fast", "2025-07", "")
    assert spec.overrides.as_dict() == {} and spec.ignored["negative_prompt_composed"] == "blurry, watermark"
    assert spec.notes == ["config.frame_num 83 -> 81 (Wan makes 4k+1 frames)"]
    sdxl = payload.parse(json.dumps(PRODUCTION_SDXL | {"seed": 7}))
    assert sdxl.overrides.as_dict() == {"num_images": 1}  # production's SDXL worker ran any count but 1/3/6 as 1
    custom = payload.parse(json.dumps({"id": "j1", "type": "image_fast", "prompt": "p", "config": {"size": "320x576",
                                       "sample_steps": "4", "sample_guide_scale": 5, "seed": 3, "enhance_prompt": True},
                                       "metadata": {"submitted_by": "ourvidz submit"}}))
    assert custom.overrides.as_dict() == {"width": 320, "height": 576, "steps": 4, "guidance": 5.0}
    assert (custom.seed, custom.enhance) == (3, True)
    assert [payload.made_frames(n, 4) for n in (1, 5, 17, 83, 84, 85)] == [1, 5, 17, 81, 81, 85]


@pytest.mark.parametrize("raw, message", [
    (b"not json", "not JSON"),
    (b"[1, 2]", "not an object"),
    ({"type": "image_fast", "prompt": "p"}, "no usable 'id'"),
    ({"id": "a/b", "type": "image_fast", "prompt": "p"}, "cannot name an output folder"),
    ({"id": "x", "prompt": "p"}, "no job 'type'"),
    ({"id": "x", "type": "video_ultra", "prompt": "p"}, "unknown job type 'video_ultra'"),
    ({"id": "x", "type": "image_fast"}, "no 'prompt'"),
    ({"id": "x", "type": "image_fast", "prompt": "p", "config": {"size": "big"}}, "config.size"),
    ({"id": "x", "type": "image_fast", "prompt": "p", "config": {"sample_steps": "many"}}, "config.sample_steps"),
    ({"id": "x", "type": "image_fast", "prompt": "p", "config": {"enhance_prompt": "maybe"}}, "config.enhance_prompt"),
    ({"id": "x", "type": "image_fast", "prompt": "p", "config": "fast"}, "'config' must be an object"),
])
def test_malformed_payloads_name_the_problem(raw, message):
    raw = raw if isinstance(raw, bytes) else json.dumps(raw).encode()
    with pytest.raises(payload.MalformedJob, match=message) as exc:
        payload.parse(raw)
    assert exc.value.job_id


def test_built_payload_reads_back_as_the_same_job():
    plan = plan_job("video_fast", "waves", overrides=Overrides(steps=3, frames=17), seed=5, negative="blur")
    job = payload.build(plan, seed=5, negative="blur")
    assert job["config"] | {"expected_time": None} == {"size": "480*832", "sample_steps": 3, "sample_guide_scale": 6.5,
                                                       "frame_num": 17, "enhance_prompt": False, "expected_time": None,
                                                       "content_type": "video", "file_extension": "mp4", "seed": 5}
    assert {"id", "type", "prompt", "user_id", "created_at", "negative_prompt", "video_id", "image_id",
            "model_variant", "bucket", "metadata"} <= set(job)
    spec = payload.parse(json.dumps(job))
    assert (spec.job_type, spec.prompt, spec.overrides.as_dict(), spec.seed, spec.negative) == \
        ("video_fast", "waves", {"steps": 3, "frames": 17}, 5, "blur")
