"""Cold starts: `ourvidz generate` in a new process, from process start to files on disk.

With random weights the bench first writes them as users have them (bench/user_weights.py: an
SDXL single file, a Wan diffusers folder) and every timed process loads them through the models
file, through the same loaders a user's files take; the time to write them is recorded beside.
Per job: the first process after the files were written, with their pages dropped from the page
cache where the kernel allows (a read from the disk, and the checkpoint's A1111 hash not yet
known), a second with the files in the page cache, then --compile twice on one fresh inductor
cache (the first fills it, the second is the warm-cache cold start a new process gets).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from ourvidz.bench.runner import PROMPT, SEED


def _row_from(report: dict, wall: float) -> dict[str, Any]:
    models = {name: m for name, m in report.get("models", {}).items() if isinstance(m, dict)}
    return {"wall_s": wall, "load_s": sum(report["load"].values()), "load": report["load"],
            "route": {name: m.get("kind") for name, m in models.items()},
            "bytes_read": sum(m.get("bytes", 0) for m in models.values()) or None,
            "files": {name: m.get("path") for name, m in models.items()},
            "denoise_s": report["phases"]["denoise"], "job_total_s": report["total"],
            "startup_s": report.get("process_age_at_start_s"), "files_at_s": report.get("_files_at_s")}


def override_flags(job: str, overrides: dict[str, Any] | None) -> list[str]:
    """generate's options for the overrides that apply to the job (as the bench's make_plan)."""
    from ourvidz import families
    from ourvidz.presets import load_preset

    preset = load_preset(job)
    skip = {"frames"} if not preset.is_video else set()
    skip |= {"num_images"} if not families.get(preset.family).multi_image else set()
    return [a for k, v in (overrides or {}).items() if v is not None and k not in skip
            for a in (f"--{k.replace('_', '-')}", str(v))]


def cold_starts(results: dict[str, Any], jobs: list[str], weights: str, device: str | None, models_file,
                log: Callable[[str], None] = print,
                save: Callable[[dict[str, Any]], None] | None = None, *, size: str = "full",
                precision: str = "hub", compile_runs: bool = True, weights_dir: Path | None = None,
                keep_weights: bool = False, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Each job in a fresh `ourvidz generate` process (see the module's doc); one row a job in
    results["cold_start"], saved after every process. weights: random (written as user files
    first, `size` full or demo, `precision` hub or half), configured (`models_file` as it is) or
    demo (the built-in demo models, one process a job). overrides: generate's options for a quick
    run ({"steps": 2, "width": 64, ...}), frames only on video jobs, num_images on multi-image ones."""
    from ourvidz.bench.user_weights import drop_from_page_cache, families_for_jobs, write_user_weights
    from ourvidz.families.base import resolve_device
    from ourvidz.report import device_name, versions

    dev = resolve_device(device)
    results = results or {"date": time.strftime("%Y-%m-%d"), "card": device_name(dev),
                          "versions": versions(), "weights": weights, "runs": 1, "rows": {}, "ablation": {}}
    cold = results.setdefault("cold_start", {})
    work = Path(tempfile.mkdtemp(prefix="ourvidz-cold-"))
    save = save or (lambda r: None)
    env = os.environ.copy()
    written = None
    if weights == "random":
        if weights_dir:
            Path(weights_dir).mkdir(parents=True, exist_ok=True)
        root = Path(tempfile.mkdtemp(prefix="ourvidz-user-weights-", dir=weights_dir))
        log(f"writing random {size}-size weights as user files under {root}")
        written = write_user_weights(families_for_jobs(jobs), root, dev, size=size, precision=precision, log=log)
        models_file = written.models_file
        env["HF_HUB_OFFLINE"] = "1"  # a user's files load with no hub: prove it
    flags = ["--demo"] if weights == "demo" else ["--models", str(models_file)] if models_file else []
    flags += ["--device", device] if device else []

    def generate(job: str, tag: str, extra: list[str], env: dict[str, str]) -> tuple[float, dict]:
        out = work / f"{job}-{tag}"
        t0, t_wall = time.perf_counter(), time.time()
        proc = subprocess.run([sys.executable, "-m", "ourvidz", "generate", job, PROMPT, "--seed", str(SEED),
                               "--out", str(out), *flags, *override_flags(job, overrides), *extra], capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t0
        if proc.returncode:
            raise RuntimeError(f"cold start of {job} ({tag}) failed: {proc.stderr.strip().splitlines()[-1:]}")
        report = json.loads((out / "report.json").read_text())
        # when the last file (report.json) was in place, and what the process did before the job
        report["_files_at_s"] = (out / "report.json").stat().st_mtime - t_wall
        return wall, report

    try:
        for job in jobs:
            files = [Path(f) for rec in (written.families.values() if written else []) for f in rec["files"]]
            dropped = drop_from_page_cache(files) if files else None
            wall, report = generate(job, "default", [], env)
            row = cold[job] = _row_from(report, wall) | {"weights": weights, "page_cache": (
                "dropped" if dropped else "not dropped" if files else None)}
            if written:
                row["write"] = {fam: {k: rec[k] for k in ("route", "bytes", "write_s", "dtype", "size", "precision")}
                                for fam, rec in written.families.items() if fam in row["route"]}
            log(f"cold    {job:24s} {wall:8.2f} s to process exit, files at {row['files_at_s'] or 0:.2f} s, start-up "
                f"{row['startup_s'] or 0:.2f} s (no compile; load {row['load_s']:.2f} s, "
                f"{(row['bytes_read'] or 0) / 1e9:.2f} GB, page cache {row['page_cache'] or '-'})")
            save(results)
            if weights == "demo":
                continue  # the built-in demo models: one process says it all
            wall, report = generate(job, "files-cached", [], env)
            row["cached_wall_s"], row["cached_load_s"] = wall, sum(report["load"].values())
            row["cached"] = {k: v for k, v in _row_from(report, wall).items() if k.endswith("_s") or k == "load"}
            log(f"cold    {job:24s} {wall:8.2f} s to files on disk (no compile; files in the page cache)")
            save(results)
            if not compile_runs or dev.type != "cuda":
                continue  # nothing is compiled on the CPU
            inductor = {**env, "TORCHINDUCTOR_CACHE_DIR": str(work / f"inductor-{job}")}
            for tag in ("compile_first", "compile_cached"):
                wall, report = generate(job, tag, ["--compile"], inductor)
                row[f"{tag}_s"] = wall
                row[f"{tag}_denoise_s"] = report["phases"]["denoise"]
                log(f"cold    {job:24s} {wall:8.2f} s to files on disk (--compile, {tag.split('_')[1]} inductor cache)")
                save(results)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if written and not keep_weights:
            shutil.rmtree(written.models_file.parent, ignore_errors=True)  # tens of GB at full size
    return results
