"""The queue worker's faults (issue #15), against a real redis-server and real worker subprocesses:
hostile payloads are recorded, counted failures and the worker goes on (case 1); a stale attempt
neither touches the winner's files nor fails the job (2); a job id names a folder only inside the
worker's namespace, never a foreign one (3); secrets masked in every line (6); outage logs rate-
limited (7); a per-job time limit (8). The randomized kills: tests/test_faults_chaos.py."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from faults_support import Fleet, RedisServer, check_job_folders, image_job, push, snapshot, wait_for, worker_env
from ourvidz.cli import app
from ourvidz.worker import payload
from ourvidz.worker.attempts import OutageLog, on_step_with_deadline, JobTimedOut
from ourvidz.worker.loop import Worker

pytestmark = pytest.mark.slow  # real redis-server and worker processes

TTL = 2


@pytest.fixture(scope="module")
def redis(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def fleet(redis, tmp_path_factory):
    """One worker on wan_queue (--job-timeout 20), two on stale_q (TTL 2), one on slow_q (--job-timeout 2)."""
    base = tmp_path_factory.getbasetemp()
    f = Fleet(redis, tmp_path_factory.mktemp("out"), tmp_path_factory.mktemp("logs"), worker_env(base),
              ["--heartbeat-ttl", str(TTL)])
    redis.client().flushall()
    f.start("--queues", "wan_queue", "--job-timeout", "60")
    f.start("--queues", "stale_q")
    f.start("--queues", "stale_q")
    f.start("--queues", "slow_q", "--job-timeout", "2")
    wait_for(lambda: f.registered() == 4, 180, "four workers to register")
    yield f
    f.shutdown()


def test_hostile_payloads_are_recorded_once_and_the_worker_goes_on(fleet):
    r = fleet.redis.client()
    raws = [("[" * 1000 + "]" * 1000).encode(),
            json.dumps(image_job("deep-config") | {"config": {"x": json.loads("[" * 500 + "]" * 500)}}).encode(),
            json.dumps(image_job("i" * 1_000_000)).encode(),
            json.dumps(image_job("big-frames", frame_num=1000001) | {"type": "video_fast"}).encode()]
    for raw in raws:
        r.lpush("wan_queue", raw)
    push(r, [image_job("after-the-hostile-ones")])
    ids = [payload.fallback_id(raw) for raw in raws[:3]] + ["big-frames", "after-the-hostile-ones"]
    recs = fleet.wait_done(ids, 120)
    assert [rec["state"] for rec in recs] == ["failed"] * 4 + ["completed"]
    assert [rec["attempts"] for rec in recs] == ["1"] * 5  # counted once, never retried
    assert "nests deeper than 32 levels" in recs[0]["error"] and "nests deeper" in recs[1]["error"]
    assert "is more than 1000000 bytes" in recs[2]["error"] and "less than or equal to 241" in recs[3]["error"]
    assert fleet.procs[0].poll() is None
    log = fleet.log()
    assert "unexpected" not in log and "RecursionError" not in log
    assert max(len(line) for line in log.splitlines()) < 1000  # nothing logged in full


def test_a_job_id_never_names_a_folder_outside_the_namespace(fleet):
    out = fleet.out
    (out / "keepme").mkdir(parents=True)
    (out / "keepme" / "manifest.json").write_text('{"a batch": "of somebody else"}')
    (out / "jobs" / "foreign").mkdir(parents=True)
    (out / "jobs" / "foreign" / "precious.txt").write_text("not the worker's")
    before = snapshot([out / "keepme" / "manifest.json", out / "jobs" / "foreign" / "precious.txt"])
    push(fleet.redis.client(), [image_job("keepme"), image_job("foreign")])
    keep, foreign = fleet.wait_done(["keepme", "foreign"], 120)
    assert keep["state"] == "completed" and keep["out_dir"] == str((out / "jobs" / "keepme").resolve())
    assert foreign["state"] == "failed" and "was not made by an ourvidz worker" in foreign["error"]
    assert foreign["attempts"] == "1"
    assert snapshot([out / "keepme" / "manifest.json", out / "jobs" / "foreign" / "precious.txt"]) == before
    assert sorted(p.name for p in (out / "keepme").iterdir()) == ["manifest.json"]
    assert check_job_folders(out, {"keepme": keep}) == []


def test_a_stale_attempt_neither_touches_the_winners_files_nor_fails_the_job(fleet):
    """Worker A is stopped mid-job past the heartbeat TTL; B takes the job over and finishes it; A
    resumes and finishes too: the job is completed once, with B's files, and A's are gone."""
    r = fleet.redis.client()
    push(r, [image_job("stale-1", steps=400)], "stale_q")
    owner = wait_for(lambda: (rec := fleet.record("stale-1")).get("progress", "").endswith("steps") and rec["worker"],
                     120, "a worker to be running the job")
    a = next(p for p in fleet.procs[1:3] if f"-{p.pid}-" in owner)
    a.send_signal(signal.SIGSTOP)
    try:
        wait_for(lambda: fleet.record("stale-1").get("worker") not in (None, owner), 60, "the other worker to take over")
        rec = fleet.wait_done(["stale-1"], 240)[0]
    finally:
        a.send_signal(signal.SIGCONT)
    assert rec["state"] == "completed" and rec["attempts"] == "2" and rec["worker"] != owner
    files_then = snapshot([fleet.out / "jobs" / "stale-1" / Path(f).name for f in rec["files"]])
    try:
        wait_for(lambda: "stale-1 (image_fast): another worker took this job over" in fleet.log(), 300,
                 "the stale attempt to finish and drop its result")
    except AssertionError:
        raise AssertionError(f"the stale attempt did not end; logs:\n{fleet.log()[-5000:]}") from None
    time.sleep(1)
    assert fleet.record("stale-1")["state"] == "completed"
    assert snapshot([p for p in map(Path, files_then)]) == files_then
    marker = json.loads((fleet.out / "jobs" / "stale-1" / ".ourvidz-job").read_text())
    assert marker["attempt"] == 2 and f"-{a.pid}-" not in marker["worker"]
    assert not (fleet.out / "jobs" / ".attempts" / "stale-1").exists()
    assert a.poll() is None  # A goes on


def test_a_job_past_its_time_limit_fails_once_and_the_worker_goes_on(fleet):
    push(fleet.redis.client(), [image_job("too-slow", steps=1000), image_job("quick-after")], "slow_q")
    slow, quick = fleet.wait_done(["too-slow", "quick-after"], 120)
    assert slow["state"] == "failed" and slow["attempts"] == "1" and "ran past its time limit of 2 s" in slow["error"]
    assert quick["state"] == "completed" and fleet.procs[3].poll() is None
    assert not (fleet.out / "jobs" / "too-slow").exists()


def test_step_deadline_raises_a_non_retryable_error():
    t = [0.0]
    checked = on_step_with_deadline(lambda d, n: None, 0.05, "j")
    checked(1, 10)
    time.sleep(0.06)
    with pytest.raises(JobTimedOut) as exc:
        checked(2, 10)
    assert not exc.value.retryable and exc.value.exit_code == 6 and t == [0.0]


def test_outage_log_is_rate_limited():
    now = [0.0]
    lines: list[str] = []
    log = OutageLog(lines.append, "heartbeat", every=30, clock=lambda: now[0])
    for _ in range(305):  # a failure a second for 305 s: the issue saw 305 lines
        log.failed(ConnectionError("Error 111 connecting"))
        now[0] += 1
    log.ok()
    log.ok()
    assert len(lines) == 1 + 10 + 1 and lines[-1].startswith("heartbeat: back after 305 s (305 failures)")


def test_every_worker_line_and_error_line_masks_secrets(redis):
    lines: list[str] = []
    url = redis.url + "?password=s3cretpw&token=tok123456"
    w = Worker(url, callback_url="https://cb.example/hook?sig=cbsecret99", log=lines.append)
    w.log(f"Redis at {url} unreachable; callback https://cb.example/hook?sig=cbsecret99; raw s3cretpw tok123456")
    assert lines and not any(s in lines[0] for s in ("s3cretpw", "tok123456", "cbsecret99")), lines
    result = CliRunner().invoke(app, ["worker", "--redis", "redis://127.0.0.1:1/0?password=s3cretpw", "--demo"])
    assert result.exit_code == 7 and "s3cretpw" not in result.output and "password=***" in result.output
