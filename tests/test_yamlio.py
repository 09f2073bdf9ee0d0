"""ourvidz.yamlio: hostile YAML gives one BadInput line naming the file and the line, fast."""


import pytest
import yaml

from ourvidz import yamlio
from ourvidz.errors import BadInput
from ourvidz.yamlio import YamlProblem, load_yaml_text, read_yaml


@pytest.fixture(params=sorted(yamlio.LOADERS), autouse=True)
def backend(request, monkeypatch):
    """Every test with libyaml and with pure-Python PyYAML: the checks must not depend on it."""
    monkeypatch.setattr(yamlio, "BACKEND", request.param)
    return request.param


def laughs(levels: int = 8) -> str:
    """The 563-byte bomb: nine-item lists of the level below, under `negative:` (10^8 nodes expanded)."""
    keys = "abcdefgh"
    rows = ['  a: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    rows += [f"  {keys[i]}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "negative:\n" + "\n".join(rows) + "\n"


def problem(text: str, **kw) -> YamlProblem:
    with pytest.raises(BadInput) as exc:
        load_yaml_text(text, "f.yaml", **kw)
    assert isinstance(exc.value, YamlProblem)
    assert "\n" not in str(exc.value)
    return exc.value


def test_the_billion_laughs_fails_fast_on_one_line():
    text = laughs()
    assert len(text.encode()) < 600
    err = problem(text)
    assert str(err).startswith("f.yaml: line ")
    assert "alias *l" in str(err) and "YAML bomb" in str(err)
    assert err.line is not None and 2 <= err.line <= 9


def test_an_alias_budget_is_counted_with_memo_not_by_expanding():
    # Levels 0-3 expand to 9*(1+9*(1+9*(1+9))) nodes: fine with the default budget, refused with a small one.
    data, _ = load_yaml_text(laughs(4), "f.yaml")
    assert len(data["negative"]["d"]) == 9
    err = problem(laughs(4), max_alias_nodes=500)
    assert err.line == 4 and "alias *l1 expands to 91 nodes" in str(err) and "at most 500" in str(err)


def test_alias_uses_are_limited():
    text = "a: &a x\nb: [" + ", ".join(["*a"] * 11) + "]\n"
    assert load_yaml_text(text, "f.yaml")[0]["b"] == ["x"] * 11
    err = problem(text, max_aliases=10)
    assert err.line == 2 and "more than 10 aliases" in str(err)


@pytest.mark.parametrize("text,line", [
    ("[" * 20_000 + "]" * 20_000, 1),
    ("[\n" * 20_000 + "]\n" * 20_000, 65),
    ("{a: " * 20_000 + "}" * 20_000, 1),
    ("x:\n" + "".join(" " * (i + 1) + "- \n" for i in range(5_000)), 65),
    ("".join(" " * i + f"k{i}:\n" for i in range(5_000)), 65),
])
def test_deep_nesting_is_refused_before_composing(text, line):
    err = problem(text)
    assert "nested deeper than 64 levels" in str(err)
    assert err.line == line or line == 1  # one-line inputs: wherever the look-ahead stopped, on line 1


def test_nesting_up_to_the_limit_is_fine():
    data, _ = load_yaml_text("[" * 64 + "]" * 64, "f.yaml")
    for _ in range(63):
        data = data[0]
    assert data == []
    assert "deeper than 64" in str(problem("[" * 65 + "]" * 65))


def test_an_alias_counts_the_depth_of_what_it_stands_for():
    text = "a: &a " + "[" * 60 + "]" * 60 + "\nb: [[[[[[*a]]]]]]\n"
    err = problem(text)
    assert err.line == 2 and "alias *a nests the data deeper than 64" in str(err)


def test_a_recursive_alias_is_refused():
    err = problem("a: &a [1, *a]\n")
    assert err.line == 1 and "inside its own anchor" in str(err)


@pytest.mark.parametrize("text,line,key", [
    ("a: 1\nb: 2\na: 3\n", 3, "'a'"),
    ("- {x: 1}\n- {y: 1, y: 2}\n", 2, "'y'"),
    ("jobs:\n  - job_type: a\n    prompt: b\n    prompt: c\n", 4, "'prompt'"),
    ("1: a\n0x1: b\n", 2, "'1'"),  # the same key once built, however written
    ("a: 1\n'a': 2\n", 2, "'a'"),
])
def test_duplicate_keys_are_refused_with_their_line(text, line, key):
    err = problem(text)
    assert str(err) == f"f.yaml: line {line}: duplicate key {key}"


def test_merge_keys_may_be_overridden():
    text = "base: &b {steps: 3, width: 64}\njob:\n  <<: *b\n  steps: 4\n"
    data, lines = load_yaml_text(text, "f.yaml")
    assert data["job"] == {"steps": 4, "width": 64}
    assert lines[("job", "steps")] == 4


@pytest.mark.parametrize("text,line,what", [
    ("- {job_type: image_fast, prompt: a\n", 2, "malformed YAML: "),
    ("a: *nope\n", 1, "malformed YAML: found undefined alias"),
    ("a: 1\n---\nb: 2\n", 2, "malformed YAML: "),
    ("a:\n\tb: 1\n", 2, "malformed YAML: "),
    ("? [a]\n: 1\n", 1, "malformed YAML: found unhashable key"),
    ("a: " + "1" * 5000 + "\n", 1, "malformed YAML: Exceeds the limit"),  # Python's int digit limit
    ("a: 2001-13-45\n", 1, "malformed YAML: month must be in 1..12"),
    ("a: !!python/object:os.system x\n", 1, "malformed YAML: could not determine a constructor"),
])
def test_malformed_yaml_keeps_its_message(text, line, what):
    err = problem(text)
    assert str(err).startswith(f"f.yaml: line {line}: {what}")


def test_lines_by_path_like_the_job_file_wants_them():
    text = ("jobs:\n"
            "  - job_type: a\n"
            "    prompts:\n"
            "      - one\n"
            "      - two\n"
            "  - &j {job_type: b, prompt: c}\n"
            "  - *j\n")
    data, lines = load_yaml_text(text, "f.yaml")
    assert data["jobs"][2] == {"job_type": "b", "prompt": "c"}
    assert lines[()] == 1 and lines[("jobs",)] == 1
    assert lines[("jobs", 0)] == 2 and lines[("jobs", 0, "job_type")] == 2
    assert lines[("jobs", 0, "prompts", 1)] == 5
    assert lines[("jobs", 1, "prompt")] == 6
    assert lines[("jobs", 2)] == 7 and ("jobs", 2, "prompt") not in lines  # the alias's own line, not walked


def test_empty_and_plain_documents():
    assert load_yaml_text("", "f.yaml") == (None, {})
    assert load_yaml_text("# nothing\n", "f.yaml") == (None, {})
    assert load_yaml_text("x\n", "f.yaml")[0] == "x"


def test_fmt_changes_the_prefix():
    with pytest.raises(BadInput, match=r"^jobs.yaml:3: duplicate key 'a'$"):
        load_yaml_text("a: 1\nb: 2\na: 3\n", "jobs.yaml", fmt="{name}:{line}: {problem}")


def test_read_yaml_files(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("steps: 4\n")
    assert read_yaml(path) == {"steps": 4}
    path.write_bytes(b"a: 1\nb: \xff\n")
    with pytest.raises(BadInput, match=r"p.yaml: line 2: not UTF-8 text$"):
        read_yaml(path)
    with pytest.raises(BadInput, match=r"missing.yaml: cannot read: No such file"):
        read_yaml(tmp_path / "missing.yaml")
    path.write_text(laughs())
    with pytest.raises(BadInput, match=r"p.yaml: line \d: alias \*l\d expands"):
        read_yaml(path)
    path.write_text("a: 1\n" * 10)
    with pytest.raises(BadInput, match=r"larger than 20 bytes"):
        yamlio.read_text(path, max_bytes=20)


def test_agrees_with_safe_load_on_ordinary_documents():
    text = ("name: x\nsteps: 30\nguidance: 7.5\nsizes: [[512, 512], [768, 1024]]\nflags: {a: true, b: null}\n"
            "when: 2024-01-02\ntext: |\n  two\n  lines\n")
    assert load_yaml_text(text, "f.yaml")[0] == yaml.safe_load(text)


def test_the_job_file_reads_through_it(tmp_path):
    from ourvidz.jobfile import read_job_file

    path = tmp_path / "jobs.yaml"
    path.write_text("- job_type: image_fast\n  prompt: a\n  prompt: b\n")
    with pytest.raises(BadInput, match=r"^.*jobs.yaml:3: duplicate key 'prompt'$"):
        read_job_file(path)
    path.write_text("- job_type: image_fast\n  prompt: a\n" + laughs().replace("negative:", "  negative:"))
    with pytest.raises(BadInput, match=r"jobs.yaml:\d+: alias \*l\d expands to \d+ nodes"):
        read_job_file(path)
    path.write_text("- &j {job_type: image_fast, prompt: a, overrides: {steps: many}}\n- *j\n")
    with pytest.raises(BadInput, match=r"jobs.yaml:1: job 1 \(image_fast\), field 'overrides.steps'"):
        read_job_file(path)
    path.write_text("- &j {job_type: image_fast, prompt: a}\n- *j\n- {<<: *j, prompt: b, seed: -1}\n")
    with pytest.raises(BadInput, match=r"jobs.yaml:3: job 3 \(image_fast\), field 'seed'"):
        read_job_file(path)
    path.write_text("- &j {job_type: image_fast, prompt: a}\n- *j\n")
    assert [u.prompt for u in read_job_file(path)] == ["a", "a"]
