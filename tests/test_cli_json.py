"""--json for scripts (issue #13, item 5): one JSON document on stdout and nothing else there;
errors stay one line on stderr."""

import json

import pytest
from typer.testing import CliRunner

from ourvidz.cli import app

runner = CliRunner()


def document(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # the whole of stdout is one document


def test_negative_json():
    data = document("negative", "sdxl_image_fast", "portrait of a dancer", "--negative", "cartoon", "--json")
    assert data["job_type"] == "sdxl_image_fast" and data["strategy"] == "sdxl"
    assert data["text"].startswith("cartoon") and data["tokens"] <= data["token_budget"] == 77
    assert isinstance(data["included"], list) and isinstance(data["dropped"], list)


def test_presets_list_and_show_json():
    listing = document("presets", "list", "--json")["presets"]
    assert len(listing) == 10 and {p["name"] for p in listing} >= {"sdxl_image_fast", "video7b_high_enhanced"}
    one = document("presets", "show", "video_fast", "--json")
    assert one["name"] == "video_fast" and one["frames"] == 81 and one["family"] == "wan"


def test_generate_dry_run_json(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat\na dog\n")
    data = document("generate", "image_fast", "--prompt-file", prompts, "--dry-run", "--json", "--seed", 4,
                    "--out", tmp_path / "o")
    plans = data["plans"]
    assert [p["prompt"] for p in plans] == ["a cat", "a dog"] and plans[0]["seed"] == 4
    assert plans[0]["negative_prompt"]["text"] and plans[0]["models"].startswith("wan: ")
    assert not (tmp_path / "o").exists()  # a dry run writes nothing


def test_generate_json_prints_files_and_report(tmp_path):
    result = runner.invoke(app, ["generate", "sdxl_image_fast", "a cat", "--demo", "--steps", "2", "--num-images", "1",
                                 "--json", "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    job = data["jobs"][0]
    assert job["files"][0].endswith("image-00.png") and job["report"]["steps"] == 2
    assert "demo: random weights" in result.stderr  # messages and progress on stderr


def test_models_json(tmp_path):
    models = tmp_path / "m.yaml"
    models.write_text("sdxl: demo\nwan:\n  path: /nowhere/wan\n")
    rows = {r["family"]: r for r in document("models", "--models", models, "--json")["families"]}
    assert rows["sdxl"]["found"] is True and rows["wan"]["found"] is False
    assert rows["qwen"]["configured"] == "not configured" and "models fetch qwen" in rows["qwen"]["detail"]


def test_status_json(monkeypatch):
    from ourvidz.worker import store

    record = {"id": "abc", "state": "done", "files": ["a.png"], "attempts": 1}
    monkeypatch.setattr(store, "connect", lambda url: object())
    monkeypatch.setattr(store, "record", lambda conn, job_id: record if job_id == "abc" else None)
    assert document("status", "abc", "--json") == record
    missing = runner.invoke(app, ["status", "nope", "--json"])
    assert missing.exit_code == 2 and missing.stdout == ""
    assert len(missing.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args", [["negative", "no_such_job", "--json"], ["presets", "show", "nope", "--json"],
                                  ["generate", "nope", "x", "--dry-run", "--json"]])
def test_json_errors_leave_stdout_empty(args):
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith("error:") and len(result.stderr.strip().splitlines()) == 1
