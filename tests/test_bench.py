"""The bench runs on the CPU in demo mode (small sizes): the same code path the GPU run takes."""

import json

import pytest
from conftest import ok

from ourvidz.bench.tables import merge


@pytest.mark.slow
def test_bench_demo_writes_json_markdown_chart(tmp_path):
    ok("bench", "sdxl_image_fast", "video_fast", "--runs", "1", "--steps", "1",
       "--frames", "5", "--out", str(tmp_path))
    [json_path] = tmp_path.glob("*.json")
    data = json.loads(json_path.read_text())
    assert data["weights"] == "demo" and set(data["rows"]) == {"sdxl_image_fast", "video_fast"}
    for row in data["rows"].values():
        assert row["plain"]["median"] > 0 and row["ourvidz"]["median"] > 0
        assert row["ratio"] == pytest.approx(row["plain"]["median"] / row["ourvidz"]["median"])
        assert row["exact"]["psnr_db"] > 40  # ourvidz's output is the plain pipeline's (video: after H.264)
        assert row["ourvidz"]["load_in_job_s"] == 0  # resident models: no load in a later job
    # fp32 on the CPU: at most one level apart (the VAE decodes one image at a time, plain all six)
    assert data["rows"]["sdxl_image_fast"]["exact"]["max_abs_diff"] <= 1
    assert data["rows"]["sdxl_image_fast"]["seed_doc"]["seconds"] == 29.9
    md = json_path.with_suffix(".md").read_text()
    assert "| sdxl_image_fast |" in md and "plain diffusers" in md
    assert json_path.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


def test_merge_refuses_other_card():
    a = {"card": "H100", "versions": {"torch": "1"}, "rows": {"x": {"ourvidz": 1}}, "skipped": ["y (plain): late"]}
    merged = merge(a, {"card": "H100", "versions": {"torch": "1"}, "rows": {"y": {"ourvidz": 2}}})
    assert merged["rows"] == {"x": {"ourvidz": 1}, "y": {"ourvidz": 2}} and merged["skipped"] == []
    # a call saves after every row: its entry is updated, not repeated
    a["calls"] = {"t1": {"seconds": None}}
    again = merge(merge(a, {**a, "calls": {"t1": {"seconds": 9}}}), {**a, "calls": {"t2": {"seconds": 3}}})
    assert again["calls"] == {"t1": {"seconds": 9}, "t2": {"seconds": 3}}
    with pytest.raises(ValueError):
        merge(a, {"card": "A100", "versions": {"torch": "1"}, "rows": {}})


@pytest.mark.slow
def test_lossy_step_cache_is_opt_in_and_measured(tmp_path):
    ok("bench", "image_fast", "--runs", "1", "--steps", "8", "--step-cache", "0.3",
       "--ablation", "image_fast", "--out", str(tmp_path))
    data = json.loads(next(tmp_path.glob("*.json")).read_text())
    # the ablation starts from ourvidz with every switch off; on the CPU only batch_cfg applies
    assert [stage["added"] for stage in data["ablation"]["image_fast"]] == ["none", "batch_cfg"]
    row = data["rows"]["image_fast"]
    assert row["exact"]["psnr_db"] == float("inf")  # the default path is exact
    assert row["lossy"]["psnr_vs_exact_db"] < float("inf")  # the cache really skipped work
    assert row["ourvidz"]["speedups"] == ["batch_cfg"] and "lossy" not in row["ourvidz"]


@pytest.mark.slow
def test_cold_start_times_a_fresh_generate_process(tmp_path):
    ok("bench", "none", "--cold-start", "image_fast", "--out", str(tmp_path))
    cold = json.loads(next(tmp_path.glob("*.json")).read_text())["cold_start"]["image_fast"]
    assert cold["wall_s"] > cold["job_total_s"] > cold["denoise_s"] > 0  # the process outlives its job
    assert "Cold start" in next(tmp_path.glob("*.md")).read_text()
