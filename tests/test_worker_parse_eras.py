"""The worker's one parse path (ourvidz.worker.payload.parse over ourvidz.worker.eras): every era's
fixture becomes a QueuedJob with typed Overrides; unknown keys are kept; malformed payloads fail
under their own id, wrapped or not; nothing but MalformedJob ever escapes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ourvidz.overrides import Overrides
from ourvidz.worker import payload

FIXTURES = sorted((Path(__file__).parent / "fixtures" / "payloads").glob("*.json"))


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_every_fixture_is_a_queued_job(path):
    fx = json.loads(path.read_text())
    job = payload.parse(fx["element"])
    assert isinstance(job.overrides, Overrides) and job.era == fx["era"] and job.id == fx["expect"]["id"]
    asked = {k: v for k, v in fx["expect"].get("overrides", {}).items() if k != "seed"}
    assert {k: v for k, v in asked.items() if v != getattr(job.preset, k)} == job.overrides.as_dict()
    assert job.seed == fx["expect"].get("overrides", {}).get("seed")
    assert isinstance(job.unknown, dict) and isinstance(job.ignored, dict)


def test_unknown_keys_are_kept_not_fatal():
    raw = json.dumps({"id": "u1", "type": "sdxl_image_fast", "prompt": "p", "config": {"pipeline": "txt2img",
                      "brand_new": {"x": 1}}, "whatever": [1, 2], "metadata": {"future": True}})
    job = payload.parse(raw)
    assert job.unknown == {"whatever": [1, 2], "config.brand_new": {"x": 1}, "metadata.future": True}


@pytest.mark.parametrize("element, job_id, words", [
    ('["{\\"id\\":\\"a1\\",\\"type\\":\\"sdxl_image_fast\\",\\"prompt\\":3}"]', "a1", "prompt"),
    ('{"data": "{\\"id\\":\\"d1\\",\\"type\\":\\"nope\\",\\"prompt\\":\\"p\\"}"}', "d1", "unknown job type"),
    ('{"id": "u-1", "type": "sdxl_image_fast", "prompt": "p", "user_id": "../etc"}', "u-1", "storage folder"),
    ('{"id": "s-1", "type": "sdxl_image_fast", "prompt": "p", "config": {"pipeline": "x", "num_inference_steps": 0}}',
     "s-1", "at least 1"),
])
def test_malformed_payloads_fail_under_their_id(element, job_id, words):
    with pytest.raises(payload.MalformedJob, match=words) as exc:
        payload.parse(element)
    assert exc.value.job_id == job_id and exc.value.retryable is False


def test_no_id_gets_the_stable_fallback():
    with pytest.raises(payload.MalformedJob) as exc:
        payload.parse(b"\xff not json")
    assert exc.value.job_id == payload.fallback_id(b"\xff not json")


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                           lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=4),
                           max_leaves=12)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(extra=st.dictionaries(st.sampled_from(["config", "metadata", "prompt", "type", "seed", "user_id",
                                              "negative_prompt", "compel_enabled", "compel_weights", "x"]),
                             json_values, max_size=5), wrap=st.sampled_from(["none", "array", "data"]))
def test_nothing_but_malformed_job_escapes(extra, wrap):
    job = {"id": "fz", "type": "sdxl_image_fast", "prompt": "p", **extra}
    text = json.dumps(job)
    element = {"none": text, "array": json.dumps([text]), "data": json.dumps({"data": text})}[wrap]
    try:
        payload.parse(element)
    except payload.MalformedJob as exc:
        assert exc.job_id == "fz"
