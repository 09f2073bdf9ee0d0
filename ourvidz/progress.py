"""Phases a user waits through (loading, hashing, enhancement, decoding, encoding, saving), reported
to whoever listens: the CLI's progress display, or nobody.

The code doing the work says `with phase("vae decode") as p: ...` (and `p.advance(n)` where it
can count bytes, frames or files); the command around it says `with reporting(callback):`. The
listener is a context variable, so the layers in between (the model cache, the families'
loaders) pass nothing along and stay as they are. With no listener a phase costs a clock read.

A job's tail (saving: ourvidz.tails) may run in a background thread while the next job generates:
it runs in a copy of the context its job generated in (ourvidz.job.PendingJob), so its phases go to
that job's listener, and a listener may be called from two threads at once (views.BatchProgress
locks its own state; rich's Progress locks its tasks).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Callable, Iterator, Literal

Event = Literal["start", "advance", "end"]


@dataclass
class Phase:
    name: str  # "wan: load transformer", "encode mp4", ...
    total: float | None = None  # in `unit`s; None when it cannot be counted
    unit: str = ""  # "B" (bytes), "frames", "files", or "" (only the time)
    completed: float = 0.0
    started: float = field(default_factory=time.perf_counter)
    seconds: float | None = None  # set when the phase ends
    _listener: Callable[[Event, Phase], None] | None = field(default=None, repr=False)

    def advance(self, amount: float = 1.0) -> None:
        self.update(self.completed + amount)

    def update(self, completed: float, total: float | None = None) -> None:
        self.completed = completed
        if total is not None:
            self.total = total
        if self._listener is not None:
            self._listener("advance", self)


PhaseListener = Callable[[Event, Phase], None]

_listener: ContextVar[PhaseListener | None] = ContextVar("ourvidz_phase_listener", default=None)
_scope: ContextVar[str] = ContextVar("ourvidz_phase_scope", default="")


@contextmanager
def reporting(listener: PhaseListener | None) -> Iterator[None]:
    """Send the phases started inside this block to `listener` (None: to nobody)."""
    token = _listener.set(listener)
    try:
        yield
    finally:
        _listener.reset(token)


@contextmanager
def within(scope: str) -> Iterator[None]:
    """Name the phases inside after a model family: "wan: load transformer"."""
    token = _scope.set(scope)
    try:
        yield
    finally:
        _scope.reset(token)


@contextmanager
def phase(name: str, total: float | None = None, unit: str = "") -> Iterator[Phase]:
    scope = _scope.get()
    ph = Phase(f"{scope}: {name}" if scope else name, total=total, unit=unit, _listener=_listener.get())
    if ph._listener is not None:
        ph._listener("start", ph)
    try:
        yield ph
    finally:
        ph.seconds = time.perf_counter() - ph.started
        if ph._listener is not None:
            ph._listener("end", ph)


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def describe(ph: Phase) -> str:
    """One line for a finished phase: its name, how much it handled, its time."""
    amount = ""
    if ph.total:
        amount = human_bytes(ph.total) if ph.unit == "B" else f"{ph.total:g} {ph.unit}".rstrip()
    parts = [ph.name] + ([amount] if amount else []) + [f"{ph.seconds or 0.0:.2f} s"]
    return " · ".join(parts)
