"""ourvidz.worker.eras: every production era's list element parses to what its fixture expects;
malformed elements raise PayloadError under the real id; nothing else is ever raised."""

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ourvidz.errors import BadInput
from ourvidz.worker.eras import JOB_TYPES, NormalizedJob, PayloadError, fallback_id, parse_element

FIXTURES = sorted((Path(__file__).parent / "fixtures" / "payloads").glob("*.json"))


def load(path):
    return json.loads(path.read_text(encoding="utf-8"))


def test_there_are_fixtures_for_every_era_and_case():
    names = {p.stem for p in FIXTURES}
    eras = {load(p)["era"] for p in FIXTURES}
    assert {"2025-06", "2025-07", "2025-08-data", "2025-08", "2026-02"} <= eras
    for era in ("2025-06", "2025-07", "2025-08", "2026-02"):
        assert f"{era}-sdxl-image" in names and f"{era}-wan-video" in names
    for case in ("2025-07-enhanced", "2025-08-sdxl-img2img", "2026-02-exact-copy", "2026-02-wan-reference-frames"):
        assert case in names


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_fixture_parses_to_expect(path):
    fx = load(path)
    assert fx["push"] in ("LPUSH", "RPUSH") and isinstance(fx["element"], str)
    job = parse_element(fx["element"])
    assert isinstance(job, NormalizedJob)
    assert job.era == fx["era"]
    assert job.job_type in JOB_TYPES
    for key, want in fx["expect"].items():
        got = getattr(job, key)
        if key == "callback":
            for k, v in want.items():
                assert got.get(k) == v, (key, k)
        else:
            assert got == want, key
    # the same element as bytes reads the same
    assert parse_element(fx["element"].encode("utf-8")) == job


def test_array_wrapper_is_the_exact_element():
    fx = load(next(p for p in FIXTURES if p.stem == "2026-02-sdxl-image"))
    outer = json.loads(fx["element"])
    assert isinstance(outer, list) and len(outer) == 1 and isinstance(outer[0], str)
    assert json.loads(outer[0])["id"] == fx["expect"]["id"]


def test_exact_copy_prompt_may_be_absent():
    fx = load(next(p for p in FIXTURES if p.stem == "2026-02-exact-copy"))
    payload = json.loads(json.loads(fx["element"])[0])
    del payload["prompt"]
    job = parse_element(json.dumps([json.dumps(payload)]))
    assert job.prompt == "" and job.reference["mode"] == "exact_copy"


def test_exact_copy_denoise_is_clamped():
    fx = load(next(p for p in FIXTURES if p.stem == "2026-02-exact-copy"))
    payload = json.loads(json.loads(fx["element"])[0])
    payload["metadata"]["denoise_strength"] = 0.3
    job = parse_element(json.dumps(payload))
    assert job.reference["denoise_strength"] == 0.05 and job.notes


def test_ourvidz_submit_form_keeps_every_value():
    element = json.dumps({
        "id": "j1", "type": "video_fast", "prompt": "p", "negative_prompt": "mine",
        "config": {"size": "480*832", "sample_steps": 12, "sample_guide_scale": 4.0, "frame_num": 83, "seed": 5,
                   "enhance_prompt": True},
        "metadata": {"num_images": 1, "submitted_by": "ourvidz submit"}})
    job = parse_element(element)
    assert job.era == "ourvidz"
    assert job.overrides == {"width": 480, "height": 832, "steps": 12, "guidance": 4.0, "frames": 81, "seed": 5,
                             "num_images": 1}
    assert job.negative_prompt == "mine" and job.enhance is True


def test_a_bad_resolution_is_not_fatal():  # production ignored resolution, so it never failed a job
    job = parse_element(json.dumps({**GOOD, "config": {"resolution": "big"}}))
    assert job.unknown["config.resolution"] == "big" and "width" not in job.ignored


def test_unknown_keys_are_kept():
    fx = load(next(p for p in FIXTURES if p.stem == "2025-08-wan-video"))
    job = parse_element(fx["element"])
    assert job.unknown["quality"] == "fast" and job.unknown["metadata.video_reference_mode"] == "none"


# ------------------------------------------------------------------ malformed
GOOD = {"id": "abc-123", "type": "sdxl_image_fast", "prompt": "x", "user_id": "u",
        "config": {"pipeline": "txt2img", "num_images": 1}}


@pytest.mark.parametrize("change, words", [
    ({"type": "nope"}, "unknown job type"),
    ({"type": None, "job_type": None}, "no job 'type'"),
    ({"prompt": 5}, "prompt"),
    ({"config": []}, "'config' must be an object"),
    ({"config": {"num_inference_steps": "many"}}, "num_inference_steps"),
    ({"config": {"guidance_scale": float("nan")}}, "guidance_scale"),
    ({"config": {"num_images": "x"}}, "num_images"),
    ({"config": {"seed": True}}, "seed"),
    ({"metadata": {"reference_image_url": "u", "denoise_strength": "lots"}}, "denoise_strength"),
    ({"negative_prompt": 3}, "negative_prompt"),
])
@pytest.mark.parametrize("wrap", ["plain", "array"])
def test_malformed_keeps_the_id(change, words, wrap):
    payload = {**GOOD, **change}
    element = json.dumps(payload) if wrap == "plain" else json.dumps([json.dumps(payload)])
    with pytest.raises(PayloadError) as info:
        parse_element(element)
    assert info.value.job_id == "abc-123"
    assert words in str(info.value)
    assert isinstance(info.value, BadInput)


@pytest.mark.parametrize("element, job_id", [
    ('{"jobId": "c-1", "jobType": "video_slow", "prompt": "p"}', "c-1"),
    ('{"id": 42, "type": "bad"}', "42"),
    ('{"id": "has/slash", "type": "video_fast", "prompt": "p"}', "has/slash"),
    ('{"data": "{\\"jobId\\": \\"d-1\\", \\"jobType\\": 7}"}', "d-1"),
    ('["{\\"id\\": \\"a-1\\"}", "{\\"id\\": \\"a-2\\"}"]', "a-1"),
    ('["{\\"id\\": \\"a-3\\", \\"type\\": \\"video_fast\\", \\"prompt\\": null}"]', "a-3"),
])
def test_malformed_named_ids(element, job_id):
    with pytest.raises(PayloadError) as info:
        parse_element(element)
    assert info.value.job_id == job_id


@pytest.mark.parametrize("element", [b"", b"\xff\xfe", b"not json", b"[]", b'["not json"]', b"null", b'"str"',
                                     b'{"prompt": "no id"}', b"[" * 100000])
def test_malformed_without_id_gets_a_stable_fallback(element):
    with pytest.raises(PayloadError) as info:
        parse_element(element)
    assert info.value.job_id == fallback_id(element)


# ------------------------------------------------------------------ never anything else
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=6),
    max_leaves=30)
KEYS = ["id", "jobId", "job_id", "type", "jobType", "job_type", "prompt", "config", "metadata", "user_id",
        "negative_prompt", "compel_enabled", "compel_weights", "data", "seed", "bucket"]
CONFIG_KEYS = ["size", "resolution", "width", "height", "num_inference_steps", "steps", "sample_steps",
               "guidance_scale", "sample_guide_scale", "frame_num", "num_images", "seed", "enhance_prompt",
               "pipeline", "denoise_strength", "image", "first_frame", "last_frame", "sample_solver"]
META_KEYS = ["reference_image_url", "denoise_strength", "reference_strength", "exact_copy_mode", "num_images",
             "start_reference_url", "end_reference_url", "negative_prompt", "submitted_by", "userNegativePrompt"]
payloads = st.fixed_dictionaries({}, optional={
    **{k: json_values for k in KEYS},
    "id": st.sampled_from(["a", "b-1", 3, "", None]) | json_values,
    "type": st.sampled_from(list(JOB_TYPES) + ["wan_video_fast", "x"]) | json_values,
    "config": st.fixed_dictionaries({}, optional={k: json_values for k in CONFIG_KEYS}) | json_values,
    "metadata": st.fixed_dictionaries({}, optional={k: json_values for k in META_KEYS}) | json_values,
})


def check(element):
    try:
        job = parse_element(element)
    except PayloadError as exc:
        assert exc.job_id is None or isinstance(exc.job_id, str)
        return
    assert job.job_type in JOB_TYPES and isinstance(job.id, str) and isinstance(job.prompt, str)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(payloads, st.sampled_from(["plain", "array", "data", "bytes"]))
@pytest.mark.slow
def test_random_payloads_raise_only_payload_error(payload, wrap):
    text = json.dumps(payload)
    element = {"plain": text, "array": json.dumps([text]), "data": json.dumps({"data": text}),
               "bytes": text.encode()}[wrap]
    check(element)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_random_json_raises_only_payload_error(value):
    check(json.dumps(value))
    check(json.dumps([json.dumps(value)]))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200))
def test_random_bytes_raise_only_payload_error(element):
    check(element)
