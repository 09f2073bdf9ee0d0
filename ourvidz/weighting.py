"""Prompt weighting syntax: A1111's converted to compel's, and compel's parsed into weighted fragments.

Two syntaxes are accepted in one prompt:

- compel's own: `word++` (1.1 squared), `word-` (0.9), `(red dress)1.3`, `(red dress)++`;
- A1111's: `(word)` = 1.1, `((word))` = 1.21, `[word]` = 1/1.1, `(word:1.4)` = 1.4, nestable;
  `\\(` and `\\)` (and `\\[` `\\]`) are literal brackets.

`to_compel` rewrites the A1111 forms into compel's (a group followed by a number or +/- is already
compel's and is left as it is; an unmatched bracket becomes a literal one), then compel's own
parser (compel.prompt_parser, pure Python) turns the text into (text, weight) fragments, which is
what the sidecar records and what the SDXL encoder embeds. Nothing here loads a model: the plan
parses every prompt, so bad syntax fails before anything loads.

compel's package __init__ imports half of diffusers' pipelines (~20 s on a cold process); the
parser module imports only pyparsing, so it is loaded on its own, from the installed package.
"""

from __future__ import annotations

import functools
import importlib.util
import re
import sys
from dataclasses import dataclass, field
from typing import Any

from ourvidz.errors import BadInput

A1111_PAREN = 1.1  # (word)
A1111_SQUARE = 1 / 1.1  # [word]
_WEIGHT_AFTER = re.compile(r"[+-]|\d|\.\d")  # what follows `)` in compel's syntax: (x)1.3, (x)++, (x)-
_COLON_WEIGHT = re.compile(r"^(.*?):\s*([+-]?(?:\d+\.?\d*|\.\d+))\s*$", re.S)  # (x:1.3)
_SYNTAX = re.compile(r"[()\[\]]|\w[+-]+(?=\s|,|$)|\\")  # anything that may carry a weight or an escape


@functools.lru_cache(maxsize=1)
def compel_parser_module():
    """compel/prompt_parser.py, loaded without compel/__init__ (which imports diffusers' pipelines)."""
    name = "ourvidz._compel_prompt_parser"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec("compel")
    if spec is None or not spec.submodule_search_locations:
        raise BadInput("prompt weighting needs the 'compel' package: pip install compel==2.5.1 (or use --no-weighting)")
    path = next(iter(spec.submodule_search_locations)) + "/prompt_parser.py"
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    module_spec.loader.exec_module(module)
    return module


def _matching(text: str, start: int, open_: str, close: str) -> int | None:
    """Index of the bracket closing text[start] (escapes skipped), or None."""
    depth, i = 0, start
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == open_:
            depth += 1
        elif ch == close:
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def _weight(value: float) -> str:
    return f"{value:.6f}".rstrip("0").rstrip(".")


def to_compel(text: str) -> str:
    """The prompt with A1111's weighting rewritten in compel's syntax; compel's own left as it is."""
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            out.append(f"\\{nxt}" if nxt in "()" else nxt if nxt in "[]\\" else ch + nxt)
            i += 2
            continue
        if ch in "([":
            close = ")" if ch == "(" else "]"
            end = _matching(text, i, ch, close)
            if end is None:  # unmatched: a literal bracket
                out.append("\\(" if ch == "(" else "[")
                i += 1
                continue
            inner = text[i + 1 : end]
            after = text[end + 1 : end + 2] + text[end + 2 : end + 3]
            if ch == "(" and _WEIGHT_AFTER.match(after):  # compel's (x)1.3 / (x)++: convert inside only
                out.append(f"({to_compel(inner)})")
            elif ch == "[":
                out.append(f"({to_compel(inner)}){_weight(A1111_SQUARE)}")
            else:
                m = _COLON_WEIGHT.match(inner)
                if m and m.group(1).strip():
                    out.append(f"({to_compel(m.group(1))}){_weight(float(m.group(2)))}")
                else:
                    out.append(f"({to_compel(inner)}){_weight(A1111_PAREN)}")
            i = end + 1
            continue
        if ch in ")]":  # unmatched closing bracket: literal
            out.append("\\)" if ch == ")" else "]")
            i += 1
            continue
        out.append(ch)
        i += 1
    return "".join(out)


@dataclass
class WeightedText:
    """A prompt as the encoder sees it: (text, weight) fragments, in order."""

    source: str  # what the user wrote
    weighting: bool  # False: literal text, one fragment of weight 1
    compel_text: str = ""  # after the A1111 -> compel rewrite ("" when weighting is off)
    fragments: list[tuple[str, float]] = field(default_factory=list)

    @property
    def weighted(self) -> list[tuple[str, float]]:
        """The fragments whose weight is not 1."""
        return [(t, w) for t, w in self.fragments if abs(w - 1.0) > 1e-9]

    @property
    def plain(self) -> str:
        """The text without weighting syntax (for the pooled embedding and token counts)."""
        if not self.compel_text:  # literal, or no syntax at all: exactly what was written
            return self.source
        return " ".join(t.strip() for t, _ in self.fragments if t.strip())

    def to_dict(self) -> dict[str, Any]:
        return {"weighting": self.weighting, "compel_text": self.compel_text or None,
                "weighted": [[t, round(w, 4)] for t, w in self.weighted]}


def parse(text: str, weighting: bool = True) -> WeightedText:
    """The fragments of a prompt; with weighting off, the text itself at weight 1."""
    if not weighting or not text or not _SYNTAX.search(text):
        return WeightedText(text, weighting, fragments=[(text, 1.0)] if text else [])
    compel_text = to_compel(text)
    pp = compel_parser_module()
    try:
        conjunction = pp.PromptParser().parse_conjunction(compel_text)
    except Exception as exc:  # pyparsing's errors, compel's ParsingException
        raise BadInput(f"cannot parse the prompt's weighting ({exc}); escape brackets as \\( \\) or use --no-weighting") from None
    if len(conjunction.prompts) != 1 or type(conjunction.prompts[0]).__name__ != "FlattenedPrompt":
        raise BadInput("compel's .and()/.blend() operators are not supported; write one prompt (or use --no-weighting)")
    prompt = conjunction.prompts[0]
    fragments = []
    for frag in prompt.children:
        if type(frag).__name__ != "Fragment":
            raise BadInput("compel's .swap() (cross-attention control) is not supported; use --no-weighting")
        fragments.append((frag.text, float(frag.weight)))
    return WeightedText(text, weighting, compel_text, fragments)


def has_weights(*texts: WeightedText) -> bool:
    return any(t.weighted for t in texts)
