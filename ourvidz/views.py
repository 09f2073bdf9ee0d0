"""Rich renderings of presets, negative prompts, plans and reports. No logic beyond layout."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from contextlib import contextmanager
from typing import Any

import yaml
from rich.console import Console, Group
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

DEMO_LABEL = "demo: random weights"


def console(stderr: bool = False) -> Console:
    """A console as the CLI's: piped output (scripts, logs) gets a wide one rather than rich's
    80-column default."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() or os.environ.get("COLUMNS") else 140)


def presets_table(presets) -> Table:
    table = Table(title="ourvidz job types", title_justify="left")
    table.caption = "cfg: guidance scale; seed doc: production time on an RTX 6000 Ada, * expected, not measured"
    for col in ("job type", "family", "size", "steps", "cfg", "frames", "images", "qwen", "seed doc"):
        table.add_column(col, justify="left" if col in ("job type", "family", "qwen") else "right", no_wrap=True)
    for p in presets:
        doc = f"{p.seed_doc.seconds:g} s{'*' if p.seed_doc.status == 'expected' else ''}" if p.seed_doc else "-"
        frames = f"{p.frames}@{p.fps}fps" if p.is_video else str(p.frames)
        table.add_row(p.name, p.family, f"{p.width}x{p.height}", str(p.steps), f"{p.guidance:g}",
                      frames, str(p.num_images), "yes" if p.enhance else "no", doc)
    return table


def models_table(rows) -> Table:
    table = Table(title="ourvidz models", title_justify="left")
    for col in ("family", "configured as", "found", "size", "detail"):
        table.add_column(col)
    for r in rows:
        size = f"{r['bytes'] / 1e9:.2f} GB" if r["bytes"] else "-"
        table.add_row(r["family"], r["configured"], "[green]yes[/]" if r["found"] else "[red]no[/]", size, r["detail"])
    if rows:
        table.caption = f"from {rows[0]['origin']}"
    return table


def show_yaml(data: dict[str, Any]) -> Syntax:
    return Syntax(yaml.safe_dump(data, sort_keys=False), "yaml", theme="ansi_dark", background_color="default")


def negative_panel(neg) -> Panel:
    lines = [Text(neg.text or "(empty)")]
    if neg.token_budget is not None:
        style = "green" if neg.tokens <= neg.token_budget else "red"
        lines.append(Text(f"\n{neg.tokens} / {neg.token_budget} CLIP tokens (BOS and EOS included), "
                          f"counted with {neg.counted_with}", style=style))
    else:
        lines.append(Text(f"\nno token window for '{neg.strategy}'; {len(neg.text)} characters"))
    if neg.user_text:
        lines.append(Text(f"your text first: {neg.user_text}"))
    lines.append(Text("included: " + (", ".join(neg.included) or "-"), style="cyan"))
    lines.append(Text("dropped:  " + (", ".join(neg.dropped) or "-"), style="yellow"))
    return Panel(Group(*lines), title=f"negative prompt · strategy {neg.strategy}", title_align="left")


def plan_panel(plan, models_line: str) -> Panel:
    data = plan.to_dict()
    data["negative_prompt"] = {k: data["negative_prompt"][k] for k in ("text", "tokens", "token_budget", "included", "dropped")}
    if data.get("enhancement_settings"):  # the instruction is long; the sidecar keeps it whole
        enh = dict(data["enhancement_settings"])
        enh["instruction"] = enh["instruction"].splitlines()[0][:70] + f"... ({len(enh['instruction'])} characters)"
        enh["end_markers"] = " ".join(json.dumps(m) for m in enh["end_markers"])
        data["enhancement_settings"] = enh
    data["models"] = models_line
    return Panel(show_yaml(data), title=f"plan · {plan.job_type} (dry run: no model loaded)", title_align="left")


def _fmt(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.2f} s"


def report_table(report: dict[str, Any]) -> Table:
    demo = " · " + DEMO_LABEL if report.get("demo") else ""
    table = Table(title=f"timing · {report['job_type']}{demo}", title_justify="left")
    table.add_column("phase")
    table.add_column("time", justify="right")
    table.add_column("note")
    for name, seconds in report["load"].items():
        table.add_row(f"load {name}", _fmt(seconds), "resident: no load" if seconds == 0 else "")
    enh = report.get("enhancement")
    if enh:
        note = "fallback: original prompt used" if enh.get("fallback") else f"{enh.get('new_tokens', 0)} new tokens"
        if not enh.get("fallback") and enh.get("chars"):
            note += f", {enh['chars']['original']} -> {enh['chars']['text']} chars"
        if enh.get("clip_tokens"):
            note += f", {enh['clip_tokens']}/{enh['clip_window']} CLIP tokens" + (" (cut)" if enh.get("clip_truncated") else "")
        table.add_row("enhance prompt", _fmt(enh.get("seconds")), note)
    phases = report["phases"]
    table.add_row("encode prompt", _fmt(phases.get("encode")), "")
    table.add_row("denoise", _fmt(phases.get("denoise")), f"{report['seconds_per_step']:.3f} s/step" if report.get("seconds_per_step") else "")
    table.add_row("vae decode", _fmt(phases.get("decode")), "")
    table.add_row("save", _fmt(phases.get("save")), "")
    table.add_row("total", _fmt(report["total"]), f"{_fmt(report.get('per_image'))} per image" if report.get("per_image") else "", style="bold")
    doc = report.get("seed_doc")
    if doc:
        ratio = doc.get("ratio_seed_doc_over_this_run")
        if ratio is None:
            note = f"{doc['status']}; not comparable with a demo run"
        else:
            note = f"{doc['status']}; this run {ratio:.1f}x faster" if ratio >= 1 else f"{doc['status']}; this run {1 / ratio:.1f}x slower"
        table.add_row("seed doc (RTX 6000 Ada)", _fmt(doc["seconds"]), note)
    mem = report.get("peak_gpu_memory_gb")
    table.caption = (f"device {report['device']} · peak GPU memory {mem:.1f} GB · " if mem else f"device {report['device']} · ") + \
        " ".join(f"{k} {v}" for k, v in report["versions"].items())
    return table


def _preview(text: str, limit: int = 400) -> str:
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def enhancement_panel(run) -> Panel:
    """`ourvidz enhance`: the prompt to use, then where it came from and what it cost."""
    r = run.result
    lines = [Text(r.text)]
    if r.fallback:
        lines.append(Text(f"\nfallback: {r.warning}", style="yellow"))
    else:
        lines.append(Text(f"\n{r.new_tokens} new tokens, {len(r.original)} -> {len(r.text)} characters", style="green"))
    if r.truncated:
        lines.append(Text(f"the prompt was cut to fit max_input_tokens ({r.input_tokens} tokens in)", style="yellow"))
    if run.clip_tokens is not None:
        lines.append(Text(f"{run.clip_tokens} CLIP tokens: SDXL uses the first 77", style="yellow" if run.clip_tokens > 77 else ""))
    load = ", ".join(f"{k} {v:.2f} s" for k, v in run.load.items())
    lines.append(Text(f"enhance {r.seconds:.2f} s ({r.attempts} attempt{'s' if r.attempts > 1 else ''}) · load {load} · seed {run.seed}"))
    if run.demo:
        lines.append(Text(r.note or DEMO_LABEL, style="bold yellow"))
    return Panel(Group(*lines), title=f"enhanced prompt{' · fallback' if r.fallback else ''}", title_align="left")


@contextmanager
def step_progress(console: Console, label: str):
    """A denoising-step bar; yields the on_step callback the pipelines call."""
    with job_progress(console, label) as (on_step, _on_phase):
        yield on_step


def _amount(done: float, total: float | None, unit: str) -> str:
    from ourvidz.progress import human_bytes

    if unit == "B":
        return f"{human_bytes(done)} / {human_bytes(total)}" if total else human_bytes(done)
    if total:
        return f"{done:g}/{total:g} {unit}".rstrip()
    return ""


@contextmanager
def job_progress(console: Console, label: str):
    """Every phase of a job as it happens; yields (on_step, on_phase) for run_job.

    On a terminal: a live display, a bar a phase (loading with bytes, hashing, enhancement, prompt
    encoding, denoising with steps and s/step, VAE decode, MP4 encoding with frames, saving),
    gone when the job ends (the timing table follows). Elsewhere (a pipe, a log): one line a
    phase as it ends, nothing animated."""
    from ourvidz.progress import describe

    live = console.is_terminal
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[amount]}"),
               TimeElapsedColumn(), TextColumn("{task.fields[rate]}"))
    progress = Progress(*columns, console=console, transient=True, disable=not live)
    tasks: dict[int, Any] = {}
    started: list[float] = []
    denoise: list[Any] = []

    def on_phase(event: str, ph) -> None:
        key = id(ph)
        if not live:
            if event == "end":
                console.print(f"{label}: {describe(ph)}", highlight=False, markup=False, soft_wrap=True)
            return
        if event == "start":
            tasks[key] = progress.add_task(ph.name, total=ph.total, amount=_amount(ph.completed, ph.total, ph.unit), rate="")
        elif key in tasks:
            total = ph.total if event == "advance" else (ph.total or 1)
            done = ph.completed if event == "advance" else total
            progress.update(tasks[key], completed=done, total=total, amount=_amount(ph.completed, ph.total, ph.unit))

    def on_step(done: int, total: int) -> None:
        now = time.perf_counter()
        started.append(now)
        rate = f"{(now - started[0]) / (done - 1):.2f} s/step" if done > 1 else ""
        if not denoise:
            denoise.append(progress.add_task(f"{label}: denoise", total=total, amount="", rate=""))
        progress.update(denoise[0], completed=done, total=total, amount=f"{done}/{total} steps", rate=rate)
        if not live and done == total:
            console.print(f"{label}: denoise · {total} steps · {now - started[0]:.2f} s"
                          + (f" · {rate}" if rate else ""), highlight=False, markup=False, soft_wrap=True)

    with progress:
        yield on_step, on_phase


def print_result(console: Console, result) -> None:
    if result.report.get("demo"):
        console.print(f"[bold yellow]{DEMO_LABEL}[/]: outputs are noise, made to show every part working")
    enh = result.report.get("enhancement") or {}
    if enh.get("warning"):
        console.print(Text("warning: ", style="yellow") + Text(enh["warning"]))
    if enh and not enh.get("fallback"):
        console.print(Text("enhanced prompt: ", style="cyan") + Text(_preview(enh["text"])))
    console.print(report_table(result.report))
    for path in result.files:
        console.print(f"wrote {path}")


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "-:--:--"
    s = int(seconds + 0.5)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class BatchProgress:
    """One live display with two bars (rich allows one at a time): the batch's jobs (elapsed, ETA)
    and the current job's denoising steps; while a job runs, a bar for each of its other phases.
    A job's tail (saving: ourvidz.tails) reports from a background thread while the next job
    generates, so each job's phases go to their own listener (phases(label)), under a lock."""

    def __init__(self, console: Console, total: int, done: int = 0):
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[unit]}"),
                   TimeElapsedColumn(), TextColumn("{task.fields[note]}"))
        self.progress = Progress(*columns, console=console)
        self.overall = self.progress.add_task("batch", total=total, completed=done, unit="jobs", note="")
        self.step = None
        self.phase_bars: dict[int, Any] = {}  # phases other than denoising (ourvidz.progress), of any job
        self._lock = threading.Lock()

    def __enter__(self) -> BatchProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self._drop_step()
        with self._lock:
            for task in self.phase_bars.values():
                self.progress.remove_task(task)
            self.phase_bars.clear()
        self.progress.stop()

    def _drop_step(self) -> None:
        if self.step is not None:
            self.progress.remove_task(self.step)
            self.step = None

    def phases(self, label: str):
        """run_job's phase listener for the job `label`: a bar for each phase while it runs (loading
        with bytes, enhancement, decode, MP4 encoding, saving), from whichever thread runs it."""

        def on_phase(event: str, ph) -> None:
            key = id(ph)
            with self._lock:
                if event == "start":
                    unit = "" if ph.unit == "B" else ph.unit
                    total = ph.total / 1e6 if ph.unit == "B" and ph.total else ph.total
                    self.phase_bars[key] = self.progress.add_task(f"{label}: {ph.name}", total=total,
                                                                  unit="MB" if ph.unit == "B" else unit, note="")
                elif key in self.phase_bars:
                    if event == "advance":
                        done = ph.completed / 1e6 if ph.unit == "B" else ph.completed
                        self.progress.update(self.phase_bars[key], completed=done)
                    else:
                        self.progress.remove_task(self.phase_bars.pop(key))

        return on_phase

    def set_eta(self, seconds: float | None) -> None:
        self.progress.update(self.overall, note=f"ETA {_clock(seconds)}")

    def job(self, label: str):
        """The on_step callback for the next job's step bar (the last job's step bar goes)."""
        self._drop_step()
        self.step = task = self.progress.add_task(f"{label}: denoise", total=None, unit="steps", note="")
        started: list[float] = []

        def on_step(done: int, total: int) -> None:
            started.append(time.perf_counter())
            rate = f"{(started[-1] - started[0]) / (done - 1):.2f} s/step" if done > 1 else ""
            self.progress.update(task, completed=done, total=total, note=rate)

        return on_step

    def finished(self, line: str, eta: float | None) -> None:
        """A job recorded, in order: its line printed. Its step bar stays until the next job's, which
        may be generating already."""
        self.progress.advance(self.overall)
        self.set_eta(eta)
        self.progress.console.print(line, highlight=False, soft_wrap=True)


def batch_order_table(records, batch_dir) -> Table:
    table = Table(title=f"batch order · {batch_dir} (dry run: no model loaded)", title_justify="left")
    for col in ("#", "job", "family", "qwen", "priority", "state", "seed", "prompt"):
        table.add_column(col, justify="right" if col in ("#", "priority", "seed") else "left", no_wrap=col != "prompt")
    for i, r in enumerate(records, 1):
        table.add_row(str(i), r["id"], r["family"], "yes" if r["enhance"] else "no", str(r["priority"]), r["state"],
                      str(r["seed"]), r["prompt"][:60])
    return table


def batch_summary_tables(summary: dict[str, Any]) -> list[Table]:
    t = summary["totals"]
    jobs = Table(title=f"batch summary · {summary['batch']} · {t['done']} of {t['jobs']} done, {t['failed']} failed, "
                 f"{t['pending']} pending", title_justify="left")
    for col in ("job type", "jobs", "done", "failed", "mean", "min", "max", "load paid", "load avoided"):
        jobs.add_column(col, justify="left" if col == "job type" else "right", no_wrap=True)
    for r in summary["by_job_type"] + [t]:
        s = r["seconds"]
        jobs.add_row(r["job_type"], str(r["jobs"]), str(r["done"]), str(r["failed"]), _fmt(s["mean"]), _fmt(s["min"]),
                     _fmt(s["max"]), _fmt(r["load_paid"]), _fmt(r["load_avoided"]),
                     style="bold" if r is t else None, end_section=r is summary["by_job_type"][-1])
    jobs.caption = "times per job, all runs of this batch; load avoided: load time saved by models already resident"
    fams = Table(title="model families · this run", title_justify="left")
    for col in ("family", "loads", "load time", "reuses", "load avoided", "moves"):
        fams.add_column(col, justify="left" if col == "family" else "right", no_wrap=True)
    for fam, st in summary["this_run"]["families"].items():
        fams.add_row(fam, str(st["loads"]), _fmt(st["load_seconds"]), str(st["reuses"]), _fmt(st["avoided_seconds"]),
                     str(st.get("moves", 0)))
    tables = [jobs, fams]
    if summary["failures"]:
        fails = Table(title="failures", title_justify="left")
        for col in ("job", "line", "exit", "error"):
            fails.add_column(col)
        for f in summary["failures"]:
            fails.add_row(f["id"], str(f["line"]), str(f["exit_code"]), f["error"])
        tables.append(fails)
    return tables


def overview_table(data: dict[str, Any]):
    table = Table(title="ourvidz queue", title_justify="left", caption=f"{data['running']} job(s) running")
    for col in ("queue / worker", "state", "heartbeat", "job", "queues", "device"):
        table.add_column(col)
    for q, depth in data["queues"].items():
        table.add_row(q, f"{depth} waiting", "", "", "", "")
    for w in data["workers"]:
        job = f"{w['job']} ({w['job_type']}, {w['job_seconds']:.0f} s)" if w["alive"] and w["job"] else "-"
        state = "alive" if w["alive"] else f"dead, holds {w['held']}: requeued at the next sweep"
        beat = f"{w['beat_age']:.1f} s ago" if w["alive"] else "expired"
        table.add_row(w["id"], state, beat, job, ",".join(w.get("queues", [])), w.get("device", ""))
    return table
