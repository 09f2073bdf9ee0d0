"""`ourvidz batch` in demo mode: validation up front, ordering, models loaded once, failure
isolation, signals, and resume after a real SIGKILL."""

import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from rich.console import Console
from conftest import JOB_TYPES, ok, run as cli

from ourvidz import batch as batch_mod
from ourvidz.batch import MANIFEST, BatchFailed, run_batch, run_order
from ourvidz.errors import BadInput, Interrupted, PromptRefused

TINY = {"sdxl": {"steps": 2, "num_images": 2}, "video": {"steps": 2, "frames": 5}, "image": {"steps": 2}}
# The ten job types in a scrambled file order: the run order must come from the presets' priorities.
ALL_TEN = random.Random(7).sample(JOB_TYPES, len(JOB_TYPES))


def job(job_type, prompt="a lighthouse on a cliff", **extra):
    kind = "sdxl" if job_type.startswith("sdxl") else "video" if "video" in job_type else "image"
    return {"job_type": job_type, "prompt": prompt, "overrides": dict(TINY[kind]), **extra}


def write_jobs(path: Path, jobs) -> Path:
    path.write_text(yaml.safe_dump(jobs, sort_keys=False))
    return path


def run(job_file, out, **kw):
    console = Console(file=io.StringIO(), width=140)
    outcome = run_batch(job_file, out, demo=True, console=console, **kw)
    return outcome, console.file.getvalue()


def manifest(out: Path) -> dict:
    return json.loads((out / MANIFEST).read_text())


# ---------------------------------------------------------------- the job file, up front
@pytest.mark.parametrize("text,suffix,message", [
    ("- job_type: image_fast\n  prompt: x\n  overrides:\n    steps: many\n", ".yaml",
     ":4: job 1 (image_fast), field 'overrides.steps': Input should be a valid integer"),
    ("jobs:\n  - {job_type: image_fast, prompt: a}\n  - job_type: image_fast\n    prompt: b\n    steps: 3\n", ".yaml",
     ":5: job 2 (image_fast), field 'steps': unknown field (put it under 'overrides:'"),
    ("- {job_type: image_fast, prompt: a, prompts: [b]}\n", ".yml", ":1: job 1 (image_fast), field 'prompt': give either"),
    ('{"job_type": "image_fast", "prompt": "a"}\n\n{"job_type": "image_fast", "seed": -1, "prompt": "b"}\n', ".jsonl",
     ":3: job 2 (image_fast), field 'seed': Input should be greater than or equal to 0"),
    ('{"job_type": "image_fast", "prompt": "a"}\n{"job_type": "image_fast", "prompt": \n', ".jsonl", ":2: malformed JSON"),
    ("- {job_type: image_fast, prompt: a\n", ".yaml", ":2: malformed YAML"),
    ("- {job_type: image_fst, prompt: a}\n", ".yaml", ":1: job 1 (image_fst): unknown job type 'image_fst'"),
    ("- job_type: image_fast\n  prompt: a\n  overrides: {width: 100}\n", ".yaml",
     ":3: job 1 (image_fast): overrides: field 'width': must be a multiple of 16"),
    ("- {job_type: image_fast, prompt: '   '}\n", ".yaml", ":1: job 1 (image_fast): the prompt is empty"),
    ("{}\n", ".yaml", ":1: expected a list of jobs"),
])
def test_a_bad_job_file_is_rejected_before_anything_runs(tmp_path, text, suffix, message):
    path = tmp_path / f"jobs{suffix}"
    path.write_text(text)
    with pytest.raises(BadInput) as exc:
        run(path, tmp_path / "out")
    assert str(exc.value).startswith(str(path)) and message in str(exc.value)
    assert not (tmp_path / "out").exists()


def test_a_refused_prompt_rejects_the_file_with_exit_3_naming_the_job(tmp_path):
    path = tmp_path / "jobs.yaml"
    path.write_text("- {job_type: image_fast, prompt: a cat}\n- job_type: image_fast\n  prompts:\n"
                    "    - a dog\n    - nude teen on a beach\n")
    with pytest.raises(PromptRefused, match=r"jobs.yaml:5: job 2 \(image_fast\): prompt refused"):
        run(path, tmp_path / "out")
    result = cli("batch", str(path), "--demo", "--out", str(tmp_path / "out"))
    assert result.exit_code == 3 and not (tmp_path / "out").exists()


def test_order_groups_families_then_qwen_stretches_by_best_priority():
    def rec(n, family, enhance, priority):
        return {"n": n, "family": family, "enhance": enhance, "priority": priority}

    recs = [rec(1, "wan", True, 5), rec(2, "wan", False, 9), rec(3, "sdxl", False, 3), rec(4, "wan", False, 2),
            rec(5, "sdxl", False, 1), rec(6, "wan", True, 5)]
    assert [r["n"] for r in run_order(recs)] == [5, 3, 4, 2, 1, 6]
    assert [r["n"] for r in run_order(recs, keep_order=True)] == [1, 2, 3, 4, 5, 6]


# ---------------------------------------------------------------- running
@pytest.mark.slow
def test_all_ten_job_types_in_one_process_each_family_loaded_once(tmp_path):
    jobs = [job(t, seed=7) for t in ALL_TEN] + [job("sdxl_image_fast", prompts=["a fox", "a crow"])]
    del jobs[-1]["prompt"]
    path = write_jobs(tmp_path / "night.yaml", jobs)
    out = tmp_path / "batch"
    outcome, text = run(path, out)
    outcome.raise_for_status()
    m = manifest(out)
    assert [j["state"] for j in m["jobs"]] == ["done"] * 12 and all(j["attempts"] == 1 for j in m["jobs"])
    for j in m["jobs"]:
        files = sorted(Path(f).name for f in j["files"])
        expect = ["report.json", "video.json", "video.mp4"] if "video" in j["job_type"] else \
            ["image-00.json", "image-00.png"] + (["image-01.json", "image-01.png"] if "sdxl" in j["job_type"] else []) \
            + ["report.json"]
        assert files == expect and all((out / f).is_file() for f in j["files"])
    # One stretch per model: sdxl (best priority 1), then Wan alone (2), then Wan with Qwen (5);
    # lower priority first within a stretch.
    by_id = {j["id"]: j for j in m["jobs"]}
    assert [by_id[i]["job_type"] for i in m["order"]] == [
        "sdxl_image_fast", "sdxl_image_fast", "sdxl_image_fast", "sdxl_image_high",
        "image_fast", "image_high", "video_fast", "video_high",
        "image7b_fast_enhanced", "image7b_high_enhanced", "video7b_fast_enhanced", "video7b_high_enhanced"]
    started = [j["id"] for j in sorted(m["jobs"], key=lambda j: (j["started"], m["order"].index(j["id"])))]
    assert started == m["order"]
    summary = json.loads((out / "summary.json").read_text())
    assert {f: s["loads"] for f, s in summary["this_run"]["families"].items()} == {"sdxl": 1, "wan": 1, "qwen": 1}
    assert summary["totals"]["done"] == 12 and summary["totals"]["load_avoided"] > 0
    assert {r["job_type"]: r["jobs"] for r in summary["by_job_type"]}["sdxl_image_fast"] == 3
    assert "load avoided" in (out / "summary.md").read_text() and "batch summary" in text
    # The same command again: nothing to do, nothing rewritten.
    again, text = run(path, out)
    assert "12 of 12 jobs already done, 0 to run" in text
    assert all(j["attempts"] == 1 for j in manifest(out)["jobs"]) and again.summary["this_run"]["families"] == {}


@pytest.mark.slow
def test_failed_jobs_are_recorded_and_the_others_finish_then_a_rerun_retries_them(tmp_path, monkeypatch):
    import ourvidz.job
    from ourvidz.families.sdxl.pipeline import SDXLFamily

    real_generate, real_save = SDXLFamily.generate, ourvidz.job.save_png

    def generate(self, req, on_step=None):
        if "explode" in req.prompt:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_generate(self, req, on_step)

    def save_png(path, image, parameters, sidecar):
        if "disk full" in sidecar["plan"]["prompt"] and path.name == "image-01.png":
            raise OSError(28, "No space left on device")
        return real_save(path, image, parameters, sidecar)

    monkeypatch.setattr(SDXLFamily, "generate", generate)
    monkeypatch.setattr(ourvidz.job, "save_png", save_png)
    prompts = ("a red fox", "explode", "disk full", "a cat")
    path = write_jobs(tmp_path / "jobs.yaml", [job("sdxl_image_fast", p) for p in prompts[:3]] + [job("image_fast", "a cat")])
    out = tmp_path / "b"
    outcome, text = run(path, out, keep_order=True)
    jobs = {j["prompt"]: j for j in manifest(out)["jobs"]}
    assert [jobs[p]["state"] for p in prompts] == ["done", "failed", "failed", "done"]
    oom, full = jobs["explode"], jobs["disk full"]
    assert oom["exit_code"] == 5 and oom["error_class"] == "OutOfMemory" and "out of GPU memory" in oom["error"]
    assert full["exit_code"] == 1 and "No space left" in full["error"]
    assert not any((out / oom["out_dir"]).glob("*.png")) and (out / full["out_dir"] / "image-00.png").is_file()
    with pytest.raises(BatchFailed, match="2 of 4 jobs failed") as exc:
        outcome.raise_for_status()
    assert exc.value.exit_code == 5 and [f["id"] for f in outcome.summary["failures"]] == [oom["id"], full["id"]]
    assert "failures" in text
    monkeypatch.setattr(SDXLFamily, "generate", real_generate)
    monkeypatch.setattr(ourvidz.job, "save_png", real_save)
    outcome, _ = run(path, out)
    outcome.raise_for_status()
    assert {p: j["attempts"] for p, j in ((j["prompt"], j) for j in manifest(out)["jobs"])} == \
        {"a red fox": 1, "explode": 2, "disk full": 2, "a cat": 1}


@pytest.mark.slow
def test_sigterm_stops_after_the_current_job_and_a_second_signal_stops_at_once(tmp_path, monkeypatch):
    import ourvidz.job

    real, calls = ourvidz.job.run_job, []

    def run_job(plan, cache, on_step=None, on_phase=None, **kw):
        calls.append(plan.prompt)
        if plan.prompt in signals:
            if signals[plan.prompt] == 2:  # stopped at once with an output half written
                plan.out_dir.mkdir(parents=True)
                (plan.out_dir / plan.files[0]).write_bytes(b"half a png")
            for _ in range(signals[plan.prompt]):
                os.kill(os.getpid(), signal.SIGTERM)
        return real(plan, cache, on_step, **kw)

    monkeypatch.setattr(ourvidz.job, "run_job", run_job)
    path = write_jobs(tmp_path / "jobs.yaml", [job("image_fast", p) for p in ("one", "two", "three", "four")])
    out = tmp_path / "b"
    signals = {"two": 1}
    outcome, _ = run(path, out, keep_order=True)
    assert outcome.interrupted and calls == ["one", "two"]
    m = manifest(out)
    assert [j["state"] for j in m["jobs"]] == ["done", "done", "pending", "pending"] and m["runs"][-1]["outcome"] == "interrupted"
    with pytest.raises(Interrupted, match="2 of 4 jobs done, 2 left") as exc:
        outcome.raise_for_status()
    assert exc.value.exit_code == 130
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers restored

    signals, calls[:] = {"three": 2}, []
    outcome, _ = run(path, out, keep_order=True)
    m = manifest(out)
    assert outcome.interrupted and calls == ["three"]
    three = m["jobs"][2]
    assert three["state"] == "pending" and three["attempts"] == 1 and "interrupted" in three["error"]
    assert (out / three["out_dir"] / "image-00.png").read_bytes() == b"half a png"
    assert not any(j["state"] == "running" for j in m["jobs"])

    signals, calls[:] = {}, []
    outcome, _ = run(path, out, keep_order=True)
    outcome.raise_for_status()
    assert calls == ["three", "four"]
    assert [j["attempts"] for j in manifest(out)["jobs"]] == [1, 1, 2, 1]
    assert (out / three["out_dir"] / "image-00.png").read_bytes().startswith(b"\x89PNG")  # redone from scratch


@pytest.mark.slow
def test_a_batch_killed_mid_run_resumes_without_redoing_or_losing_a_job(tmp_path):
    prompts = [f"a lighthouse, take {i}" for i in range(12)]
    jobs = [job("image_fast" if i % 3 else "sdxl_image_fast", p) for i, p in enumerate(prompts)]
    path = write_jobs(tmp_path / "jobs.yaml", jobs)
    out = tmp_path / "b"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "ourvidz", "batch", str(path), "--demo", "--out", str(out)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            try:
                states = [j["state"] for j in manifest(out)["jobs"]]
                if "done" in states and "running" in states:
                    break
            except (OSError, ValueError):
                pass
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
    at_kill = manifest(out)
    done_then = {j["id"]: j for j in at_kill["jobs"] if j["state"] == "done"}
    unfinished = [j["id"] for j in at_kill["jobs"] if j["state"] != "done"]
    assert done_then and unfinished, "the kill came too late to test anything"
    mtimes = {f: (out / f).stat().st_mtime_ns for j in done_then.values() for f in j["files"]}

    outcome, text = run(path, out)
    outcome.raise_for_status()
    m = manifest(out)
    assert f"{len(done_then)} of 12 jobs already done" in text
    assert [j["state"] for j in m["jobs"]] == ["done"] * 12
    for j in m["jobs"]:
        # A job finished before the kill ran once; the one that was running then ran again from scratch.
        was_running = at_kill["jobs"][j["n"] - 1]["state"] == "running"
        assert j["attempts"] == (2 if was_running else 1), j
        assert len(j["files"]) == len(set(j["files"])) and all((out / f).is_file() for f in j["files"])
        assert sorted(p.name for p in (out / j["out_dir"]).iterdir()) == sorted(Path(f).name for f in j["files"])
    assert {f: (out / f).stat().st_mtime_ns for f in mtimes} == mtimes
    assert [r["outcome"] for r in m["runs"]] == ["killed", "completed"]
    families = m["runs"][-1]["families"]
    assert all(s["loads"] == 1 for s in families.values()) and "wan" in families


def test_a_changed_job_file_or_a_busy_folder_is_refused_and_a_dry_run_loads_nothing(tmp_path, monkeypatch):
    path = write_jobs(tmp_path / "jobs.yaml", [job("image_fast", "a cat"), job("sdxl_image_fast", "a dog")])
    out = tmp_path / "b"
    result = cli("batch", str(path), "--demo", "--out", str(out), "--dry-run")
    assert result.exit_code == 0 and "sdxl_image_fast" in result.output and not out.exists()
    monkeypatch.setattr(batch_mod, "_run", lambda manifest, *a, **k: None)  # plan and write the manifest only
    run(path, out)
    path.write_text(path.read_text() + "# a comment changes nothing\n")
    run(path, out)
    with batch_mod.batch_lock(out), pytest.raises(BadInput, match="another `ourvidz batch` is working in"):
        run(path, out)
    write_jobs(path, [job("image_fast", "a cat"), job("sdxl_image_fast", "a wolf")])
    with pytest.raises(BadInput, match="is not the job file of the batch"):
        run(path, out)


def test_generate_prompt_file_shares_the_cache_and_gives_each_prompt_its_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "prompts.txt").write_text("a cat\n# a comment\na dog\n\na bird\n")
    ok("generate", "image_fast", "--prompt-file", "prompts.txt", "--seed", 3, "--steps", 2, "--demo")
    reports = sorted(tmp_path.glob("outputs/image_fast-*-prompts/*/report.json"))
    assert [p.parent.name for p in reports] == ["000", "001", "002"]
    loads = [sum(json.loads(p.read_text())["load"].values()) for p in reports]
    assert loads[0] > 0 and loads[1:] == [0.0, 0.0]
