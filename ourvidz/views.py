"""Rich renderings of presets, negative prompts, plans and reports. No logic beyond layout."""

from __future__ import annotations

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
        table.add_row("enhance prompt", _fmt(enh.get("seconds")), note)
    phases = report["phases"]
    table.add_row("encode prompt", _fmt(phases.get("encode")), "")
    table.add_row("denoise", _fmt(phases.get("denoise")), f"{report['seconds_per_step']:.3f} s/step" if report.get("seconds_per_step") else "")
    table.add_row("vae decode", _fmt(phases.get("decode")), "")
    table.add_row("save", _fmt(phases.get("save")), "")
    table.add_row("total", _fmt(report["total"]), f"{_fmt(report.get('per_image'))} per image" if report.get("per_image") else "", style="bold")
    doc = report.get("seed_doc")
    if doc:
        ratio = doc["seconds"] / report["total"] if report["total"] else 0
        table.add_row("seed doc (RTX 6000 Ada)", _fmt(doc["seconds"]), f"{doc['status']}; this run {ratio:.1f}x faster" if ratio >= 1 else f"{doc['status']}; this run {1 / ratio:.1f}x slower")
    mem = report.get("peak_gpu_memory_gb")
    table.caption = (f"device {report['device']} · peak GPU memory {mem:.1f} GB · " if mem else f"device {report['device']} · ") + \
        " ".join(f"{k} {v}" for k, v in report["versions"].items())
    return table


@contextmanager
def step_progress(console: Console, label: str):
    """A denoising-step bar; yields the on_step callback the pipelines call."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("steps"),
               TimeElapsedColumn(), TextColumn("{task.fields[rate]}"))
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(f"{label}: denoise", total=None, rate="")
        started = []

        def on_step(done: int, total: int) -> None:
            now = time.perf_counter()
            started.append(now)
            rate = f"{(now - started[0]) / (done - 1):.2f} s/step" if done > 1 else ""
            progress.update(task, completed=done, total=total, rate=rate)

        yield on_step


def print_result(console: Console, result) -> None:
    if result.report.get("demo"):
        console.print(f"[bold yellow]{DEMO_LABEL}[/]: outputs are noise, made to show every part working")
    if (result.report.get("enhancement") or {}).get("warning"):
        console.print(f"[yellow]warning:[/] {result.report['enhancement']['warning']}")
    console.print(report_table(result.report))
    for path in result.files:
        console.print(f"wrote {path}")
