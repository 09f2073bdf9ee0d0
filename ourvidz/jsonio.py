"""JSON from outside (queue payloads, callback answers), read without trusting it, and logged safely.

`loads_bounded` raises nothing but JsonProblem (a BadInput) with one line: never RecursionError
(json's C parser recurses once per bracket), MemoryError, UnicodeDecodeError or ValueError. It
checks the size first, then the bracket depth, iteratively and outside strings (escapes
respected), and only then parses.

`short` is what a log line or an error message may show of a value from outside: one line,
control characters escaped, at most `limit` characters and the full length ("abc…(1048576
chars)"), so a 1 MB id or prompt is never written out in full.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

from ourvidz.errors import BadInput

MAX_BYTES = 1_000_000
MAX_DEPTH = 32

_BRACKETS = re.compile(r"[^\[\]{}]+")
_DELTA = {"[": 1, "{": 1, "]": -1, "}": -1}
# Control characters, DEL and C1, line/paragraph separators, lone surrogates (unprintable to UTF-8), BOM.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\ufeff]")


class JsonProblem(BadInput):
    """A one-line BadInput about JSON from outside."""


def _escape(ch: str) -> str:
    code = ord(ch)
    return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(ch) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def short(value: Any, limit: int = 80) -> str:
    """A one-line excerpt of value for logs: at most `limit` characters of it, then its length if longer."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        value = bytes(value)
        unit, size = "bytes", len(value)
        text = value[: limit * 4].decode("utf-8", "backslashreplace")
        truncated = size > limit * 4 or len(text) > limit
    else:
        try:
            text = value if isinstance(value, str) else str(value)
        except Exception:  # noqa: BLE001 - a broken __str__ must not break the log line
            text = f"<{type(value).__name__}>"
        unit, size = "chars", len(text)
        truncated = size > limit
    body = _UNSAFE.sub(lambda m: _escape(m.group()), text[:limit])
    return f"{body}…({size} {unit})" if truncated else body


def _max_depth(text: str, limit: int) -> tuple[int, int]:
    """(depth, offset): the deepest bracket nesting outside strings, stopping once past limit.

    Strings are skipped by splitting on quotes; a quote preceded by an odd run of backslashes is
    escaped. Linear in the text; the per-quote work is Python, the per-bracket work mostly C.
    """
    if text.count("[") + text.count("{") <= limit:
        return 0, 0  # cannot be deeper than the brackets it has
    outside: list[str] = []
    offsets: list[int] = []
    in_string, pos = False, 0
    for part in text.split('"'):
        if not in_string:
            outside.append(part)
            offsets.append(pos)
            in_string = True
        elif (len(part) - len(part.rstrip("\\"))) % 2 == 0:
            in_string = False  # this part's closing quote is not escaped
        pos += len(part) + 1
    depth = 0
    for part, start in zip(outside, offsets):
        brackets = _BRACKETS.sub("", part)
        if not brackets:
            continue
        levels = list(accumulate((_DELTA[c] for c in brackets), initial=depth))
        peak = max(levels)
        if peak > limit:
            k = next(i for i, d in enumerate(levels) if d > limit)  # the k-th bracket of the part (1-based)
            at = [i for i, c in enumerate(part) if c in _DELTA][k - 1]
            return peak, start + at
        depth = levels[-1]
    return 0, 0


def loads_bounded(text: str | bytes | bytearray, *, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH,
                  what: str = "the JSON") -> Any:
    """The value of a JSON text; JsonProblem (one line, starting with `what`) for anything refused."""
    try:
        if isinstance(text, (bytes, bytearray, memoryview)):
            raw = bytes(text)
            if len(raw) > max_bytes:
                raise JsonProblem(f"{what} is {len(raw)} bytes; the limit is {max_bytes}")
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise JsonProblem(f"{what} is not UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})") from None
        elif isinstance(text, str):
            if len(text) > max_bytes or len(text.encode("utf-8", "surrogatepass")) > max_bytes:
                raise JsonProblem(f"{what} is more than {max_bytes} bytes")
        else:
            raise JsonProblem(f"{what} is {type(text).__name__}, not text")
        if text.startswith("\ufeff"):
            text = text[1:]  # a BOM: json.loads refuses it, and it means nothing
        depth, at = _max_depth(text, max_depth)
        if depth > max_depth:
            raise JsonProblem(f"{what} nests deeper than {max_depth} levels (at char {at})")
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise JsonProblem(f"{what} is not JSON: {exc.msg} (line {exc.lineno} column {exc.colno})") from None
        except ValueError as exc:  # Python's digit limit on huge integers, ...
            raise JsonProblem(f"{what} is not usable JSON: {short(exc, 120)}") from None
    except JsonProblem:
        raise
    except (RecursionError, MemoryError) as exc:  # not expected after the checks; never a traceback
        raise JsonProblem(f"{what} is too large or too deep to read ({type(exc).__name__})") from None
