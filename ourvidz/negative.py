"""The priority-based negative prompt builder (performance-seed.md, "Negative Prompts").

The vocabulary and the strategies are data (presets/negatives.yaml); this module walks a
strategy's `take` list in order. The user's own negative text comes first, then the critical
terms, then each category; a term already present is skipped. A strategy with a token budget
(SDXL: CLIP's window) drops a whole category that would not fit and reports it, and "fill"
adds single terms while room remains. The critical terms are never dropped.

The user's text is never dropped or refused either: SDXL prompts are embedded in 77-token chunks
(ourvidz/families/sdxl/prompts.py), so a negative of any length is encoded whole. When the user's
text and the critical terms fit in one window together, the auto terms share that window with it
(auto_window "shared": the negative stays one chunk, as it always was); when they do not, the auto
terms get a window of their own after the user's text (auto_window "own"), with the same budget
and the same priority order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ourvidz.clip_tokens import TokenCounter, best_counter
from ourvidz.errors import BadInput
from ourvidz.datafiles import find_data_file, read_yaml

LISTS = ("critical", "quality", "nsfw", "video")  # plain lists of terms
GROUPS = ("anatomical", "artifacts")  # named categories of terms


@dataclass(frozen=True)
class Vocabulary:
    lists: dict[str, list[str]]
    groups: dict[str, dict[str, list[str]]]
    strategies: dict[str, dict[str, Any]]
    path: Path


@dataclass
class NegativePrompt:
    text: str
    strategy: str
    user_text: str
    included: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    tokens: int | None = None
    token_budget: int | None = None  # including BOS and EOS
    counted_with: str = ""
    user_tokens: int | None = None  # the user's text alone, including BOS and EOS
    auto_window: str | None = None  # "shared" with the user's text, or "own" (after it): see above

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def load_vocabulary(presets_dir: Path | str | None = None) -> Vocabulary:
    path = find_data_file("negatives.yaml", presets_dir)
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise BadInput(f"{path}: expected a mapping")

    def terms(value: Any, where: str) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(t, str) and t.strip() for t in value):
            raise BadInput(f"{path}: field '{where}': must be a list of non-empty strings")
        return [t.strip() for t in value]

    lists = {name: terms(data.get(name), name) for name in LISTS}
    groups = {}
    for name in GROUPS:
        if not isinstance(data.get(name), dict):
            raise BadInput(f"{path}: field '{name}': must be a mapping of category -> terms")
        groups[name] = {cat: terms(v, f"{name}.{cat}") for cat, v in data[name].items()}
    strategies = data.get("strategies")
    if not isinstance(strategies, dict) or not strategies:
        raise BadInput(f"{path}: field 'strategies': must be a mapping of strategy -> rules")
    for sname, rules in strategies.items():
        take = (rules or {}).get("take")
        if not isinstance(take, list):
            raise BadInput(f"{path}: field 'strategies.{sname}.take': must be a list")
        for step in take:
            (source, amount), = step.items() if isinstance(step, dict) and len(step) == 1 else [(None, None)]
            if source not in LISTS + GROUPS:
                raise BadInput(f"{path}: field 'strategies.{sname}.take': unknown list {source!r}")
            if not (amount in ("all", "fill") or (isinstance(amount, int) and amount >= 0)):
                raise BadInput(f"{path}: field 'strategies.{sname}.take.{source}': must be a count, 'all' or 'fill'")
            if amount == "fill" and "token_budget" not in rules:
                raise BadInput(f"{path}: field 'strategies.{sname}.take.{source}': 'fill' needs a token_budget")
        per = rules.get("terms_per_category")
        if per is not None and not (isinstance(per, int) and per >= 1):
            raise BadInput(f"{path}: field 'strategies.{sname}.terms_per_category': must be a count of at least 1")
        unknown = set(rules) - {"take", "token_budget", "terms_per_category"}
        if unknown:
            raise BadInput(f"{path}: field 'strategies.{sname}.{sorted(unknown)[0]}': unknown field")
    return Vocabulary(lists, groups, strategies, path)


def _chunks(vocab: Vocabulary, source: str, amount: Any, per: int | None) -> tuple[list[tuple[str, list[str]]], list[str]]:
    """(label, terms) chunks a take-step adds, and the labels of what it leaves out."""
    if source in GROUPS:
        cats = list(vocab.groups[source].items())
        n = len(cats) if amount == "all" else amount
        return [(f"{source}.{c}", t[:per]) for c, t in cats[:n]], [f"{source}.{c}" for c, _ in cats[n:]]
    items = vocab.lists[source]
    if amount == "fill":
        return [(source, [t]) for t in items], []
    n = len(items) if amount == "all" else amount
    left = [f"{source} ({len(items) - n} of {len(items)} items)"] if n < len(items) else []
    return [(f"{source} ({n} of {len(items)})" if n < len(items) else source, items[:n])], left


def build_negative(
    strategy: str,
    user_text: str = "",
    auto: bool = True,
    counter: TokenCounter | None = None,
    vocab: Vocabulary | None = None,
) -> NegativePrompt:
    vocab = vocab or load_vocabulary()
    if strategy not in vocab.strategies:
        raise BadInput(f"unknown negative strategy '{strategy}'; {vocab.path} has {', '.join(vocab.strategies)}")
    rules = vocab.strategies[strategy]
    budget = rules.get("token_budget")
    counter = counter or best_counter()
    user_text = " ".join(user_text.split()).strip(" ,")
    result = NegativePrompt(text=user_text, strategy=strategy, user_text=user_text)
    if budget is not None:
        result.token_budget = budget + 2
        result.counted_with = counter.source

    parts = [user_text] if user_text else []
    seen = {p.strip().lower() for p in user_text.split(",") if p.strip()}
    auto_parts: list[str] = []  # what the auto terms add, in order
    own_window = False

    def fits(new: list[str]) -> bool:
        if budget is None:
            return True
        candidate = auto_parts + new if own_window else parts + new
        return counter.count(", ".join(candidate)) <= budget + 2

    if budget is not None:
        result.user_tokens = counter.count(user_text)
        if auto and user_text:
            critical = [t for t in vocab.lists["critical"] if t.lower() not in seen]
            own_window = not fits(critical)
        result.auto_window = "own" if own_window else "shared"

    if auto:
        fill_labels: dict[str, list[int]] = {}
        for step in rules["take"]:
            (source, amount), = step.items()
            chunks, left_out = _chunks(vocab, source, amount, rules.get("terms_per_category"))
            result.dropped += left_out
            for label, terms in chunks:
                new = [t for t in terms if t.lower() not in seen]
                if not new:  # already covered by earlier terms
                    if amount != "fill":
                        result.included.append(label)
                    continue
                if not fits(new):
                    if source == "critical":  # only a vocabulary whose critical list outgrows a window
                        raise BadInput(f"{vocab.path}: the critical terms exceed the {budget + 2}-token "
                                       f"window of strategy {strategy}")
                    if amount == "fill":
                        fill_labels.setdefault(source, [0, 0])[1] += 1
                    else:
                        result.dropped.append(label)
                    continue
                parts += new
                auto_parts += new
                seen.update(t.lower() for t in new)
                if amount == "fill":
                    fill_labels.setdefault(source, [0, 0])[0] += 1
                else:
                    result.included.append(label)
        for source, (taken, skipped) in fill_labels.items():
            total = taken + skipped
            if taken:
                result.included.append(f"{source} ({taken} of {total} by priority)" if skipped else source)
            if skipped:
                result.dropped.append(f"{source} ({skipped} of {total}: no room)")

    result.text = ", ".join(parts)
    if budget is not None:
        result.tokens = counter.count(result.text)
    return result
