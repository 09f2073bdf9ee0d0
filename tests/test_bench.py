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
    # the ablation starts from ourvidz with every switch off; on the CPU only the exact, compile-free
    # ones apply (vae_padding: the same frames, so identical to the stage before)
    stages = data["ablation"]["image_fast"]
    assert [stage["added"] for stage in stages] == ["none", "batch_cfg", "vae_padding"]
    assert stages[2]["psnr_vs_previous_db"] == float("inf")
    # each stage's pixels against the stage before (an exact switch: identical) and against plain
    assert "psnr_vs_previous_db" not in stages[0] and stages[0]["psnr_vs_plain_db"] > 30
    assert stages[1]["max_abs_diff_vs_previous"] >= 0 and stages[1]["max_over_min"] >= 1
    assert "vs the stage before" in next(tmp_path.glob("*.md")).read_text()
    row = data["rows"]["image_fast"]
    assert row["exact"]["psnr_db"] == float("inf")  # the default path is exact
    assert row["lossy"]["psnr_vs_exact_db"] < float("inf")  # the cache really skipped work
    assert row["ourvidz"]["speedups"] == ["batch_cfg", "vae_padding"] and "lossy" not in row["ourvidz"]


@pytest.mark.slow
def test_cold_start_times_a_fresh_generate_process(tmp_path):
    ok("bench", "none", "--cold-start", "image_fast", "--out", str(tmp_path))
    cold = json.loads(next(tmp_path.glob("*.json")).read_text())["cold_start"]["image_fast"]
    assert cold["wall_s"] > cold["job_total_s"] > cold["denoise_s"] > 0  # the process outlives its job
    assert "Cold start" in next(tmp_path.glob("*.md")).read_text()


def test_ablation_table_shows_each_stage_against_the_one_before():
    from ourvidz.bench.tables import markdown

    def stage(added, median, **extra):
        return {"added": added, "median": median, "min": median, "max": median * 1.1, "runs": [median],
                "first": 1.0, "denoise_median": median / 2, **extra}

    results = {"versions": {}, "weights": "random", "card": "H200", "matmul_tflops": None,
               "rows": {"image_fast": {"job_type": "image_fast", "plain": {"median": 3.6}}},
               "ablation": {"image_fast": [
                   stage("none", 3.6, psnr_vs_plain_db=float("inf"), max_abs_diff_vs_plain=0),
                   stage("compile", 0.8, psnr_vs_previous_db=48.1, max_abs_diff_vs_previous=2),
                   stage("cuda_graph", 0.4, psnr_vs_previous_db=float("inf"), max_abs_diff_vs_previous=0,
                         notes=["cuda_graph off for wan transformer (2x16): capture failed: X"])]}}
    lines = markdown(results).splitlines()
    graph = next(line for line in lines if "| cuda_graph |" in line)
    assert "| 0.40 s | 1.10 | 0.20 s | 9.00x |" in graph and graph.endswith("| identical | - |")
    assert "48.1 dB (max diff 2)" in next(line for line in lines if "| compile |" in line)
    assert any("note: cuda_graph off for wan transformer" in line for line in lines)


@pytest.mark.slow
def test_two_gpu_rows_reuse_the_one_gpu_plain_timings(tmp_path):
    ok("bench", "image_fast", "--runs", "1", "--steps", "2", "--gpus", "1,2", "--ablation", "none",
       "--device", "cpu", "--out", str(tmp_path))
    rows = json.loads(next(tmp_path.glob("*.json")).read_text())["rows"]
    one, two = rows["image_fast"], rows["image_fast x2 GPUs"]
    assert "reused" not in one["plain"] and "reused" in two["plain"]
    assert two["plain"]["median"] == one["plain"]["median"] and two["gpus"] == 2
    assert two["exact"]["psnr_db"] == float("inf")  # plain still ran once here, for its pixels
