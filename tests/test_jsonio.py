"""ourvidz.jsonio: any input gives a value or one BadInput line; log excerpts stay short and on one line."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ourvidz.errors import BadInput
from ourvidz.jsonio import JsonProblem, loads_bounded, short


def refused(text, **kw) -> str:
    with pytest.raises(JsonProblem) as exc:
        loads_bounded(text, **kw)
    assert isinstance(exc.value, BadInput) and "\n" not in str(exc.value)
    return str(exc.value)


@pytest.mark.parametrize("text", [
    "[" * 1000 + "]" * 1000,
    "[" * 100_000 + "]" * 100_000,
    "[" * 100_000,
    '{"id": "x", "config": ' + '{"a": ' * 50 + "1" + "}" * 50 + "}",
    '{"id": "x", "metadata": [' + "[" * 40 + "]" * 40 + "]}",
    b"[" * 500_000,
])
def test_deep_nesting_is_refused_before_parsing(text):
    assert "nests deeper than 32 levels" in refused(text)


def test_the_depth_limit_is_exact_and_strings_do_not_count():
    assert loads_bounded("[" * 32 + "]" * 32) is not None
    assert "at char 32" in refused("[" * 33 + "]" * 33)
    brackets = "[{" * 5000
    assert loads_bounded(json.dumps({"prompt": brackets, "b": ["\\\"[[[", "\\\\"]})) == {
        "prompt": brackets, "b": ["\\\"[[[", "\\\\"]}
    # An escaped quote does not end the string; an escaped backslash before a quote does.
    assert loads_bounded('["a\\"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["]') == ['a"' + "[" * 41]
    assert "deeper" in refused('["a\\\\", ' + "[" * 40 + "]" * 40 + "]")


def test_size_is_checked_first():
    assert "is 1000001 bytes; the limit is 1000000" in refused(b" " * 1_000_001)
    assert "more than 1000000 bytes" in refused("é" * 600_000)  # 1.2 MB once encoded
    assert "more than 10 bytes" in refused('"' + "x" * 10 + '"', max_bytes=10)
    assert loads_bounded(json.dumps({"id": "x" * 999_000})) == {"id": "x" * 999_000}


@pytest.mark.parametrize("raw,message", [
    (b"\xff\xfe{}", "the JSON is not UTF-8 (byte 0xff at offset 0)"),
    (b'{"a": "\xc3"}', "the JSON is not UTF-8 (byte 0xc3 at offset 7)"),
    (b"", "the JSON is not JSON: Expecting value (line 1 column 1)"),
    (b'{"a": 1', "the JSON is not JSON: Expecting ',' delimiter (line 1 column 8)"),
    (b'"\\', "the JSON is not JSON: Unterminated string"),
    (b"1" * 5000, "the JSON is not usable JSON: Exceeds the limit (4300 digits)"),
])
def test_malformed_input_is_one_line(raw, message):
    assert refused(raw).startswith(message)


def test_what_names_the_input():
    assert refused(b"nope", what="the payload").startswith("the payload is not JSON")
    assert refused(None, what="the payload") == "the payload is NoneType, not text"


def test_a_bom_is_ignored():
    assert loads_bounded(b'\xef\xbb\xbf{"a": 1}') == {"a": 1}


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_give_a_value_or_bad_input(raw):
    try:
        loads_bounded(raw, max_depth=4)
    except BadInput as exc:
        assert "\n" not in str(exc)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet='[]{}"\\,:1 a\x00\ud800', max_size=300))
def test_bracket_soup_gives_a_value_or_bad_input(text):
    try:
        value = loads_bounded(text, max_depth=4)
    except BadInput as exc:
        assert "\n" not in str(exc)
    else:
        assert json.loads(text) == value


@pytest.mark.slow
@settings(max_examples=150, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab'),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
                    max_leaves=20))
def test_the_depth_found_is_the_real_depth(value):
    def depth(v):
        if isinstance(v, list):
            return 1 + max(map(depth, v), default=0)
        if isinstance(v, dict):
            return 1 + max(map(depth, v.values()), default=0)
        return 0

    text = json.dumps(value)
    for limit in (depth(value), depth(value) - 1):
        if limit >= depth(value):
            assert loads_bounded(text, max_depth=limit) == value
        elif limit >= 0:
            assert "deeper" in refused(text, max_depth=limit)


def test_short_keeps_a_log_line_short():
    assert short("abc") == "abc"
    assert short("x" * 1_048_576) == "x" * 80 + "…(1048576 chars)"
    assert short("abc" * 10, limit=3) == "abc…(30 chars)"
    assert short("a\nb\r\x00\x1b[31m\u2028\ud800") == "a\\nb\\r\\x00\\x1b[31m\\u2028\\ud800"
    assert short(b"\xffok" + b"x" * 500, limit=5) == "\\xffo…(503 bytes)"
    assert short(b"ok") == "ok"
    assert short(12345, limit=2) == "12…(5 chars)"

    class Broken:
        def __str__(self):
            raise RuntimeError("no")

    assert short(Broken()) == "<Broken>"


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(), st.binary()), st.integers(min_value=1, max_value=100))
def test_short_is_always_one_printable_line(value, limit):
    out = short(value, limit)
    assert "\n" not in out and "\r" not in out
    out.encode("utf-8")  # no lone surrogates: a UTF-8 log can always take it
    assert len(out) <= 6 * limit + 30
