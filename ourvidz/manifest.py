"""A batch's records on disk: manifest.json (every job's state), the lock, and the summary.

The manifest is rewritten atomically after each change, so whatever kills the process it reads
as the last consistent state: a job is done only once all its files are written.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ourvidz import layout
from ourvidz.errors import BadInput
from ourvidz.layout import LOCK, MANIFEST
from ourvidz.outputs import NO_SPACE, atomic_replace, disk_full, to_compact_json


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def new_record(u, plan) -> dict[str, Any]:
    return {"id": u.uid, "n": u.n, "job": u.job, "line": u.line, "job_type": u.job_type,
            "family": plan.preset.family, "enhance": plan.enhance, "priority": plan.preset.priority,
            "prompt": u.prompt, "seed": plan.seed, "overrides": u.overrides.as_dict(), "out_dir": u.uid,
            "state": "pending", "attempts": 0, "files": [], "writes": [], "error": None, "exit_code": None,
            "error_class": None, "started": None, "finished": None, "seconds": None, "load_paid": None,
            "load_avoided": None, "demo": None}


class Manifest:
    def __init__(self, batch_dir: Path, data: dict[str, Any]):
        self.path = batch_dir / MANIFEST
        self.data = data
        self.by_id = {r["id"]: r for r in data["jobs"]}
        self._encoded: dict[int, tuple[dict, str]] = {}  # job index -> (a copy of its record, its JSON)

    @classmethod
    def read(cls, batch_dir: Path) -> Manifest | None:
        path = batch_dir / MANIFEST
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            assert isinstance(data, dict) and isinstance(data["jobs"], list)
        except (ValueError, KeyError, AssertionError, OSError) as exc:
            raise BadInput(f"{path} is not a readable ourvidz manifest ({type(exc).__name__}); "
                           "use another --out") from None
        return cls(batch_dir, data)

    def save(self, cache=None) -> None:
        self.data["updated"] = now()
        if cache is not None:  # this run's model loads so far, kept even if the process is killed
            self.data["runs"][-1]["families"] = cache.stats
        atomic_replace(self.path, self.encode())

    def encode(self) -> bytes:
        """The manifest as compact JSON; a job's record is encoded again only when it changed, so a save
        costs little more than writing the file, even at 10,000 jobs."""
        parts = []
        for i, rec in enumerate(self.data["jobs"]):
            cached = self._encoded.get(i)
            if cached is None or cached[0] != rec:
                snapshot = {k: v.copy() if isinstance(v, (list, dict)) else v for k, v in rec.items()}
                cached = self._encoded[i] = (snapshot, to_compact_json(rec)[:-1].decode("utf-8"))
            parts.append(cached[1])
        head = to_compact_json({**self.data, "jobs": "\x00jobs\x00"}).decode("utf-8")  # a NUL: JSON escapes it
        return head.replace('"\\u0000jobs\\u0000"', "[" + ",".join(parts) + "]", 1).encode("utf-8")

    def counts(self) -> dict[str, int]:
        states = [r["state"] for r in self.data["jobs"]]
        return {s: states.count(s) for s in ("pending", "running", "done", "failed")}


def clear_partial(batch_dir: Path, rec: dict) -> list[str]:
    """Remove what an unfinished attempt wrote (only the files that attempt was to write, and
    their temporaries), so the redo starts clean and nothing half-made is kept as if done."""
    removed = []
    for rel in rec.get("writes") or []:
        path = batch_dir / rel
        for p in [path, *path.parent.glob(f".{path.name}.*.tmp")]:
            if p.is_file():
                p.unlink()
                removed.append(str(p.relative_to(batch_dir)))
    rec["writes"] = []
    return removed


def expected_writes(plan, batch_dir: Path) -> list[str]:
    rel = plan.out_dir.relative_to(batch_dir)
    return [str(rel / n) for n in layout.job_files(plan.files)]


@contextmanager
def batch_lock(batch_dir: Path):
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    try:
        batch_dir.mkdir(parents=True, exist_ok=True)
        f = open(batch_dir / LOCK, "a+")
    except OSError as exc:
        if exc.errno in NO_SPACE:
            raise disk_full(exc, batch_dir / LOCK) from None
        raise
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BadInput(f"another `ourvidz batch` is working in {batch_dir}; wait for it or use "
                           "another --out") from None
        yield


def _stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "min": None, "max": None}
    return {"mean": sum(values) / len(values), "min": min(values), "max": max(values)}


def build_summary(manifest: Manifest, run: dict, batch_dir: Path) -> dict[str, Any]:
    jobs = manifest.data["jobs"]
    types: dict[str, list[dict]] = {}
    for r in sorted(jobs, key=lambda r: (r["priority"], r["job_type"])):
        types.setdefault(r["job_type"], []).append(r)

    def row(name: str, recs: list[dict]) -> dict[str, Any]:
        done = [r for r in recs if r["state"] == "done"]
        return {"job_type": name, "jobs": len(recs), "done": len(done),
                "failed": sum(r["state"] == "failed" for r in recs),
                "pending": sum(r["state"] in ("pending", "running") for r in recs),
                "seconds": _stats([r["seconds"] for r in done]),
                "load_paid": sum(r["load_paid"] or 0.0 for r in done),
                "load_avoided": sum(r["load_avoided"] or 0.0 for r in done)}

    by_type = [row(name, recs) for name, recs in types.items()]
    totals = row("all", jobs)
    return {"batch": str(batch_dir), "job_file": manifest.data["job_file"], "runs": len(manifest.data["runs"]),
            "this_run": {"started": run["started"], "finished": run["finished"], "outcome": run["outcome"],
                         "seconds": run.get("seconds"), "families": run["families"]},
            "totals": totals, "by_job_type": by_type,
            "failures": [{"id": r["id"], "job_type": r["job_type"], "line": r["line"], "error": r["error"],
                          "exit_code": r["exit_code"], "error_class": r["error_class"]}
                         for r in jobs if r["state"] == "failed"]}


def _s(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f} s"


def summary_markdown(summary: dict[str, Any]) -> str:
    t = summary["totals"]
    lines = [f"# Batch summary: {summary['batch']}", "",
             f"Job file `{summary['job_file']}`; {t['done']} of {t['jobs']} jobs done, {t['failed']} failed, "
             f"{t['pending']} pending; run {summary['runs']} ({summary['this_run']['outcome']}).", "",
             "| job type | jobs | done | failed | mean | min | max | load paid | load avoided |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in summary["by_job_type"] + [t]:
        s = r["seconds"]
        lines.append(f"| {r['job_type']} | {r['jobs']} | {r['done']} | {r['failed']} | {_s(s['mean'])} | "
                     f"{_s(s['min'])} | {_s(s['max'])} | {_s(r['load_paid'])} | {_s(r['load_avoided'])} |")
    lines += ["", "Model families in this run:", "", "| family | loads | load time | reuses | load avoided |",
              "|---|---:|---:|---:|---:|"]
    for fam, st in summary["this_run"]["families"].items():
        lines.append(f"| {fam} | {st['loads']} | {_s(st['load_seconds'])} | {st['reuses']} | {_s(st['avoided_seconds'])} |")
    if summary["failures"]:
        lines += ["", "Failures:", ""] + [f"- `{f['id']}` (line {f['line']}, exit {f['exit_code']}): {f['error']}"
                                          for f in summary["failures"]]
    return "\n".join(lines) + "\n"
