"""What one attempt at a queued job owns: its own folder, promoted once; the worker's namespace;
the payload read so that nothing but a recorded failure comes out; the per-job time limit; the
rate-limited outage log.

Folders under the worker's --out (the namespace: the worker never writes, renames or removes
anything outside OUT/jobs/):

    jobs/<job id>/                          a completed job's files; made once, by one atomic rename
    jobs/.attempts/<job id>/<worker>-<n>/   where attempt n writes (with the marker file .ourvidz-job)

An attempt writes only into its own folder. Right before the FINISH transition that records the
result, and only while the attempt still holds the job, the folder is renamed to jobs/<job id>/.
A rename never replaces a folder that holds files, so once a job's folder exists nobody changes it:
an attempt that finds one made by an earlier attempt of the same job (marker and report.json
present) records those files rather than its own; one that finds a folder it did not make fails
the job and touches nothing. A stale attempt (its worker stopped or cut off past the heartbeat
TTL, then resumed) can therefore neither change the winner's files nor fail the job: its rename
fails or comes first with a complete result, and FINISH records nothing for it. Whoever starts an
attempt removes the other attempts' folders of that job (leftovers of attempts that died).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ourvidz import layout
from ourvidz.errors import BadInput, GenerationFailed, one_line
from ourvidz.jsonio import short

NAMESPACE = layout.WORKER_NAMESPACE
ATTEMPTS = ".attempts"  # a dot: no job id (letters or digits first) can name it
MARKER = ".ourvidz-job"


class ForeignFolder(BadInput):
    """The job's folder exists and was not made by a worker for this job: nothing is touched."""


class JobTimedOut(GenerationFailed):
    """The job ran past --job-timeout. Not retried: the same job would most likely take as long again."""

    retryable = False


def read_payload(raw: bytes, presets_dir=None):
    """(spec, problem, job id): parse never lets anything but a MalformedJob out, so every payload,
    however hostile, becomes a recorded, counted attempt under a stable id."""
    from ourvidz.worker import payload

    try:
        spec = payload.parse(raw, presets_dir)
        return spec, None, spec.id
    except payload.MalformedJob as exc:
        return None, exc, exc.job_id
    except BaseException as exc:  # noqa: BLE001 - RecursionError, MemoryError, a bug: still one recorded failure
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        job_id = payload.fallback_id(raw)
        return None, payload.MalformedJob(f"the payload cannot be read ({one_line(exc)})", job_id), job_id


@dataclass
class Adopted:
    """A job's result read back from its promoted folder (an earlier attempt's complete output)."""

    files: list[Path]
    report: dict[str, Any]
    seed: int | None


class JobDirs:
    def __init__(self, out: Path, job_id: str):
        from ourvidz.worker.payload import ID_RE

        if not ID_RE.fullmatch(job_id):  # parse refuses such ids; never a path outside the namespace
            raise ValueError(f"job id {short(job_id)} cannot name a folder")
        self.job_id = job_id
        self.final = layout.worker_job_dir(Path(out), job_id)
        self.attempts = Path(out) / NAMESPACE / ATTEMPTS / job_id

    def attempt_dir(self, worker: str, attempt: int) -> Path:
        return self.attempts / f"{worker}-{attempt}"

    def fresh(self, worker: str, attempt: int) -> Path:
        """This attempt's empty folder, the other attempts' leftovers removed first."""
        mine = self.attempt_dir(worker, attempt)
        if self.attempts.is_dir():
            for old in self.attempts.iterdir():
                if old != mine:
                    shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(mine, ignore_errors=True)
        mine.mkdir(parents=True)
        marker = {"job": self.job_id, "worker": worker, "attempt": attempt, "started": time.time()}
        (mine / MARKER).write_text(json.dumps(marker))
        return mine

    def owned(self) -> bool:
        """Whether the final folder is a complete output a worker promoted for this job."""
        try:
            marker = json.loads((self.final / MARKER).read_text())
        except (OSError, ValueError):
            return False
        return isinstance(marker, dict) and marker.get("job") == self.job_id and (self.final / layout.REPORT).is_file()

    def existing(self) -> Adopted | None:
        """The promoted result if the final folder exists; ForeignFolder if it is not one."""
        if not os.path.lexists(self.final):
            return None
        if self.final.is_symlink() or not self.owned():
            raise ForeignFolder(f"{self.final} exists and was not made by an ourvidz worker for job "
                                f"{short(self.job_id)}; it is left as it is")
        return self.adopt()

    def adopt(self) -> Adopted:
        report = json.loads((self.final / layout.REPORT).read_text())
        names = [n for name in report.get("files", []) for n in (name, layout.sidecar(name))]
        files = [self.final / n for n in names if (self.final / n).is_file()] + [self.final / layout.REPORT]
        seed = None
        for p in files:
            if p.suffix == ".json" and p.name != layout.REPORT:
                try:
                    seed = json.loads(p.read_text()).get("seed")
                except (OSError, ValueError):
                    pass
                break
        return Adopted(files, report, seed)

    def promote(self, attempt_dir: Path) -> Adopted | None:
        """Rename the attempt's folder to the job's; None when it is now there, else the result an
        earlier attempt promoted (this attempt's folder is then removed). Never replaces anything."""
        self.final.parent.mkdir(parents=True, exist_ok=True)
        if not os.path.lexists(self.final):
            try:
                os.rename(attempt_dir, self.final)  # fails if the target holds anything: never replaces
                return None
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
                    raise
        result = self.existing()  # another attempt of the same job got there first
        self.discard(attempt_dir)
        return result

    def discard(self, attempt_dir: Path | None) -> None:
        if attempt_dir is not None:
            shutil.rmtree(attempt_dir, ignore_errors=True)
            try:
                self.attempts.rmdir()  # the job's attempts folder, once nothing is left in it
            except OSError:
                pass

    def clean(self) -> None:
        """Once the job is recorded: every attempt folder of it goes."""
        shutil.rmtree(self.attempts, ignore_errors=True)


def on_step_with_deadline(on_step: Callable[[int, int], None], limit: float | None, job: str):
    """The step callback, raising JobTimedOut once the job has run past `limit` seconds."""
    if not limit:
        return on_step
    deadline = time.monotonic() + limit

    def checked(done: int, total: int) -> None:
        on_step(done, total)
        if time.monotonic() > deadline and done < total:
            raise JobTimedOut(f"job {short(job)} ran past its time limit of {limit:g} s (at step {done}/{total}); "
                              "--job-timeout sets it")

    return checked


class OutageLog:
    """One line when an outage starts, then at most one every `every` seconds (with the count of
    failures since), then one when it is over."""

    def __init__(self, log: Callable[[str], None], what: str, every: float = 30.0, clock=time.monotonic):
        self.log, self.what, self.every, self.clock = log, what, every, clock
        self.since: float | None = None
        self.last = 0.0
        self.failures = 0

    def failed(self, exc: BaseException) -> None:
        now = self.clock()
        self.failures += 1
        if self.since is None:
            self.since, self.last = now, now
            self.log(f"{self.what}: {one_line(exc)}; retrying (logged again every {self.every:g} s at most)")
        elif now - self.last >= self.every:
            self.last = now
            self.log(f"{self.what}: still failing after {now - self.since:.0f} s ({self.failures} failures): "
                     f"{one_line(exc)}")

    def ok(self) -> None:
        if self.since is not None:
            self.log(f"{self.what}: back after {self.clock() - self.since:.0f} s ({self.failures} failures)")
            self.since, self.failures = None, 0
