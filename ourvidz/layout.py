"""Where outputs go and what they are called: the one place every entry point asks.

A job writes into one folder: its media files (image-NN.png or video.mp4), a JSON sidecar beside
each, and report.json last. A job counts as finished only once every one of those files exists
(job_files: what a batch's manifest expects before it marks a job done).
generate, batch (a folder per job inside the batch folder, with the batch's manifest and summary),
and the queue worker (a folder per job id, under OUT/jobs/) name their folders here.
"""

from __future__ import annotations

import time
from pathlib import Path

ROOT = Path("outputs")  # the default for generate, batch and the worker
REPORT = "report.json"
MANIFEST, SUMMARY_JSON, SUMMARY_MD, LOCK = "manifest.json", "summary.json", "summary.md", ".lock"


def media_files(preset) -> list[str]:
    """The job's images or video, in the order the seeds go."""
    if preset.is_video:
        return ["video.mp4"]
    return [f"image-{i:02d}.png" for i in range(preset.num_images)]


def sidecar(name: str) -> str:
    """The JSON sidecar's name for a media file: image-00.png -> image-00.json."""
    return str(Path(name).with_suffix(".json"))


def thumbnail(name: str) -> str:
    """The queue worker's 256 px WebP thumbnail beside a media file: image-00.png -> image-00.thumb.webp."""
    return Path(name).stem + ".thumb.webp"


def job_files(media: list[str]) -> list[str]:
    """Every file a finished job holds, relative to its folder: media, sidecars, then the report."""
    return [n for f in media for n in (f, sidecar(f))] + [REPORT]


def generate_dir(job_type: str, seed: int, root: Path = ROOT) -> Path:
    """`ourvidz generate`'s default folder: one per run, named by job type, time and seed."""
    return root / f"{job_type}-{time.strftime('%Y%m%d-%H%M%S')}-{seed}"


def prompt_file_dir(job_type: str, root: Path = ROOT) -> Path:
    """`generate --prompt-file`'s folder; its prompts go in NNN/ subfolders (prompt_dir)."""
    return root / f"{job_type}-{time.strftime('%Y%m%d-%H%M%S')}-prompts"


def prompt_dir(base: Path, index: int) -> Path:
    return base / f"{index:03d}"


def batch_dir(job_file: Path, root: Path = ROOT) -> Path:
    return root / f"batch-{Path(job_file).stem}"


WORKER_NAMESPACE = "jobs"  # the queue worker's folders: OUT/jobs/<job id>/, never OUT/<anything> itself


def worker_job_dir(out: Path, job_id: str) -> Path:
    """A queued job's folder, inside the worker's namespace (ourvidz.worker.attempts)."""
    return out / WORKER_NAMESPACE / job_id
