"""Issue #12 in the queue worker, against a real redis-server: job k's files are written in the
background while job k+1 (already waiting) generates; job k is still promoted, delivered, recorded
(FINISH) and called back before job k+1, on the worker's own thread. Concurrency is shown by events
each side waits for, not by timing."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import ourvidz.job
from ourvidz.overrides import Overrides
from ourvidz.plan import plan_job
from ourvidz.worker import keys, payload, store
from ourvidz.worker.loop import Worker
from servers import RedisServer

WAIT = 60  # seconds an event may take on a busy machine; reaching it means there was no overlap


class Received(BaseHTTPRequestHandler):
    bodies: list[dict] = []

    def do_POST(self):
        self.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def callbacks():
    Received.bodies = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Received)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/job-callback", Received.bodies
    server.shutdown()


@pytest.mark.slow
def test_worker_writes_job_one_while_job_two_generates_and_records_them_in_order(tmp_path, monkeypatch, callbacks):
    url, received = callbacks
    redis = RedisServer(tmp_path / "redis")
    try:
        r = redis.client()
        ids = []
        for i, prompt in enumerate(("one", "two")):
            job = payload.build(plan_job("image_fast", prompt, overrides=Overrides(steps=1), seed=i), seed=i)
            store.enqueue(r, job, "wan_queue")
            ids.append(job["id"])

        real_generate, real_save = ourvidz.job._generate, ourvidz.job._save
        events: list[str] = []
        saving_one, generating_two = threading.Event(), threading.Event()

        def generate(plan, prompt, *args, **kw):
            events.append(f"generate {plan.prompt}")
            if plan.prompt == "two":
                generating_two.set()
                assert saving_one.wait(WAIT), "job 1's files were not written while job 2 generated"
                # Job 1 is not recorded before its files are: it is still running, in the processing list.
                events.append(f"job 1 {store.record(r, ids[0])['state']} while job 2 generates")
            return real_generate(plan, prompt, *args, **kw)

        def save(plan, *args, **kw):
            events.append(f"save {plan.prompt} in {threading.current_thread().name.split('_')[0]}")
            if plan.prompt == "one":
                saving_one.set()
                assert generating_two.wait(WAIT), "job 2 did not generate while job 1's files were written"
            return real_save(plan, *args, **kw)

        monkeypatch.setattr(ourvidz.job, "_generate", generate)
        monkeypatch.setattr(ourvidz.job, "_save", save)
        lines: list[str] = []
        worker = Worker(redis.url, queues=["wan_queue"], out=tmp_path / "out", demo=True, device="cpu",
                        callback_url=url, idle_exit=1, heartbeat_ttl=5, log=lines.append)  # then a blocking wait
        assert worker.run() == 2
        records = [store.record(r, i) for i in ids]
        assert r.llen("wan_queue") == 0 and not list(r.scan_iter(match=keys.processing_key("*", "*")))
    finally:
        redis.stop()

    assert [e for e in events if e.startswith("save")] == ["save one in ourvidz-tail", "save two in ourvidz-tail"]
    assert "job 1 running while job 2 generates" in events
    one, two = records
    # Both recorded completed, in order, each with its files promoted into jobs/<id>/.
    assert [rec["state"] for rec in records] == ["completed", "completed"]
    assert float(one["finished_at"]) <= float(two["finished_at"])
    completed = [n for n, line in enumerate(lines) if ": completed in " in line]
    assert len(completed) == 2 and ids[0][:8] in lines[completed[0]] and ids[1][:8] in lines[completed[1]]
    for job_id, rec in zip(ids, records):
        folder = tmp_path / "out" / "jobs" / job_id
        assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == [
            "image-00.json", "image-00.png", "image-00.thumb.webp", "report.json"]
        assert [Path(a) for a in rec["assets"]] == [(folder / "image-00.png").resolve()]
        assert "save" in rec["timings"]
    report = json.loads((tmp_path / "out" / "jobs" / ids[0] / "report.json").read_text())
    assert report["tail_overlapped"] is True and report["tail_concurrent_seconds"] > 0
    attempts = tmp_path / "out" / "jobs" / ".attempts"
    assert not attempts.exists() or not any(attempts.iterdir())  # each attempt's folder promoted or cleaned
    # The callbacks: one each, completed (run() waits for them before it returns).
    assert sorted((c["job_id"], c["status"]) for c in received) == sorted((i, "completed") for i in ids)
    assert [a["url"] for c in received if c["job_id"] == ids[0] for a in c["assets"]] == one["assets"]
