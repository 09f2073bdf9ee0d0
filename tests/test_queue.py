"""The queue worker against a real Redis server (no fake): real `python -m ourvidz worker`
subprocesses in demo mode, real kills. scripts/setup.sh --tests installs redis-server."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ourvidz import payload
from ourvidz.cli import app
from ourvidz.outputs import read_metadata, read_video_info
from ourvidz.plan import plan_job
from ourvidz.queue import Worker

runner = CliRunner()
TTL = 3  # heartbeat seconds: a killed worker's job is back on its queue within about 2 TTL

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, timeout: float, what: str, interval: float = 0.1):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


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
            return payload.connect(url).ping()
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
        self.r = payload.connect(url)
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "ourvidz", "worker", "--redis", self.url, "--demo", "--out", str(self.out),
               "--heartbeat-ttl", str(TTL), "--callback-url", self.callback_url]
        self.procs[name] = subprocess.Popen(cmd, env=self.env, stdout=subprocess.DEVNULL,
                                            stderr=open(self.logs / f"{name}.log", "ab"))
        return self.procs[name]

    def worker_pids(self) -> dict[int, str]:
        return {json.loads(v)["pid"]: payload.text(k) for k, v in self.r.hgetall(payload.WORKERS).items()}

    def proc_of(self, worker_id: str) -> subprocess.Popen:
        return next(p for p in self.procs.values() if f"-{p.pid}-" in worker_id)

    def log(self) -> str:
        return "".join(p.read_text() for p in sorted(self.logs.glob("*.log")))

    def record(self, job_id: str) -> dict:
        return payload.record(self.r, job_id) or {}

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
    result = runner.invoke(app, ["submit", *args, "--redis", url])
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


# ---------------------------------------------------------------- payload format, no worker
def test_parse_reads_the_production_fields():
    spec = payload.parse(json.dumps(PRODUCTION_VIDEO))
    assert (spec.id, spec.job_type, spec.negative) == (PRODUCTION_VIDEO["id"], "video_fast", "blurry, watermark")
    assert spec.overrides == {}  # 480*832, 25 steps, 6.5, 81 frames: the preset's own values
    assert spec.notes == ["config.frame_num 83 -> 81 (Wan makes 4k+1 frames)"]
    sdxl = payload.parse(json.dumps(PRODUCTION_SDXL | {"seed": 7}))
    assert sdxl.overrides == {"num_images": 2} and sdxl.seed == 7 and sdxl.negative == ""
    custom = payload.parse(json.dumps({"id": "j1", "type": "image_fast", "prompt": "p", "config": {"size": "320x576",
                                       "sample_steps": "4", "sample_guide_scale": 5, "seed": 3, "enhance_prompt": True}}))
    assert custom.overrides == {"width": 320, "height": 576, "steps": 4, "guidance": 5.0}
    assert (custom.seed, custom.enhance) == (3, True)
    assert [payload.wan_frames(n) for n in (1, 5, 17, 83, 84, 85)] == [1, 5, 17, 81, 81, 85]


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
    plan = plan_job("video_fast", "waves", overrides={"steps": 3, "frames": 17}, seed=5, negative="blur")
    job = payload.build(plan, seed=5, negative="blur")
    assert job["config"] | {"expected_time": None} == {"size": "480*832", "sample_steps": 3, "sample_guide_scale": 6.5,
                                                       "frame_num": 17, "enhance_prompt": False, "expected_time": None,
                                                       "content_type": "video", "file_extension": "mp4", "seed": 5}
    assert {"id", "type", "prompt", "user_id", "created_at", "negative_prompt", "video_id", "image_id",
            "model_variant", "bucket", "metadata"} <= set(job)
    spec = payload.parse(json.dumps(job))
    assert (spec.job_type, spec.prompt, spec.overrides, spec.seed, spec.negative) == \
        ("video_fast", "waves", {"steps": 3, "frames": 17}, 5, "blur")


# ---------------------------------------------------------------- Redis, no worker process
def test_submit_checks_before_enqueueing_and_status_explains(redis_url):
    client = payload.connect(redis_url)
    client.flushall()
    refused = runner.invoke(app, ["submit", "image_fast", "a naked child", "--redis", redis_url])
    bad = runner.invoke(app, ["submit", "video_fast", "waves", "--frames", "83", "--redis", redis_url])
    assert (refused.exit_code, bad.exit_code) == (3, 2)
    assert "refused" in refused.output and "4k+1" in bad.output
    assert client.llen("wan_queue") == 0
    job_id = submit_cli(redis_url, "sdxl_image_high", "a red fox", "--steps", "2", "--num-images", "1")
    job = json.loads(client.lindex("sdxl_queue", 0))
    assert job["id"] == job_id and job["config"]["sample_steps"] == 2 and job["metadata"]["num_images"] == 1
    shown = runner.invoke(app, ["status", job_id, "--redis", redis_url])
    assert shown.exit_code == 0 and "state: queued" in shown.stdout
    assert runner.invoke(app, ["status", "nope", "--redis", redis_url]).exit_code == 2
    down = runner.invoke(app, ["queue", "--redis", f"redis://127.0.0.1:{free_port()}/0"])
    assert down.exit_code == 7 and "cannot reach Redis" in down.output


def test_reaper_requeues_a_dead_workers_job_next_and_fails_it_after_max_attempts(redis_url):
    client = payload.connect(redis_url)
    client.flushall()
    jobs = {n: {"id": n, "type": "image_fast", "prompt": "p"} for n in ("waiting", "retry", "spent", "alive")}
    client.lpush("wan_queue", json.dumps(jobs["waiting"]))
    for worker, name, attempts in (("ghost-1-0000", "retry", 1), ("ghost-1-0000", "spent", 3), ("live-2-0000", "alive", 1)):
        client.hset(payload.WORKERS, worker, json.dumps({"queues": ["wan_queue"]}))
        client.lpush(payload.processing_key(worker, "wan_queue"), json.dumps(jobs[name]))
        client.hset(payload.job_key(name), mapping={"state": "running", "attempts": attempts, "worker": worker})
    client.set(payload.heartbeat_key("live-2-0000"), "{}", ex=30)
    reaper = Worker(redis_url, max_attempts=3, log=lambda line: None)
    reaper.connect()
    reaper.reap(startup=True)
    assert [json.loads(j)["id"] for j in client.lrange("wan_queue", 0, -1)] == ["waiting", "retry"]  # retry is next
    assert payload.record(client, "retry")["state"] == "queued"
    assert "ghost-1-0000 stopped (heartbeat expired) during attempt 1; requeued" in payload.record(client, "retry")["error"]
    spent = payload.record(client, "spent")
    assert spent["state"] == "failed" and "gave up after 3 attempts" in spent["error"]
    assert client.llen(payload.processing_key("live-2-0000", "wan_queue")) == 1  # alive: untouched
    assert set(map(payload.text, client.hkeys(payload.WORKERS))) == {"live-2-0000"}


def test_transitions_refuse_a_duplicate_and_survive_a_repeated_call(redis_url):
    client = payload.connect(redis_url)
    client.flushall()
    w = Worker(redis_url, log=lambda line: None)
    w.connect()
    raw, key, proc = json.dumps({"id": "d1", "type": "image_fast", "prompt": "p"}), payload.job_key("d1"), \
        payload.processing_key(w.id, "wan_queue")
    client.hset(key, mapping={"state": "running", "worker": "other-1-0000", "attempts": 1})
    client.set(payload.heartbeat_key("other-1-0000"), "{}", ex=30)
    assert w.scripts["start"]([key], [w.id]) == -2  # a live worker runs it: the repeat is dropped
    client.delete(payload.heartbeat_key("other-1-0000"))
    assert w.scripts["start"]([key], [w.id]) == 2
    client.lpush(proc, raw)
    for _ in range(2):  # as after a reply lost to a dropped connection: the retry is pushed once
        assert w.scripts["finish"]([key, proc, "wan_queue"], [w.id, 2, raw, 0, "lpush", "state", "queued"]) == 1
    assert client.llen("wan_queue") == 1 and client.llen(proc) == 0


# ---------------------------------------------------------------- two real workers
def test_production_payload_accepted_as_is(fleet):
    fleet.r.lpush("wan_queue", json.dumps(PRODUCTION_VIDEO))
    fleet.r.lpush("sdxl_queue", json.dumps(PRODUCTION_SDXL))
    video, sdxl = fleet.wait_done([PRODUCTION_VIDEO["id"], PRODUCTION_SDXL["id"]], 90)
    assert (video["state"], sdxl["state"]) == ("completed", "completed"), (video, sdxl)
    assert video["note"] == "config.frame_num 83 -> 81 (Wan makes 4k+1 frames)"
    mp4 = Path(video["assets"][0])
    assert mp4 == fleet.out.resolve() / PRODUCTION_VIDEO["id"] / "video.mp4"
    assert read_video_info(mp4)["frames"] == 81
    plan = read_metadata(mp4)["plan"]
    assert plan["preset"]["steps"] == 25 and plan["negative_prompt"]["user_text"] == "blurry, watermark"
    assert [Path(a).name for a in sdxl["assets"]] == ["image-00.png", "image-01.png"]
    wait_for(lambda: callbacks_for(PRODUCTION_VIDEO["id"]), 10, "the callback")
    [cb] = callbacks_for(PRODUCTION_VIDEO["id"])
    assert cb == {"job_id": PRODUCTION_VIDEO["id"], "status": "completed", "assets": [str(mp4)],
                  "error_message": None, "_content_type": "application/json"}


def test_malformed_jobs_fail_with_their_error_and_the_workers_go_on(fleet):
    bad = {"m-unknown": {"type": "video_ultra", "prompt": "p"}, "m-no-prompt": {"type": "image_fast"},
           "m-size": {"type": "image_fast", "prompt": "p", "config": {"size": "huge"}},
           "m-steps": {"type": "image_fast", "prompt": "p", "config": {"sample_steps": 0}},
           "m-refused": {"type": "image_fast", "prompt": "a naked child"},
           "m-empty": {"type": "image_fast", "prompt": "  "}}
    fleet.r.lpush("wan_queue", b"\xff not json", *[json.dumps({"id": k, **v}) for k, v in bad.items()])
    good = payload.build(plan_job("image_fast", "a quiet harbour", overrides={"steps": 1}))
    fleet.r.lpush("wan_queue", json.dumps(good))
    records = dict(zip([*bad, "good", "junk"],
                       fleet.wait_done([*bad, good["id"], payload.fallback_id(b"\xff not json")], 60)))
    assert records["good"]["state"] == "completed"
    expected = {"m-unknown": "unknown job type 'video_ultra'", "m-no-prompt": "no 'prompt'", "m-size": "config.size",
                "m-steps": "--steps", "m-refused": "prompt refused", "m-empty": "prompt is empty", "junk": "not JSON"}
    for name, message in expected.items():
        assert records[name]["state"] == "failed" and message in records[name]["error"], records[name]
        assert records[name]["attempts"] == "1"  # bad input is not retried
    wait_for(lambda: callbacks_for("m-refused"), 10, "the failure callback")
    [cb] = callbacks_for("m-refused")
    assert cb["status"] == "failed" and "refused" in cb["error_message"] and cb["assets"] == []
    assert all(p.poll() is None for p in fleet.procs.values())


def test_two_workers_drain_50_jobs_each_done_once(fleet):
    ids = [submit_cli(fleet.url, "image_fast", "a fox in the snow", "--steps", "1"),
           submit_cli(fleet.url, "sdxl_image_fast", "a lighthouse", "--steps", "1", "--num-images", "1")]
    for i in range(48):
        job_type, extra = ("image_fast", {}) if i % 2 else ("sdxl_image_fast", {"num_images": 1})
        plan = plan_job(job_type, f"test scene {i}", overrides={"steps": 1} | extra, seed=i)
        job = payload.build(plan, seed=i)
        payload.enqueue(fleet.r, job, payload.queue_for(plan.preset))
        ids.append(job["id"])
    records = fleet.wait_done(ids, 100)
    assert all(r["state"] == "completed" and r["attempts"] == "1" for r in records), [r for r in records if r["state"] != "completed"]
    assert {r["worker"] for r in records} == set(fleet.worker_pids().values())  # both took a share
    log = fleet.log()
    for job_id in ids:
        folder = fleet.out / job_id
        assert sorted(p.name for p in folder.iterdir()) == ["image-00.json", "image-00.png", "report.json"]
        assert log.count(f"{job_id} (") == 2  # "taken from", "completed": by one worker, once
        assert [c["status"] for c in callbacks_for(job_id)] == ["completed"]
    assert fleet.r.llen("wan_queue") == fleet.r.llen("sdxl_queue") == 0
    assert not list(fleet.r.scan_iter(match="ourvidz:processing:*"))


def test_killed_worker_job_is_finished_by_the_other(fleet):
    job_id = submit_cli(fleet.url, "image_fast", "a slow sunrise over hills", "--steps", "500")
    rec = wait_for(lambda: (r := fleet.record(job_id)).get("progress") and r, 60, "the job to run")
    victim = fleet.proc_of(rec["worker"])
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    [done] = fleet.wait_done([job_id], 90)
    assert done["state"] == "completed" and done["attempts"] == "2" and done["worker"] != rec["worker"]
    assert f"worker {rec['worker']} stopped (heartbeat expired): 1 job(s) back on wan_queue" in fleet.log()
    assert sorted(p.name for p in (fleet.out / job_id).iterdir()) == ["image-00.json", "image-00.png", "report.json"]
    assert [c["status"] for c in callbacks_for(job_id)] == ["completed"]
    shown = runner.invoke(app, ["status", job_id, "--redis", fleet.url])
    assert "state: completed" in shown.stdout and "attempts: 2" in shown.stdout
    table = runner.invoke(app, ["queue", "--redis", fleet.url])
    assert table.exit_code == 0 and done["worker"] in table.stdout and rec["worker"] not in table.stdout


def test_sigterm_finishes_the_current_job_then_exits(fleet):
    job_id = submit_cli(fleet.url, "image_fast", "a long exposure of stars", "--steps", "300")
    rec = wait_for(lambda: (r := fleet.record(job_id)).get("progress") and r, 60, "the job to run")
    proc = fleet.proc_of(rec["worker"])
    proc.send_signal(signal.SIGTERM)
    later = submit_cli(fleet.url, "image_fast", "after the stop", "--steps", "1")
    assert proc.wait(60) == 0
    assert fleet.record(job_id)["state"] == "completed"
    assert fleet.record(later)["state"] == "queued" and fleet.r.llen("wan_queue") == 1
