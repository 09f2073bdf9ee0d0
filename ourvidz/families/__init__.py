"""The model-family registry: everything ourvidz knows about a family is declared once, in its
own folder (families/<name>/__init__.py), and every other module asks here.

A family declares its name, its components, where default weights live, how it is loaded
(configured weights, the tiny demo models, the random full-size architectures), which exact
speed-ups apply to it, which production queue carries its jobs and what a preset of it may say.
This module stays light (no torch, no diffusers): presets, plans and the CLI read it before any
model loads; the heavy parts are named as "module:attribute" and imported on first use.
"""

from __future__ import annotations

from ourvidz.families.spec import Family


def _load() -> dict[str, Family]:
    from ourvidz.families import qwen, sdxl, wan

    return {f.name: f for f in (sdxl.FAMILY, wan.FAMILY, qwen.FAMILY)}


FAMILIES: dict[str, Family] = _load()
ENHANCER = next(f.name for f in FAMILIES.values() if f.role == "enhancer")


def get(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        from ourvidz.errors import WeightsError

        raise WeightsError(f"unknown model family {name!r}; known: {', '.join(FAMILIES)}") from None


def names() -> tuple[str, ...]:
    return tuple(FAMILIES)


def generators() -> tuple[str, ...]:
    """The families a preset can name: those that make images or video."""
    return tuple(n for n, f in FAMILIES.items() if f.role == "generator")


def queues() -> dict[str, str]:
    """family -> its production queue."""
    return {n: f.queue for n, f in FAMILIES.items() if f.queue}
