"""Hostile inputs, one table each for job files and queue payloads: every one is refused with its
one-line error and exit code (job files: before anything runs; payloads: as a recorded failure that
is not retried). Issue #15, cases 1, 4 and 5. The worker end to end: tests/test_faults_worker.py."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from ourvidz.cli import app
from ourvidz.errors import EXIT_BAD_INPUT, BadInput, OurvidzError
from ourvidz.plan import plan_job
from ourvidz.worker import attempts, payload

runner = CliRunner()

BOMB = """a: &a ["x","x","x","x","x","x","x","x","x"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
jobs: [*f]
"""
DEEP_JSON = '{"job_type": "image_fast", "prompt": "a", "overrides": ' + '{"a":' * 100 + "1" + "}" * 100 + "}\n"

# (name, file suffix, content, exit code, what the one line says)
JOB_FILES = [
    ("yaml bomb", ".yaml", BOMB, 2, "(a YAML bomb?)"),
    ("deep yaml", ".yaml", "- " + "[" * 200 + "]" * 200 + "\n", 2, ":1: nested deeper than 64 levels"),
    ("duplicate key", ".yaml", "- job_type: image_fast\n  prompt: a\n  prompt: b\n", 2, ":3: duplicate key 'prompt'"),
    ("deep jsonl", ".jsonl", DEEP_JSON, 2, ":1: malformed JSON: the line nests deeper than 32 levels"),
    ("frames 1000001", ".yaml", "- {job_type: video_fast, prompt: a, overrides: {frames: 1000001}}\n", 2,
     "field 'frames': Input should be less than or equal to 241 (got 1000001)"),
    ("steps 2000", ".yaml", "- {job_type: image_fast, prompt: a, overrides: {steps: 2000}}\n", 2,
     "field 'steps': Input should be less than or equal to 1000"),
    ("video volume", ".yaml", "- {job_type: video_fast, prompt: a, overrides: {width: 4096, height: 4096, frames: 81}}\n",
     2, "is more than the limit of"),
    ("image pixels", ".yaml",
     "- {job_type: sdxl_image_fast, prompt: a, overrides: {width: 4096, height: 4096, num_images: 64}}\n", 2,
     "64 images of 4096x4096 is more than the limit"),
    ("100,000 jobs", ".yaml", "- {job_type: image_fast, prompt: a, count: 6000}\n- {job_type: image_fast, prompt: b, count: 6000}\n",
     2, "the file expands to more than 10000 jobs"),
    ("not utf-8", ".yaml", b"- {job_type: image_fast, prompt: \"\xff\xfe\"}\n", 2, ": not UTF-8 text"),
    ("refused prompt", ".yaml", "- {job_type: image_fast, prompt: nude teen on a beach}\n", 3, ":1: job 1 (image_fast): prompt refused"),
]


@pytest.mark.parametrize("name,suffix,content,code,message", JOB_FILES, ids=[j[0] for j in JOB_FILES])
def test_hostile_job_files_are_one_line_and_their_exit_code(tmp_path, name, suffix, content, code, message):
    path = tmp_path / f"jobs{suffix}"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    result = runner.invoke(app, ["batch", str(path), "--demo", "--out", str(tmp_path / "out")])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == code, result.output
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output
    assert len(lines[0]) < 600
    assert not (tmp_path / "out").exists()  # nothing was run, no folder made


def _valid(**changes) -> dict:
    job = {"id": "job-1", "type": "image_fast", "prompt": "a lighthouse", "config": {"size": "480*832"}}
    return job | changes


BIG_ID = "x" * 10_000
# (name, raw payload, the id it is recorded under (None: the payload's hash), what the error says)
PAYLOADS = [
    ("1000 brackets", ("[" * 1000 + "]" * 1000).encode(), None, "nests deeper than 32 levels"),
    ("deep config", json.dumps(_valid(config={"size": "480*832", "x": json.loads("[" * 200 + "]" * 200)})).encode(),
     None, "nests deeper than 32 levels"),
    ("2 MB", json.dumps(_valid(prompt="a" * 2_000_000)).encode(), None, "is more than 1000000 bytes"),
    ("not utf-8", b'{"id": "job-1", "prompt": "\xff"}', None, "is not UTF-8"),
    ("a list", b"[1, 2]", None, "is a JSON array of 2 item(s), not an object"),
    ("huge integer", b'{"id": "job-1", "seed": ' + b"9" * 5000 + b"}", None, "not usable JSON"),
    ("10 kB id", json.dumps(_valid(id=BIG_ID)).encode(), None, "cannot name an output folder"),
    ("path id", json.dumps(_valid(id="../../etc")).encode(), "../../etc", "cannot name an output folder"),
    ("no type", json.dumps(_valid(type=None)).encode(), "job-1", "has no job 'type'"),
    ("bad size", json.dumps(_valid(config={"size": "huge"})).encode(), "job-1", "config.size must be"),
]


@pytest.mark.parametrize("name,raw,record_id,message", PAYLOADS, ids=[p[0] for p in PAYLOADS])
def test_hostile_payloads_are_recorded_failures_not_retried(name, raw, record_id, message):
    spec, problem, job_id = attempts.read_payload(raw)
    assert spec is None and isinstance(problem, payload.MalformedJob) and not problem.retryable
    assert message in str(problem) and len(str(problem)) < 600 and "\n" not in str(problem)
    assert job_id == (record_id or payload.fallback_id(raw)) and len(job_id) <= 128


@pytest.mark.parametrize("config,message", [
    ({"frame_num": 1000001}, "less than or equal to 241"),
    ({"sample_steps": 100000}, "less than or equal to 1000"),
    ({"size": "99984*99984"}, "at most 4096"),
])
def test_payload_values_past_the_schema_bounds_fail_at_planning_with_exit_2(config, message):
    # `ourvidz submit`'s payloads apply every value (raw 2025-07 ones only what that era's worker read)
    spec = payload.parse(json.dumps(_valid(type="video_fast", config=config, metadata={"submitted_by": "ourvidz submit"})))
    with pytest.raises(BadInput, match=message) as exc:
        plan_job(spec.job_type, spec.prompt, overrides=spec.overrides)
    assert exc.value.exit_code == EXIT_BAD_INPUT and not exc.value.retryable


def test_read_payload_turns_anything_parse_raises_into_a_recorded_failure(monkeypatch):
    def explode(raw, presets_dir=None):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(payload, "parse", explode)
    spec, problem, job_id = attempts.read_payload(b'{"id": "x"}')
    assert spec is None and job_id == payload.fallback_id(b'{"id": "x"}')
    assert isinstance(problem, OurvidzError) and "RecursionError" in str(problem)
