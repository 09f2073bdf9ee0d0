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
        assert row["exact"]["psnr_db"] > 40  # ourvidz's output is the plain pipeline's (video: after H.264)
        assert row["ourvidz"]["load_in_job_s"] == 0  # resident models: no load in a later job
    # fp32 on the CPU: at most one level apart (the VAE decodes one image at a time, plain all six)
    assert data["rows"]["sdxl_image_fast"]["exact"]["max_abs_diff"] <= 1
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
    # a call saves after every row: its entry is updated, not repeated
    a["calls"] = {"t1": {"seconds": None}}
    again = merge(merge(a, {**a, "calls": {"t1": {"seconds": 9}}}), {**a, "calls": {"t2": {"seconds": 3}}})
    assert again["calls"] == {"t1": {"seconds": 9}, "t2": {"seconds": 3}}
    with pytest.raises(ValueError):
        merge(a, {"card": "A100", "versions": {"torch": "1"}, "rows": {}})


def test_lossy_step_cache_is_opt_in_and_measured(tmp_path):
    result = CliRunner().invoke(app, ["bench", "image_fast", "--runs", "1", "--steps", "8", "--step-cache", "0.3",
                                      "--ablation", "image_fast", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    data = json.loads(next(tmp_path.glob("*.json")).read_text())
    # the ablation starts from ourvidz with every switch off; on the CPU only batch_cfg applies
    assert [stage["added"] for stage in data["ablation"]["image_fast"]] == ["none", "batch_cfg"]
    row = data["rows"]["image_fast"]
    assert row["exact"]["psnr_db"] == float("inf")  # the default path is exact
    assert row["lossy"]["psnr_vs_exact_db"] < float("inf")  # the cache really skipped work
    assert row["ourvidz"]["speedups"] == ["batch_cfg"] and "lossy" not in row["ourvidz"]


def test_step_cache_refused_for_sdxl():
    result = CliRunner().invoke(app, ["generate", "sdxl_image_fast", "x", "--demo", "--step-cache", "0.1"])
    assert result.exit_code == 2 and "wan family only" in result.stderr


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_bytes_made_on_the_device_equal_the_processors(dtype):
    """The decode's to_uint8 must give exactly the bytes of diffusers' own postprocess."""
    import numpy as np
    from diffusers.image_processor import VaeImageProcessor
    from diffusers.video_processor import VideoProcessor

    from ourvidz.families.base import to_uint8

    x = (torch.randn(2, 3, 16, 24, generator=torch.Generator().manual_seed(0)) * 1.3).to(dtype)
    pil = VaeImageProcessor().postprocess(x, output_type="pil")
    assert np.array_equal(to_uint8(x, VaeImageProcessor()).permute(0, 2, 3, 1).numpy(), np.stack([np.asarray(im) for im in pil]))
    video = x.float().permute(1, 0, 2, 3)[None]  # [1, 3, F, H, W], as the Wan VAE returns it
    frames = VideoProcessor().postprocess_video(video, output_type="np")[0]
    reference = (np.clip(frames, 0, 1) * 255).round().astype(np.uint8)
    assert np.array_equal(to_uint8(video[0], VideoProcessor()).permute(1, 2, 3, 0).numpy(), reference)


def test_cold_start_times_a_fresh_generate_process(tmp_path):
    result = CliRunner().invoke(app, ["bench", "none", "--cold-start", "image_fast", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    cold = json.loads(next(tmp_path.glob("*.json")).read_text())["cold_start"]["image_fast"]
    assert cold["wall_s"] > cold["job_total_s"] > cold["denoise_s"] > 0  # the process outlives its job
    assert "Cold start" in next(tmp_path.glob("*.md")).read_text()


def test_step_cache_wraps_compiled_blocks(monkeypatch):
    """On the GPU the Wan blocks are compiled before a step cache may be switched on; the cache's
    hooks must run around the compiled blocks (dynamo's eager backend stands in for inductor)."""
    import numpy as np

    from ourvidz import speedups
    from ourvidz.model_cache import ModelCache
    from ourvidz.families.base import GenerationRequest

    torch._dynamo.reset()
    monkeypatch.setitem(speedups.COMPILE_OPTIONS, "backend", "eager")
    model, _ = ModelCache(demo=True, device="cpu", speedups=Speedups.off()).get("wan")
    req = GenerationRequest(prompt="a lighthouse", negative_prompt="blurry", width=32, height=32, steps=6,
                            guidance=5.0, seeds=[7], flow_shift=3.0)
    eager = np.asarray(model.generate(req).images[0])
    assert speedups._wan_compile(model)
    compiled = np.asarray(model.generate(req).images[0])
    assert np.abs(compiled.astype(int) - eager.astype(int)).max() <= 1
    speedups.set_step_cache(model, 0.9)  # a high threshold: most steps reuse the cached residual
    cached = np.asarray(model.generate(req).images[0])
    speedups.set_step_cache(model, None)
    assert not np.array_equal(cached, compiled)  # the cache skipped work
    assert np.array_equal(np.asarray(model.generate(req).images[0]), compiled)  # and is gone when off
