"""Reading YAML that a user wrote (presets, job files, models files) without trusting it.

PyYAML's safe loader still accepts things that hurt: a 600-byte "billion laughs" file whose
aliases expand to 10^8 nodes when anything walks or serialises the data, brackets nested
20,000 deep (its composer recurses: RecursionError), duplicate mapping keys (the last one wins
silently), aliases of a collection inside itself (a recursive structure). Here the document is
first scanned as an event stream, which PyYAML and libyaml both produce without recursion:
nesting depth, alias uses and the size that aliases expand to (memoised per anchor, never by
expanding) are checked there, and the line of every mapping key and sequence item is recorded
by path, aliases included without descending into them. Only then is it composed and built,
with duplicate keys refused. Every problem is one BadInput line naming the file and the line:

    FILE: line N: duplicate key 'KEY'
    FILE: line N: malformed YAML: PROBLEM

(`fmt` changes the prefix; the job file writes FILE:N: like its other errors.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError

from ourvidz.errors import BadInput

MAX_DEPTH = 64  # nested collections, aliases' contents included
MAX_ALIASES = 1000  # alias uses in a document (a job file may merge `<<: *defaults` into every job)
MAX_ALIAS_NODES = 100_000  # nodes that aliases add to the document when expanded, in all
MAX_BYTES = 20_000_000
FMT = "{name}: line {line}: {problem}"
MERGE_TAG = "tag:yaml.org,2002:merge"

class YamlProblem(BadInput):
    """A one-line BadInput with the file, the 1-based line (None when unknown) and the problem apart."""

    def __init__(self, name: str, line: int | None, problem: str, fmt: str = FMT):
        self.name, self.line, self.problem = str(name), line, problem
        text = fmt.format(name=name, line=line, problem=problem) if line else f"{name}: {problem}"
        super().__init__(" ".join(text.split()) if "\n" in text else text)


class _Checks:
    """For a SafeLoader: refuse duplicate keys; name the line of a value Python refuses."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:
                if key_node.tag == MERGE_TAG:
                    continue  # `<<: *base` then own keys: overriding merged keys is what merges are for
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node)
                except TypeError:
                    continue  # unhashable: the base class says so with its own message
                if first is not key_node:
                    raise _Duplicate(key, key_node.start_mark.line + 1)
        return super().construct_mapping(node, deep=deep)

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError, TypeError) as exc:
            # int('1' * 5000) (Python's digit limit), a timestamp of month 13, ...
            raise ConstructorError(None, None, _one_line(exc), node.start_mark) from None


class _PyLoader(_Checks, yaml.SafeLoader):
    pass


# (event parser, checking loader) by backend: libyaml when present, the same checks either way.
LOADERS: dict[str, tuple[type, type]] = {"python": (yaml.SafeLoader, _PyLoader)}
if hasattr(yaml, "CSafeLoader"):
    class _CLoader(_Checks, yaml.CSafeLoader):  # type: ignore[misc, name-defined]
        pass

    LOADERS["c"] = (yaml.CSafeLoader, _CLoader)
BACKEND = "c" if "c" in LOADERS else "python"


class _Duplicate(Exception):
    def __init__(self, key: Any, line: int):
        super().__init__(key)
        self.key, self.line = key, line


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "…"


def _malformed(exc: yaml.YAMLError, name: str, fmt: str, max_depth: int = MAX_DEPTH) -> YamlProblem:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or (str(exc).splitlines() or [type(exc).__name__])[0]
    if "maximum nesting depth" in str(problem):  # libyaml's own limit (1000), met while looking ahead
        return YamlProblem(name, mark.line + 1 if mark else None, f"nested deeper than {max_depth} levels", fmt)
    return YamlProblem(name, mark.line + 1 if mark else None, f"malformed YAML: {_one_line(problem)}", fmt)


class _Frame:
    __slots__ = ("kind", "path", "anchor", "start", "height", "index", "want_key", "key")

    def __init__(self, kind: str, path: tuple | None, anchor: str | None, start: int):
        self.kind, self.path, self.anchor, self.start = kind, path, anchor, start
        self.height, self.index, self.want_key, self.key = 0, 0, True, None


def scan(text: str, name: str, *, max_depth: int = MAX_DEPTH, max_aliases: int = MAX_ALIASES,
         max_alias_nodes: int = MAX_ALIAS_NODES, fmt: str = FMT) -> dict[tuple, int]:
    """Check the event stream; return the line of every key and item by path (keys as written).

    Iterative: a file nested 20,000 deep stops at level max_depth + 1 with a YamlProblem.
    """
    lines: dict[tuple, int] = {}
    stack: list[_Frame] = []
    sizes: dict[str, tuple[int, int]] = {}  # anchor -> (expanded nodes, collection height)
    total = literal = aliases = 0

    def fail(event, problem: str) -> YamlProblem:
        return YamlProblem(name, event.start_mark.line + 1, problem, fmt)

    def place(event, is_key_scalar_value: str | None) -> tuple | None:
        """The path of the node this event starts, recording its line."""
        line = event.start_mark.line + 1
        if not stack:
            lines.setdefault((), line)
            return ()
        top = stack[-1]
        if top.path is None:
            return None
        if top.kind == "seq":
            path = top.path + (top.index,)
            top.index += 1
            lines.setdefault(path, line)
            return path
        if top.want_key:  # a mapping key: its own line names the entry
            top.want_key = False
            top.key = is_key_scalar_value
            if is_key_scalar_value is None:
                return None  # a collection or alias as a key: nothing under it is looked up by path
            lines[top.path + (is_key_scalar_value,)] = line
            return None
        top.want_key = True
        if top.key is None:
            return None
        path = top.path + (top.key,)
        lines.setdefault(path, line)
        return path

    def grow(height: int) -> None:
        if stack and height > stack[-1].height:
            stack[-1].height = height

    try:
        for event in yaml.parse(text, Loader=LOADERS[BACKEND][0]):
            if isinstance(event, yaml.ScalarEvent):
                place(event, event.value)
                total += 1
                literal += 1
                if event.anchor is not None:
                    sizes[event.anchor] = (1, 0)
            elif isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
                if len(stack) + 1 > max_depth:
                    raise fail(event, f"nested deeper than {max_depth} levels")
                path = place(event, None)
                total += 1
                literal += 1
                stack.append(_Frame("seq" if isinstance(event, yaml.SequenceStartEvent) else "map", path,
                                    event.anchor, total - 1))
            elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                frame = stack.pop()
                height = frame.height + 1
                if frame.anchor is not None:
                    sizes[frame.anchor] = (total - frame.start, height)
                grow(height)
            elif isinstance(event, yaml.AliasEvent):
                place(event, None)
                aliases += 1
                if aliases > max_aliases:
                    raise fail(event, f"more than {max_aliases} aliases (*name); write the values out")
                if any(f.anchor == event.anchor for f in stack):
                    raise fail(event, f"alias *{event.anchor} is inside its own anchor (a recursive structure)")
                if event.anchor not in sizes:
                    continue  # undefined: the composer says so, with its line
                nodes, height = sizes[event.anchor]
                if len(stack) + height > max_depth:
                    raise fail(event, f"alias *{event.anchor} nests the data deeper than {max_depth} levels")
                total += nodes
                if total - literal > max_alias_nodes:
                    raise fail(event, f"alias *{event.anchor} expands to {nodes} nodes; aliases may add at most "
                                      f"{max_alias_nodes} in all (a YAML bomb?)")
                grow(height)
            elif isinstance(event, yaml.DocumentStartEvent):
                sizes.clear()
    except yaml.YAMLError as exc:
        raise _malformed(exc, name, fmt, max_depth) from None
    return lines


def load_yaml_text(text: str, name: str | Path = "<text>", *, fmt: str = FMT, **limits) -> tuple[Any, dict[tuple, int]]:
    """(data, lines): the single document, and the 1-based line of every mapping key and sequence item.

    lines maps a path, a tuple of keys (as written) and item indexes, to a line: () is the
    document, ("jobs", 0, "prompt") the prompt of the first job under `jobs:`. A path under an
    alias is not listed: the alias's own line is (look up the longest listed prefix).
    Raises YamlProblem (a BadInput) on anything refused; see the module's doc.
    """
    name = str(name)
    lines = scan(text, name, fmt=fmt, **limits)
    loader = LOADERS[BACKEND][1](text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except _Duplicate as exc:
        raise YamlProblem(name, exc.line, f"duplicate key {_key(exc.key)}", fmt) from None
    except yaml.YAMLError as exc:
        raise _malformed(exc, name, fmt) from None
    except (RecursionError, MemoryError) as exc:  # not expected after scan(); never a traceback all the same
        raise YamlProblem(name, None, f"malformed YAML: {type(exc).__name__}", fmt) from None
    finally:
        loader.dispose()
    return data, lines


def _key(key: Any) -> str:
    text = repr(key) if isinstance(key, str) else repr(str(key))
    return text if len(text) <= 80 else text[:80] + "…'"


def read_text(path: Path | str, max_bytes: int = MAX_BYTES) -> str:
    path = Path(path)
    try:
        with path.open("rb") as f:
            raw = f.read(max_bytes + 1)
    except OSError as exc:
        raise BadInput(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(raw) > max_bytes:
        raise BadInput(f"{path}: larger than {max_bytes} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise BadInput(f"{path}: line {line}: not UTF-8 text") from None


def read_yaml(path: Path | str, *, fmt: str = FMT, **limits) -> Any:
    """The file's single document (None when empty); YamlProblem / BadInput on any problem."""
    return load_yaml_text(read_text(path), path, fmt=fmt, **limits)[0]
