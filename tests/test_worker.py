"""The queue worker (ourvidz.worker) against a real Redis server (no fake): real `python -m ourvidz
worker` subprocesses in demo mode, real kills. scripts/setup.sh --tests installs redis-server.
Payload parsing alone is tests/test_worker_payload.py."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import run
from test_worker_payload import PRODUCTION_SDXL, PRODUCTION_VIDEO

from ourvidz.outputs import read_metadata, read_video_info
from ourvidz.overrides import Overrides
from ourvidz.plan import plan_job
from ourvidz.worker import keys, payload, store
from ourvidz.worker.loop import Worker
from servers import free_port, wait_for

TTL = 3  # heartbeat seconds: a killed worker's job is back on its queue within about 2 TTL

@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    server = shutil.which("redis-server")
    if server is None:
        pytest.fail("redis-server is not installed: the queue tests run a real one. "
                    "Run `bash scripts/setup.sh --tests` (as root it apt-gets it) or `apt-get install redis-server`.")
    port, folder = free_port(), tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(folder)], stdout=open(folder / "redis.log", "wb"), stderr=subprocess.STDOUT)
    url = f"redis://127.0.0.1:{port}/0"

    def up():
        try:
            return store.connect(url).ping()
        except Exception:
            assert proc.poll() is None, (folder / "redis.log").read_text()
            return False

    wait_for(up, 15, "redis-server to answer")
    yield url
    proc.terminate()
    proc.wait(10)


class Callbacks(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.received.append(body | {"_content_type": self.headers["Content-Type"]})
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


class Fleet:
    def __init__(self, url, out, callback_url, logs, env):
        self.url, self.out, self.callback_url, self.logs, self.env = url, out, callback_url, logs, env
        self.r = store.connect(url)
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "ourvidz", "worker", "--redis", self.url, "--demo", "--out", str(self.out),
               "--heartbeat-ttl", str(TTL), "--callback-url", self.callback_url]
        self.procs[name] = subprocess.Popen(cmd, env=self.env, stdout=subprocess.DEVNULL,
                                            stderr=open(self.logs / f"{name}.log", "ab"))
        return self.procs[name]

    def worker_pids(self) -> dict[int, str]:
        return {json.loads(v)["pid"]: store.text(k) for k, v in self.r.hgetall(keys.WORKERS).items()}

    def proc_of(self, worker_id: str) -> subprocess.Popen:
        return next(p for p in self.procs.values() if f"-{p.pid}-" in worker_id)

    def log(self) -> str:
        return "".join(p.read_text() for p in sorted(self.logs.glob("*.log")))

    def record(self, job_id: str) -> dict:
        return store.record(self.r, job_id) or {}

    def wait_done(self, ids, timeout: float) -> list[dict]:
        def done():
            records = [self.record(i) for i in ids]
            return records if all(r.get("state") in ("completed", "failed") for r in records) else None

        try:
            return wait_for(done, timeout, f"{len(ids)} job(s) to finish", interval=0.25)
        except AssertionError:
            raise AssertionError(f"jobs not finished; worker logs:\n{self.log()[-4000:]}") from None


@pytest.fixture(scope="module")
def fleet(redis_url, tmp_path_factory):
    """Two demo workers (real subprocesses) and a callback receiver on 127.0.0.1."""
    base = tmp_path_factory.getbasetemp()
    env = {k: v for k, v in os.environ.items() if k not in ("OURVIDZ_MODELS", "OURVIDZ_PRESETS")}
    env |= {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "HOME": str(base / "home"),
            "OURVIDZ_CACHE": os.environ.get("OURVIDZ_TEST_CACHE", str(base / "ourvidz-cache"))}
    server = ThreadingHTTPServer(("127.0.0.1", 0), Callbacks)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    logs = tmp_path_factory.mktemp("worker-logs")
    f = Fleet(redis_url, tmp_path_factory.mktemp("queue-out"), f"http://127.0.0.1:{server.server_port}/job-callback",
              logs, env)
    f.r.flushall()
    f.start("a"), f.start("b")
    wait_for(lambda: len(f.worker_pids()) == 2, 120, "two workers to register")
    yield f
    for p in f.procs.values():
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in f.procs.values():
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
    server.shutdown()


def callbacks_for(job_id: str) -> list[dict]:
    return [c for c in Callbacks.received if c["job_id"] == job_id]


def submit_cli(url: str, *args: str) -> str:
    result = run("submit", *args, "--redis", url)
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


# ---------------------------------------------------------------- Redis, no worker process
def test_submit_checks_before_enqueueing_and_status_explains(redis_url):
    client = store.connect(redis_url)
    client.flushall()
    refused = run("submit", "image_fast", "a naked child", "--redis", redis_url)
    bad = run("submit", "video_fast", "waves", "--frames", "83", "--redis", redis_url)
    assert (refused.exit_code, bad.exit_code) == (3, 2)
    assert "refused" in refused.output and "4k+1" in bad.output
    assert client.llen("wan_queue") == 0
    job_id = submit_cli(redis_url, "sdxl_image_high", "a red fox", "--steps", "2", "--num-images", "1")
    job = json.loads(client.lindex("sdxl_queue", 0))
    assert job["id"] == job_id and job["config"]["sample_steps"] == 2 and job["metadata"]["num_images"] == 1
    shown = run("status", job_id, "--redis", redis_url)
    assert shown.exit_code == 0 and "state: queued" in shown.stdout
    assert run("status", "nope", "--redis", redis_url).exit_code == 2
    down = run("queue", "--redis", f"redis://127.0.0.1:{free_port()}/0")
    assert down.exit_code == 7 and "cannot reach Redis" in down.output


def test_reaper_requeues_a_dead_workers_job_next_and_fails_it_after_max_attempts(redis_url):
    client = store.connect(redis_url)
    client.flushall()
    jobs = {n: {"id": n, "type": "image_fast", "prompt": "p"} for n in ("waiting", "retry", "spent", "alive")}
    client.lpush("wan_queue", json.dumps(jobs["waiting"]))
    for worker, name, attempts in (("ghost-1-0000", "retry", 1), ("ghost-1-0000", "spent", 3), ("live-2-0000", "alive", 1)):
        client.hset(keys.WORKERS, worker, json.dumps({"queues": ["wan_queue"]}))
        client.lpush(keys.processing_key(worker, "wan_queue"), json.dumps(jobs[name]))
        client.hset(keys.job_key(name), mapping={"state": "running", "attempts": attempts, "worker": worker})
    client.set(keys.heartbeat_key("live-2-0000"), "{}", ex=30)
    reaper = Worker(redis_url, max_attempts=3, log=lambda line: None)
    reaper.connect()
    reaper.reap(startup=True)
    # Producers push on the right (production since 2025-08-16), so workers take from the left: retry is next.
    assert [json.loads(j)["id"] for j in client.lrange("wan_queue", 0, -1)] == ["retry", "waiting"]
    assert store.record(client, "retry")["state"] == "queued"
    assert "ghost-1-0000 stopped (heartbeat expired) during attempt 1; requeued" in store.record(client, "retry")["error"]
    spent = store.record(client, "spent")
    assert spent["state"] == "failed" and "gave up after 3 attempts" in spent["error"]
    assert client.llen(keys.processing_key("live-2-0000", "wan_queue")) == 1  # alive: untouched
    assert set(map(store.text, client.hkeys(keys.WORKERS))) == {"live-2-0000"}


def test_transitions_refuse_a_duplicate_and_survive_a_repeated_call(redis_url):
    client = store.connect(redis_url)
    client.flushall()
    w = Worker(redis_url, log=lambda line: None)
    w.connect()
    raw, key, proc = json.dumps({"id": "d1", "type": "image_fast", "prompt": "p"}), keys.job_key("d1"), \
        keys.processing_key(w.id, "wan_queue")
    client.hset(key, mapping={"state": "running", "worker": "other-1-0000", "attempts": 1})
    client.set(keys.heartbeat_key("other-1-0000"), "{}", ex=30)
    assert w.scripts["start"]([key], [w.id]) == -2  # a live worker runs it: the repeat is dropped
    client.delete(keys.heartbeat_key("other-1-0000"))
    assert w.scripts["start"]([key], [w.id]) == 2
    client.lpush(proc, raw)
    for _ in range(2):  # as after a reply lost to a dropped connection: the retry is pushed once
        assert w.scripts["finish"]([key, proc, "wan_queue"], [w.id, 2, raw, 0, "lpush", "state", "queued"]) == 1
    assert client.llen("wan_queue") == 1 and client.llen(proc) == 0


# ---------------------------------------------------------------- two real workers (slow: subprocesses, real kills)
@pytest.mark.slow
def test_production_payload_accepted_as_is(fleet):
    fleet.r.lpush("wan_queue", json.dumps(PRODUCTION_VIDEO))
    fleet.r.lpush("sdxl_queue", json.dumps(PRODUCTION_SDXL))
    video, sdxl = fleet.wait_done([PRODUCTION_VIDEO["id"], PRODUCTION_SDXL["id"]], 90)
    assert (video["state"], sdxl["state"]) == ("completed", "completed"), (video, sdxl)
    assert video["note"] == "config.frame_num 83 -> 81 (Wan makes 4k+1 frames)"
    mp4 = Path(video["assets"][0])
    assert mp4 == fleet.out.resolve() / "jobs" / PRODUCTION_VIDEO["id"] / "video.mp4"  # the worker's namespace
    assert read_video_info(mp4)["frames"] == 81
    plan = read_metadata(mp4)["plan"]
    # A 2025-07 payload runs as that era's worker ran it: the composed negative is recorded, not applied.
    assert plan["preset"]["steps"] == 25 and plan["negative_prompt"]["user_text"] == ""
    assert video["ignored"]["negative_prompt_composed"] == "blurry, watermark"
    assert [Path(a).name for a in sdxl["assets"]] == ["image-00.png"]  # 2 images: production's SDXL worker made 1
    wait_for(lambda: callbacks_for(PRODUCTION_VIDEO["id"]), 10, "the callback")
    [cb] = callbacks_for(PRODUCTION_VIDEO["id"])
    assert (cb["job_id"], cb["status"], cb["error_message"]) == (PRODUCTION_VIDEO["id"], "completed", None)
    assert [(a["type"], a["url"]) for a in cb["assets"]] == [("video", str(mp4))]


@pytest.mark.slow
def test_malformed_jobs_fail_with_their_error_and_the_workers_go_on(fleet):
    bad = {"m-unknown": {"type": "video_ultra", "prompt": "p"}, "m-no-prompt": {"type": "image_fast"},
           "m-size": {"type": "image_fast", "prompt": "p", "config": {"size": "huge"}},
           "m-steps": {"type": "image_fast", "prompt": "p", "config": {"sample_steps": 0},
                       "metadata": {"submitted_by": "ourvidz submit"}},  # a submit payload applies its steps
           "m-refused": {"type": "image_fast", "prompt": "a naked child"},
           "m-empty": {"type": "image_fast", "prompt": "  "}}
    fleet.r.lpush("wan_queue", b"\xff not json", *[json.dumps({"id": k, **v}) for k, v in bad.items()])
    good = payload.build(plan_job("image_fast", "a quiet harbour", overrides=Overrides(steps=1)))
    fleet.r.lpush("wan_queue", json.dumps(good))
    records = dict(zip([*bad, "good", "junk"],
                       fleet.wait_done([*bad, good["id"], payload.fallback_id(b"\xff not json")], 60)))
    assert records["good"]["state"] == "completed"
    expected = {"m-unknown": "unknown job type 'video_ultra'", "m-no-prompt": "no 'prompt'", "m-size": "config.size",
                "m-steps": "config.sample_steps must be at least 1", "m-refused": "prompt refused", "m-empty": "prompt is empty",
                "junk": "not UTF-8"}
    for name, message in expected.items():
        assert records[name]["state"] == "failed" and message in records[name]["error"], records[name]
        assert records[name]["attempts"] == "1"  # bad input is not retried
    wait_for(lambda: callbacks_for("m-refused"), 10, "the failure callback")
    [cb] = callbacks_for("m-refused")
    assert cb["status"] == "failed" and "refused" in cb["error_message"] and cb["assets"] == []
    assert all(p.poll() is None for p in fleet.procs.values())


@pytest.mark.slow
def test_two_workers_drain_50_jobs_each_done_once(fleet):
    ids = [submit_cli(fleet.url, "image_fast", "a fox in the snow", "--steps", "1"),
           submit_cli(fleet.url, "sdxl_image_fast", "a lighthouse", "--steps", "1", "--num-images", "1")]
    for i in range(48):
        job_type, extra = ("image_fast", {}) if i % 2 else ("sdxl_image_fast", {"num_images": 1})
        plan = plan_job(job_type, f"test scene {i}", overrides=Overrides(steps=1, **extra), seed=i)
        job = payload.build(plan, seed=i)
        store.enqueue(fleet.r, job, keys.queue_for(plan.preset.family))
        ids.append(job["id"])
    records = fleet.wait_done(ids, 100)
    assert all(r["state"] == "completed" and r["attempts"] == "1" for r in records), [r for r in records if r["state"] != "completed"]
    assert {r["worker"] for r in records} == set(fleet.worker_pids().values())  # both took a share
    log = fleet.log()
    for job_id in ids:
        folder = fleet.out / "jobs" / job_id
        assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == [
            "image-00.json", "image-00.png", "image-00.thumb.webp", "report.json"]
        assert log.count(f"{job_id} (") == 2  # "taken from", "completed": by one worker, once
        assert [c["status"] for c in callbacks_for(job_id)] == ["completed"]
    assert fleet.r.llen("wan_queue") == fleet.r.llen("sdxl_queue") == 0
    assert not list(fleet.r.scan_iter(match="ourvidz:processing:*"))


@pytest.mark.slow
def test_killed_worker_job_is_finished_by_the_other(fleet):
    job_id = submit_cli(fleet.url, "image_fast", "a slow sunrise over hills", "--steps", "500")
    rec = wait_for(lambda: (r := fleet.record(job_id)).get("progress") and r, 60, "the job to run")
    victim = fleet.proc_of(rec["worker"])
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    [done] = fleet.wait_done([job_id], 90)
    assert done["state"] == "completed" and done["attempts"] == "2" and done["worker"] != rec["worker"]
    assert f"worker {rec['worker']} stopped (heartbeat expired): 1 job(s) back on wan_queue" in fleet.log()
    assert sorted(p.name for p in (fleet.out / "jobs" / job_id).iterdir() if not p.name.startswith(".")) == [
        "image-00.json", "image-00.png", "image-00.thumb.webp", "report.json"]
    assert [c["status"] for c in callbacks_for(job_id)] == ["completed"]
    shown = run("status", job_id, "--redis", fleet.url)
    assert "state: completed" in shown.stdout and "attempts: 2" in shown.stdout
    table = run("queue", "--redis", fleet.url)
    assert table.exit_code == 0 and done["worker"] in table.stdout and rec["worker"] not in table.stdout


@pytest.mark.slow
def test_sigterm_finishes_the_current_job_then_exits(fleet):
    job_id = submit_cli(fleet.url, "image_fast", "a long exposure of stars", "--steps", "300")
    rec = wait_for(lambda: (r := fleet.record(job_id)).get("progress") and r, 60, "the job to run")
    proc = fleet.proc_of(rec["worker"])
    proc.send_signal(signal.SIGTERM)
    later = submit_cli(fleet.url, "image_fast", "after the stop", "--steps", "1")
    assert proc.wait(60) == 0
    assert fleet.record(job_id)["state"] == "completed"
    assert fleet.record(later)["state"] == "queued" and fleet.r.llen("wan_queue") == 1
