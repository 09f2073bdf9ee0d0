"""`ourvidz batch` and `generate --prompt-file` faults (issue #15): a signal at any moment leaves a
consistent manifest and exits 130 (case 7); a full disk is one line, exit 8, summary still written
(7); manifest saves stay cheap at 10,000 jobs (5); a prompt file goes on past a failing prompt (8).
The randomized SIGKILL/SIGTERM runs: tests/test_faults_chaos.py."""

from __future__ import annotations

import errno
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

import ourvidz.batch as batch_mod
from ourvidz.batch import run_batch
from ourvidz.cli import app
from ourvidz.errors import EXIT_DISK_FULL, Interrupted
from ourvidz.layout import MANIFEST, SUMMARY_JSON
from ourvidz.manifest import Manifest

runner = CliRunner()


def jobs_file(tmp_path: Path, n: int = 3) -> Path:
    jobs = [{"job_type": "image_fast", "prompt": f"a lighthouse, take {i}", "seed": i, "overrides": {"steps": 2}}
            for i in range(n)]
    path = tmp_path / "jobs.yaml"
    path.write_text(yaml.safe_dump(jobs, sort_keys=False))
    return path


def manifest(out: Path) -> dict:
    return json.loads((out / MANIFEST).read_text())


def run(path, out, **kw):
    return run_batch(path, out, demo=True, console=Console(file=io.StringIO(), width=140), **kw)


def consistent(out: Path) -> dict:
    """The manifest reads, no run is left 'running', no job 'running', every done job's files exist."""
    m = manifest(out)
    assert all(r["outcome"] != "running" for r in m["runs"]), m["runs"]
    for j in m["jobs"]:
        assert j["state"] in ("pending", "done", "failed"), j
        if j["state"] == "done":
            assert j["files"] and all((out / f).is_file() for f in j["files"])
    return m


def _signal_self(times: int):
    for _ in range(times):
        os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.parametrize("signals", [1, 2])
def test_sigterm_during_start_up_exits_130_with_a_consistent_manifest(tmp_path, monkeypatch, signals):
    path, out = jobs_file(tmp_path), tmp_path / "b"
    run(path, out, keep_order=True)  # a finished batch: the next start-up resumes it
    real = batch_mod.plan_units

    def plan_units(*args, **kw):
        _signal_self(signals)  # during start-up, before any job
        return real(*args, **kw)

    monkeypatch.setattr(batch_mod, "plan_units", plan_units)
    result = runner.invoke(app, ["batch", str(path), "--demo", "--out", str(out)])
    assert result.exit_code == 130, result.output
    m = consistent(out)
    assert [j["state"] for j in m["jobs"]] == ["done"] * 3 and [r["outcome"] for r in m["runs"]][0] == "completed"
    assert signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, signal.default_int_handler) or callable(
        signal.getsignal(signal.SIGTERM))


def test_sigterm_during_the_final_summary_still_writes_it_and_exits_130(tmp_path, monkeypatch):
    path, out = jobs_file(tmp_path), tmp_path / "b"
    real = batch_mod.build_summary

    def build_summary(*args, **kw):
        _signal_self(2)  # twice: the second would stop at once anywhere else
        return real(*args, **kw)

    monkeypatch.setattr(batch_mod, "build_summary", build_summary)
    outcome = run(path, out, keep_order=True)
    m = consistent(out)
    assert [j["state"] for j in m["jobs"]] == ["done"] * 3 and m["runs"][-1]["outcome"] == "completed"
    assert (out / SUMMARY_JSON).is_file() and outcome.interrupted
    with pytest.raises(Interrupted) as exc:
        outcome.raise_for_status()
    assert exc.value.exit_code == 130


@pytest.mark.slow
def test_sigterm_in_a_real_process_at_start_up_exits_130(tmp_path):
    path, out = jobs_file(tmp_path), tmp_path / "b"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for delay in (0.3, 2.0):
        proc = subprocess.Popen([sys.executable, "-m", "ourvidz", "batch", str(path), "--demo", "--out", str(out)],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(delay)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode in (0, 130), err.decode()[-2000:]
        if (out / MANIFEST).exists():
            consistent(out)


def _full_disk_for(monkeypatch, names: tuple[str, ...]):
    real = os.fsync

    def fsync(fd):
        path = os.readlink(f"/proc/self/fd/{fd}")
        if any(n in Path(path).name for n in names):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def test_a_full_disk_is_one_line_exit_8_and_the_summary_is_written(tmp_path, monkeypatch):
    path, out = jobs_file(tmp_path), tmp_path / "b"
    _full_disk_for(monkeypatch, ("image-00.png",))
    result = runner.invoke(app, ["batch", str(path), "--demo", "--out", str(out), "--keep-order"])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == EXIT_DISK_FULL == 8, result.output
    assert len(errors) == 1 and "no space left writing" in errors[0] and "image-00.png" in errors[0]
    assert "unexpected" not in result.output
    m = consistent(out)
    assert [j["state"] for j in m["jobs"]] == ["failed", "pending", "pending"]  # stopped: the next would fail too
    assert m["jobs"][0]["exit_code"] == 8 and m["runs"][-1]["outcome"] == "disk full"
    assert (out / SUMMARY_JSON).is_file()
    assert not list((out / m["jobs"][0]["out_dir"]).glob(".*.tmp"))  # no temporary left behind
    monkeypatch.undo()
    result = runner.invoke(app, ["batch", str(path), "--demo", "--out", str(out)])
    assert result.exit_code == 0 and [j["state"] for j in consistent(out)["jobs"]] == ["done"] * 3


@pytest.mark.parametrize("full", [(MANIFEST, "summary"), ("summary",)])
def test_a_disk_too_full_for_the_manifest_or_summary_is_still_one_line_exit_8(tmp_path, monkeypatch, full):
    path, out = jobs_file(tmp_path), tmp_path / "b"
    run(path, out, keep_order=True)  # done: a resume has nothing to write but the manifest and summary
    before = manifest(out)
    _full_disk_for(monkeypatch, full)
    result = runner.invoke(app, ["batch", str(path), "--demo", "--out", str(out)])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 8 and len(errors) == 1 and "no space left writing" in errors[0], result.output
    assert "unexpected" not in result.output
    m = consistent(out)  # the last manifest that was written stands
    if MANIFEST in full:  # at start-up: nothing ran, the manifest is as it was
        assert m == before
    else:
        assert "the summary could not be written" in result.output and len(m["runs"]) == 2


@pytest.mark.slow
def test_manifest_saves_at_10000_jobs_are_cheap_and_exact(tmp_path):
    rec = {"id": "x", "state": "done", "files": ["a/image-00.png"], "overrides": {"steps": 2}, "prompt": "é \" \\ \x00",
           "seconds": 1.5, "error": None}
    data = {"format": 1, "jobs": [dict(rec, id=f"{i:05d}") for i in range(10_000)], "runs": [{}],
            "order": [f"{i:05d}" for i in range(10_000)]}
    m = Manifest(tmp_path, data)
    m.save()
    t = time.perf_counter()
    for i in range(20):  # a job's two saves: one record changed each time
        data["jobs"][i]["state"] = "running"
        data["jobs"][i]["files"].append("b")
        m.save()
    per_save = (time.perf_counter() - t) / 20
    assert json.loads((tmp_path / MANIFEST).read_text()) == data
    assert per_save < 0.25, f"{per_save * 1000:.0f} ms a save"


def test_prompt_file_goes_on_past_failing_prompts_and_reports_each(tmp_path, monkeypatch):
    import ourvidz.job

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a lighthouse\nnude teen on a beach\na red fox\na storm at sea\n")
    real = ourvidz.job.run_job

    def run_job(plan, cache, on_step=None, on_phase=None):
        if plan.prompt == "a red fox":
            from ourvidz.errors import GenerationFailed
            raise GenerationFailed("image_fast failed while generating: boom")
        return real(plan, cache, on_step)

    monkeypatch.setattr(ourvidz.job, "run_job", run_job)
    out = tmp_path / "p"
    result = runner.invoke(app, ["generate", "image_fast", "--prompt-file", str(prompts), "--demo", "--steps", "2",
                                 "--out", str(out)])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    failed = [line for line in result.output.splitlines() if line.startswith("failed:")]
    assert result.exit_code == 3, result.output  # the first failing prompt's (refused: 3)
    assert len(failed) == 2 and "prompt 2:" in failed[0] and "refused" in failed[0], result.output
    assert "prompt 3:" in failed[1] and "boom" in failed[1]
    assert len(errors) == 1 and errors[0].startswith("error: 2 of 4 prompts failed (first: ")
    assert sorted(p.name for p in out.iterdir()) == ["000", "003"]
    assert all((out / d / "image-00.png").is_file() for d in ("000", "003"))
