"""The bench runs on the CPU in demo mode (small sizes): the same code path the GPU run takes."""

import json

import pytest
import torch
from typer.testing import CliRunner

from ourvidz.bench.tables import merge
from ourvidz.cli import app
from ourvidz.speedups import SWITCHES, Speedups


def test_bench_demo_writes_json_markdown_chart(tmp_path):
    result = CliRunner().invoke(app, ["bench", "sdxl_image_fast", "video_fast", "--runs", "1", "--steps", "1",
                                      "--frames", "5", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    [json_path] = tmp_path.glob("*.json")
    data = json.loads(json_path.read_text())
    assert data["weights"] == "demo" and set(data["rows"]) == {"sdxl_image_fast", "video_fast"}
    for row in data["rows"].values():
        assert row["plain"]["median"] > 0 and row["ourvidz"]["median"] > 0
        assert row["ratio"] == pytest.approx(row["plain"]["median"] / row["ourvidz"]["median"])
        assert row["exact"]["psnr_db"] > 40  # ourvidz's output is the plain pipeline's
        assert row["ourvidz"]["load_in_job_s"] == 0  # resident models: no load in a later job
    assert data["rows"]["sdxl_image_fast"]["seed_doc"]["seconds"] == 29.9
    md = json_path.with_suffix(".md").read_text()
    assert "| sdxl_image_fast |" in md and "plain diffusers" in md
    assert json_path.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


def test_speedup_switches():
    assert not any(getattr(Speedups.off(), s) for s in SWITCHES)
    cpu = Speedups.for_device(torch.device("cpu"))
    assert cpu.batch_cfg and not cpu.compile  # compiling tiny CPU models costs more than it saves


def test_merge_refuses_other_card():
    a = {"card": "H100", "versions": {"torch": "1"}, "rows": {"x": {"ourvidz": 1}}, "skipped": ["y (plain): late"]}
    merged = merge(a, {"card": "H100", "versions": {"torch": "1"}, "rows": {"y": {"ourvidz": 2}}})
    assert merged["rows"] == {"x": {"ourvidz": 1}, "y": {"ourvidz": 2}} and merged["skipped"] == []
    with pytest.raises(ValueError):
        merge(a, {"card": "A100", "versions": {"torch": "1"}, "rows": {}})


def test_lossy_step_cache_is_opt_in_and_measured(tmp_path):
    result = CliRunner().invoke(app, ["bench", "image_fast", "--runs", "1", "--steps", "8", "--step-cache", "0.3",
                                      "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    row = json.loads(next(tmp_path.glob("*.json")).read_text())["rows"]["image_fast"]
    assert row["exact"]["psnr_db"] == float("inf")  # the default path is exact
    assert row["lossy"]["psnr_vs_exact_db"] < float("inf")  # the cache really skipped work
    assert row["ourvidz"]["speedups"] == ["batch_cfg"] and "lossy" not in row["ourvidz"]


def test_step_cache_refused_for_sdxl():
    result = CliRunner().invoke(app, ["generate", "sdxl_image_fast", "x", "--demo", "--step-cache", "0.1"])
    assert result.exit_code == 2 and "wan family only" in result.stderr
