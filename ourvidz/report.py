"""The timing report of one job: every phase, the device, the versions, and the seed document's
time for the job type beside this run's."""

from __future__ import annotations

import platform
from importlib import metadata
from typing import Any

import torch

PACKAGES = ("ourvidz", "torch", "diffusers", "transformers", "accelerate")


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def process_age_s() -> float | None:
    """Seconds since this process started (Linux: /proc), or None: a job's report says how long
    the process took to get to it (interpreter, imports, CUDA start, planning)."""
    import os

    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(uptime - start_ticks / os.sysconf("SC_CLK_TCK"), 0.0)
    except (OSError, ValueError, IndexError):
        return None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gb(device: torch.device) -> float | None:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    return None


def build_report(plan, *, device: torch.device, demo: bool, load: dict[str, float], phases: dict[str, float],
                 total: float, files: list[str], enhancement: dict[str, Any] | None,
                 models: dict[str, Any], text_encoding: dict[str, Any] | None = None,
                 peak_gb: float | None = None) -> dict[str, Any]:
    """peak_gb: the peak GPU memory as measured when the job's generation ended (its tail may run while
    the next job generates, after the peak was reset for it); by default, measured now."""
    preset = plan.preset
    outputs = preset.num_images if not preset.is_video else 1
    report: dict[str, Any] = {
        "job_type": plan.job_type,
        "demo": demo,
        "label": "demo: random weights" if demo else "",
        "device": device_name(device),
        "versions": versions(),
        "models": models,
        "load": load,
        "enhancement": enhancement,
        # Per text and encoder: tokens, window, chunks, truncation, weights; "notes" says in words
        # when a text was chunked, weighted or cut (Wan's UMT5 reads 512 tokens).
        "text_encoding": text_encoding,
        "phases": phases,
        "steps": preset.steps,
        "seconds_per_step": phases.get("denoise", 0.0) / preset.steps,
        "total": total,
        "per_image": total / outputs if outputs > 1 else None,
        "peak_gpu_memory_gb": peak_gb if peak_gb is not None else peak_memory_gb(device),
        "size": f"{preset.width}x{preset.height}",
        "frames": preset.frames,
        "num_images": preset.num_images,
        "files": files,
    }
    if getattr(plan, "notes", None):  # e.g. why a job ran on one GPU of several
        report["notes"] = list(plan.notes)
    if preset.seed_doc:
        report["seed_doc"] = {
            "seconds": preset.seed_doc.seconds,
            "status": preset.seed_doc.status,
            "card": "RTX 6000 Ada",
            # A tiny demo model (or a shrunken size) says nothing about the real job's speed.
            "ratio_seed_doc_over_this_run": preset.seed_doc.seconds / total if total and not demo else None,
        }
    return report
