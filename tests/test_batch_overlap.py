"""Issue #12: a job's tail (its media, sidecars and report.json) is written in a background thread
while the next job generates, in `batch` (here) and the worker (test_worker_overlap.py). Concurrency
is shown by events each side waits for (a run without overlap would time out on them), not by
timing; results are recorded in order, a failed tail fails only its job, and an interrupt finishes
the pending tail before the run ends."""

from __future__ import annotations

import io
import json
import os
import signal
import threading
from pathlib import Path

import pytest
import yaml
from rich.console import Console

import ourvidz.job
import ourvidz.tails
from ourvidz.batch import MANIFEST, BatchFailed, run_batch
from ourvidz.errors import Interrupted
from ourvidz.job import JobResult, PendingJob
from ourvidz.tails import TailWriter

WAIT = 60  # seconds an event may take on a busy machine; reaching it means there was no overlap


def jobs_file(tmp_path: Path, prompts) -> Path:
    path = tmp_path / "jobs.yaml"
    path.write_text(yaml.safe_dump([{"job_type": "image_fast", "prompt": p, "seed": i, "overrides": {"steps": 1}}
                                    for i, p in enumerate(prompts)], sort_keys=False))
    return path


def run(path, out, **kw):
    console = Console(file=io.StringIO(), width=200)
    return run_batch(path, out, demo=True, console=console, keep_order=True, **kw), console.file.getvalue()


def manifest(out: Path) -> dict:
    return json.loads((out / MANIFEST).read_text())


def report(out: Path, rec: dict) -> dict:
    return json.loads((out / rec["out_dir"] / "report.json").read_text())


# ---------------------------------------------------------------- the writer, without models
def pending(name: str, body) -> PendingJob:
    return PendingJob(plan=name, _tail=lambda overlap=None: body(overlap))


def test_tail_writer_holds_one_tail_and_hands_back_its_result_or_error():
    started, go = threading.Event(), threading.Event()

    def slow(overlap):
        started.set()
        assert go.wait(WAIT)
        return JobResult(plan="one", files=[], report={"concurrent": overlap()})

    with TailWriter() as tails:
        tail = tails.submit("tag-1", pending("one", slow))
        assert started.wait(WAIT) and not tail.done()  # running in the background while this thread goes on
        with pytest.raises(RuntimeError, match="still pending"):
            tails.submit("tag-2", pending("two", slow))
        go.set()
        assert tails.collect() is tail and tails.pending is None and tail.error() is None
        assert tail.tag == "tag-1" and tail.result().report["concurrent"] >= 0.0
        assert tails.collect() is None

        def broken(overlap):
            raise OSError(5, "Input/output error")

        tails.submit("tag-3", pending("three", broken))
        failed = tails.collect()
        assert isinstance(failed.error(), OSError) and failed.ended is not None
        with pytest.raises(OSError):
            failed.result()


# ---------------------------------------------------------------- batch
@pytest.fixture
def overlap_probe(monkeypatch):
    """Job 1's save waits until job 2 is generating, and job 2's generation until job 1's save has
    begun: both finish only if the two run at the same time. Records the order of events."""
    real_generate, real_save = ourvidz.job._generate, ourvidz.job._save
    events: list[str] = []
    saving_one, generating_two = threading.Event(), threading.Event()

    def generate(plan, prompt, *args, **kw):
        events.append(f"generate {plan.prompt}")
        if plan.prompt == "two":
            generating_two.set()
            assert saving_one.wait(WAIT), "job 1's tail did not run while job 2 generated"
        return real_generate(plan, prompt, *args, **kw)

    def save(plan, *args, **kw):
        events.append(f"save {plan.prompt} in {threading.current_thread().name.split('_')[0]}")
        if plan.prompt == "one":
            saving_one.set()
            assert generating_two.wait(WAIT), "job 2 did not generate while job 1's tail ran"
        return real_save(plan, *args, **kw)

    monkeypatch.setattr(ourvidz.job, "_generate", generate)
    monkeypatch.setattr(ourvidz.job, "_save", save)
    return events


def test_batch_writes_each_tail_while_the_next_job_generates_and_records_in_order(tmp_path, overlap_probe):
    path, out = jobs_file(tmp_path, ["one", "two", "three"]), tmp_path / "b"
    outcome, text = run(path, out)
    outcome.raise_for_status()
    m = manifest(out)
    assert [j["state"] for j in m["jobs"]] == ["done"] * 3
    saves = [e for e in overlap_probe if e.startswith("save")]
    assert saves == [f"save {p} in ourvidz-tail" for p in ("one", "two", "three")]  # in the background, in order
    assert [e for e in overlap_probe if e.startswith("generate")] == ["generate one", "generate two", "generate three"]
    # Job k+2 generates only once job k's tail is done (at most one pending).
    assert overlap_probe.index("save one in ourvidz-tail") < overlap_probe.index("generate three")
    # Recorded in order, each once its files exist; the report shows the overlap and keeps phases.save.
    lines = [line for line in text.splitlines() if line.startswith("done ")]
    assert [line.split()[1] for line in lines] == [j["id"] for j in m["jobs"]]
    for j in m["jobs"]:
        assert sorted(Path(f).name for f in j["files"]) == ["image-00.json", "image-00.png", "report.json"]
        assert all((out / f).is_file() for f in j["files"]) and j["writes"] == []
    first = report(out, m["jobs"][0])
    assert first["tail_overlapped"] is True and first["tail_concurrent_seconds"] > 0 and first["phases"]["save"] > 0
    assert all("tail_concurrent_seconds" in report(out, j) for j in m["jobs"])


def test_batch_a_failed_tail_fails_its_job_alone_and_a_rerun_redoes_it(tmp_path, monkeypatch):
    real_save = ourvidz.job.save_png

    def save_png(path, image, parameters, sidecar):
        if sidecar["plan"]["prompt"] == "two":
            raise OSError(5, "Input/output error (simulated)")
        return real_save(path, image, parameters, sidecar)

    monkeypatch.setattr(ourvidz.job, "save_png", save_png)
    path, out = jobs_file(tmp_path, ["one", "two", "three"]), tmp_path / "b"
    outcome, text = run(path, out)
    m = manifest(out)
    one, two, three = m["jobs"]
    assert [j["state"] for j in m["jobs"]] == ["done", "failed", "done"]
    assert two["error"] == "unexpected OSError: [Errno 5] Input/output error (simulated)" and two["exit_code"] == 1
    assert "\n" not in two["error"] and two["writes"] and not (out / two["out_dir"] / "report.json").exists()
    for j in (one, three):
        assert sorted(Path(f).name for f in j["files"]) == ["image-00.json", "image-00.png", "report.json"]
        assert all((out / f).is_file() for f in j["files"])
    assert text.index(f"done {one['id']}") < text.index(f"failed {two['id']}") < text.index(f"done {three['id']}")
    with pytest.raises(BatchFailed, match="1 of 3 jobs failed"):
        outcome.raise_for_status()
    monkeypatch.setattr(ourvidz.job, "save_png", real_save)
    again, _ = run(path, out)
    again.raise_for_status()
    assert [j["attempts"] for j in manifest(out)["jobs"]] == [1, 2, 1]


def test_batch_interrupted_while_a_tail_is_pending_records_that_job_and_resumes(tmp_path, monkeypatch):
    """Ctrl-C twice while job 2 generates and job 1's tail is still writing (it cannot finish before the
    run waits for it): job 1 is recorded done with all its files, job 2 goes back to pending."""
    real_generate, real_save, real_wait = ourvidz.job._generate, ourvidz.job._save, ourvidz.tails.Tail.wait
    saving_one, run_waits = threading.Event(), threading.Event()

    def wait(self, timeout=None):
        run_waits.set()
        return real_wait(self, timeout)

    def save(plan, *args, **kw):
        if plan.prompt == "one":
            saving_one.set()
            assert run_waits.wait(WAIT)  # pending until the run, interrupted, waits for it
        return real_save(plan, *args, **kw)

    def generate(plan, prompt, *args, **kw):
        if plan.prompt == "two":
            assert saving_one.wait(WAIT)
            for _ in range(2):
                os.kill(os.getpid(), signal.SIGTERM)
        return real_generate(plan, prompt, *args, **kw)

    monkeypatch.setattr(ourvidz.job, "_generate", generate)
    monkeypatch.setattr(ourvidz.job, "_save", save)
    monkeypatch.setattr(ourvidz.tails.Tail, "wait", wait)
    path, out = jobs_file(tmp_path, ["one", "two", "three"]), tmp_path / "b"
    outcome, _ = run(path, out)
    m = manifest(out)
    one, two, three = m["jobs"]
    assert outcome.interrupted and m["runs"][-1]["outcome"] == "interrupted"
    assert one["state"] == "done" and sorted(Path(f).name for f in one["files"]) == [
        "image-00.json", "image-00.png", "report.json"] and all((out / f).is_file() for f in one["files"])
    assert (two["state"], two["error"], three["state"]) == ("pending", "interrupted; redone on the next run", "pending")
    assert not any(j["state"] == "running" for j in m["jobs"])
    with pytest.raises(Interrupted, match="1 of 3 jobs done, 2 left"):
        outcome.raise_for_status()
    for name, real in (("_generate", real_generate), ("_save", real_save)):
        monkeypatch.setattr(ourvidz.job, name, real)
    monkeypatch.setattr(ourvidz.tails.Tail, "wait", real_wait)
    kept = {f: (out / f).stat().st_mtime_ns for f in one["files"]}
    again, text = run(path, out)
    again.raise_for_status()
    assert "1 of 3 jobs already done, 2 to run" in text
    assert [j["attempts"] for j in manifest(out)["jobs"]] == [1, 2, 1]
    assert {f: (out / f).stat().st_mtime_ns for f in one["files"]} == kept  # not redone


@pytest.mark.slow
def test_batch_on_two_ranks_writes_on_rank_zero_with_the_tail_overlapped(tmp_path):
    path, out = jobs_file(tmp_path, ["one", "two"]), tmp_path / "b"
    outcome, _ = run(path, out, gpus=2, device="cpu")
    outcome.raise_for_status()
    m = manifest(out)
    assert [j["state"] for j in m["jobs"]] == ["done", "done"]
    for j in m["jobs"]:
        assert sorted(Path(f).name for f in j["files"]) == ["image-00.json", "image-00.png", "report.json"]
        assert "tail_overlapped" in report(out, j)
