"""Which end the worker takes from (--push-end), and putting jobs back at the right end: a dead
worker's job stays next, a retry goes to the back, a raced job goes back where it was; the
producers' wrappers (["<payload>"], {"data": "<payload>"}) are read for the record's id."""

from __future__ import annotations

import json

import pytest

from eras_servers import RedisServer
from ourvidz.errors import BadInput, ServiceError
from ourvidz.worker.keys import WORKERS, job_key, processing_key, push_ends, take_end
from ourvidz.worker.loop import Worker
from ourvidz.worker.store import enqueue, record


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = RedisServer(tmp_path_factory.mktemp("redis"))
    yield s
    s.stop()


def test_push_end_spec(monkeypatch):
    assert push_ends("right", ["a", "b"]) == {"a": "right", "b": "right"}
    assert push_ends("left,b=right", ["a", "b"]) == {"a": "left", "b": "right"}
    assert push_ends("c=left", ["a"]) == {"a": "right", "c": "left"}
    monkeypatch.setenv("OURVIDZ_PUSH_END", "left")
    assert push_ends(None, ["a"]) == {"a": "left"}
    monkeypatch.delenv("OURVIDZ_PUSH_END")
    assert push_ends(None, ["a"]) == {"a": "right"}  # the production's end since 2025-08-16
    assert (take_end("right"), take_end("left")) == ("LEFT", "RIGHT")
    with pytest.raises(BadInput, match="--push-end"):
        push_ends("up", ["a"])


def wrapped(job_id: str, how: str) -> str:
    inner = json.dumps({"id": job_id, "type": "sdxl_image_fast", "prompt": "p", "config": {"pipeline": "txt2img"}})
    return json.dumps([inner]) if how == "array" else json.dumps({"data": inner})


@pytest.mark.parametrize("end", ["right", "left"])
def test_dead_workers_wrapped_jobs_go_back_next_or_fail(server, end):
    r = server.r
    r.flushall()
    consume = take_end(end)
    push = r.rpush if end == "right" else r.lpush
    push("sdxl_queue", wrapped("waiting", "array"))
    ghost = "ghost-1-0000"
    r.hset(WORKERS, ghost, json.dumps({"queues": ["sdxl_queue"], "take_ends": {"sdxl_queue": consume}}))
    for name, how, attempts in (("retry", "array", 1), ("spent", "data", 3)):
        r.lpush(processing_key(ghost, "sdxl_queue"), wrapped(name, how))
        r.hset(job_key(name), mapping={"state": "running", "attempts": attempts, "worker": ghost})
    reaper = Worker(server.url, max_attempts=3, push_end=end, log=lambda line: None)
    reaper.connect()
    reaper.reap(startup=True)
    taken = r.lmove("sdxl_queue", "x", consume, "LEFT")
    assert json.loads(json.loads(taken)[0])["id"] == "retry"  # it was next, it stays next
    assert record(r, "retry")["state"] == "queued" and "requeued" in record(r, "retry")["error"]
    assert record(r, "spent")["state"] == "failed" and "gave up after 3 attempts" in record(r, "spent")["error"]


@pytest.mark.parametrize("end", ["right", "left"])
def test_a_retry_goes_to_the_back_and_submit_pushes_at_the_same_end(server, end):
    r = server.r
    r.flushall()
    w = Worker(server.url, push_end=end, log=lambda line: None)
    w.connect()
    for i in range(2):
        enqueue(r, {"id": f"q{i}", "type": "sdxl_image_fast", "prompt": "p"}, "sdxl_queue", end)
    raw = r.lmove("sdxl_queue", processing_key(w.id, "sdxl_queue"), w.take_ends["sdxl_queue"], "LEFT")
    assert json.loads(raw)["id"] == "q0"  # oldest first
    r.hset(job_key("q0"), mapping={"worker": w.id, "attempts": 1, "state": "running"})  # as START leaves it
    back = "rpush" if end == "right" else "lpush"
    assert w.scripts["finish"]([job_key("q0"), processing_key(w.id, "sdxl_queue"), "sdxl_queue"],
                               [w.id, 1, raw, 0, back, "state", "queued"]) == 1
    order = [json.loads(r.lmove("sdxl_queue", "x", w.take_ends["sdxl_queue"], "LEFT"))["id"] for _ in range(2)]
    assert order == ["q1", "q0"]


def test_a_redis_without_scripts_is_refused_at_start_saying_what_is_needed(server):
    server.r.execute_command("ACL", "SETUSER", "noscripts", "on", ">pw", "~*", "&*", "+@all", "-@scripting")
    w = Worker(f"redis://noscripts:pw@127.0.0.1:{server.port}/0", log=lambda line: None)
    with pytest.raises(ServiceError, match=r"refuses Lua scripts \(EVAL\).*needs Redis 6.2\+ with LMOVE/BLMOVE, EVAL"):
        w.connect()
