"""A taken job's result made final, in the order the jobs were taken: its files written (in the
background while the next job generates: ourvidz.tails), promoted into the job's folder while this
attempt still holds the job, delivered (thumbnails, --store uploads), recorded with the Lua FINISH
transition, and called back. A mixin of Worker: the state is the worker's.

What runs in the background is only the local writing into the attempt's own folder (media,
sidecars, report.json), which nothing else reads. Promotion, delivery, FINISH and the callback stay
on the worker's own thread, after the next job's generation and before that job's own result: the
MINE check and the rename stay one step with the FINISH that follows them, the heartbeat's current
job and the --job-timeout watchdog cover them as before, a retry or failure is recorded exactly as
it was, and the producers see results and callbacks in the order the jobs were taken.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from ourvidz.errors import OurvidzError, one_line
from ourvidz.jsonio import short
from ourvidz.worker import callback, deliver
from ourvidz.worker.keys import job_key, processing_key


@dataclass
class InHand:
    """A taken job from its generation until it is recorded."""

    queue: str
    raw: bytes
    job_id: str
    attempt: int
    label: str
    spec: Any  # the typed job; None for a payload that could not be read
    dirs: Any  # its attempts.JobDirs (None with no spec)
    mine: Path | None = None  # this attempt's folder
    result: Any = None  # this attempt's JobResult, an earlier attempt's attempts.Adopted, or False if stale
    error: str | None = None
    retry: bool = False

    def failed(self, exc: Exception, max_attempts: int) -> None:
        if isinstance(exc, OurvidzError):  # the same job would fail the same way again unless retryable
            self.result, self.error, self.retry = None, str(exc), exc.retryable and self.attempt < max_attempts
        else:  # a bug or a library failure: retried, then recorded
            self.result, self.error, self.retry = None, one_line(exc), self.attempt < max_attempts


class Results:
    def _settle(self, record: bool = True) -> None:
        """The pending tail (the job taken before the current one): its files written, then the job
        concluded. record=False (Redis is gone): its files are finished and dropped, and the job goes
        back on its queue once this worker's heartbeat expires, as any job in hand would."""
        tail = self.tails.pending
        if tail is None:
            return
        if record:
            self._conclude(tail.tag, tail)
            return
        tail.wait()
        self.tails.collect()
        job = tail.tag
        job.dirs.discard(job.mine)
        self.log(f"{job.label}: not recorded (Redis unreachable); back on {job.queue} once this worker's "
                 "heartbeat expires")

    def _conclude(self, job: InHand, tail=None) -> None:
        """A job's result made final and recorded: the files its tail wrote (if it had one) promoted,
        then delivered (every upload done before it counts as done), FINISH, the callback."""
        delivered = None
        # The watchdog covers the wait for the tail and the delivery, timed from now: the job's own
        # start came before the next job's generation, which it is not charged for.
        self.current = (job.job_id, job.spec.job_type if job.spec else "", time.time())
        try:
            if tail is not None:
                tail.wait()  # interruptible: a KeyboardInterrupt leaves it pending, and the job is handed back
                self.tails.collect()
                job.result = self._promote(job.dirs, job.mine, job.job_id, job.attempt, tail.result())
            if job.result and hasattr(job.result, "plan"):
                delivered = deliver.deliver(job.result, job.spec, self.store)
        except Exception as exc:  # noqa: BLE001 - recorded as InHand.failed says
            job.failed(exc, self.max_attempts)
        finally:
            self.current = None
        if (job.result is None or job.result is False) and job.dirs is not None:
            job.dirs.discard(job.mine)  # a failed or stale attempt's files go; the job's folder is never touched
        self._finish(job.queue, job.raw, job.job_id, job.attempt, job.result or None, job.error, job.retry, job.label,
                     spec=job.spec, delivered=delivered, dirs=job.dirs, stale=job.result is False)

    def _promote(self, dirs, mine: Path, job_id: str, attempt: int, result):
        """The attempt's folder renamed to the job's, only while this attempt holds the job; the result
        with its files there (or an earlier attempt's, already there); False if this attempt is stale."""
        if not self._retrying(self.scripts["mine"], [job_key(job_id)], [self.id, attempt]):
            return False
        adopted = dirs.promote(mine)
        if adopted is not None:
            self.log(f"{short(job_id)}: an earlier attempt's complete output is already in {dirs.final}; keeping it")
            return adopted
        result.files = [dirs.final / p.name for p in result.files]
        return result

    def _finish(self, queue, raw, job_id, attempt, result, error, retry, label, spec=None, delivered=None,
                dirs=None, stale=False) -> None:
        assets: list[str] = []
        if result is not None:
            report = result.report
            assets = [str(p.resolve()) for p in result.files if p.suffix in (".png", ".mp4")]
            timings = {"total": report["total"], "load": sum(report["load"].values()), **report["phases"]}
            seed = result.plan.seed if hasattr(result, "plan") else result.seed
            reference = getattr(getattr(result, "plan", None), "reference", None)
            fields = {"state": "completed", "error": "", "seed": "" if seed is None else seed,
                      "assets": json.dumps(assets),
                      "files": json.dumps([str(p.resolve()) for p in result.files]  # with its thumbnails
                                          + (delivered or {}).get("thumbnails", [])),
                      "timings": json.dumps(timings), "stored": json.dumps((delivered or {}).get("stored", [])),
                      "note": "; ".join(spec.notes) if spec else "",
                      "reference": json.dumps(reference.to_dict()) if reference else ""}
        elif stale:
            fields = {}
        elif retry:
            fields = {"state": "queued", "error": f"attempt {attempt} failed: {error}; requeued"}
        else:
            fields = {"state": "failed", "error": error}
        fields |= {"progress": ""} if retry else {"progress": "", "finished_at": time.time()}
        back = "lpush" if self.ends.get(queue, "right") == "left" else "rpush"  # the producers' end: the back
        recorded = self._retrying(self.scripts["finish"], [job_key(job_id), processing_key(self.id, queue), queue],
                                  [self.id, attempt, raw, 0 if retry else self.result_ttl, back if retry else "",
                                   *_flat(fields)])
        if not recorded:
            self.log(f"{label}: another worker took this job over (this one was given up on); result dropped")
        elif result is not None:
            self.log(f"{label}: completed in {report['total']:.2f} s: {', '.join(Path(a).name for a in assets)}")
        elif retry:
            self.log(f"{label}: attempt {attempt} failed ({error}); back on {queue}")
        else:
            self.log(f"{label}: failed: {error}")
        if recorded and not retry and dirs is not None:
            dirs.clean()
        if recorded and not retry:
            if delivered:
                self._callback(job_id, "completed", delivered["assets"], None, delivered["metadata"])
            elif result is not None:  # an earlier attempt's output, adopted: its files as they are
                self._callback(job_id, "completed", assets, None, {"job_type": spec.job_type if spec else ""})
            else:
                self._callback(job_id, "failed", [], error, {"job_type": spec.job_type, "era": spec.era} if spec else {})

    def _callback(self, job_id: str, status: str, assets: list, error: str | None, metadata=None) -> None:
        if not self.callback_url:
            return

        def send():
            outcome = callback.post_callback(self.callback_url, callback.callback_body(job_id, status, assets, error,
                                                                                         metadata), self.credentials)
            try:
                self.r.hset(job_key(job_id), "callback", outcome)
            except redis.RedisError:
                pass
            if not outcome.startswith("delivered"):
                self.log(f"{job_id}: callback {outcome}")

        self._callbacks = [t for t in self._callbacks if t.is_alive()]
        self._callbacks.append(threading.Thread(target=send, name="ourvidz-callback", daemon=True))
        self._callbacks[-1].start()


def _flat(fields: dict) -> list:
    return [x for kv in fields.items() for x in kv]
