"""`ourvidz generate` end to end on the demo models (CPU): files, metadata, replay, loading, bad input."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from conftest import JOB_TYPES, ok, one_error_line, run

from ourvidz.outputs import parse_a1111, read_video_info
from ourvidz.presets import load_preset


@pytest.mark.slow
@pytest.mark.parametrize("job", JOB_TYPES)
def test_every_job_type_end_to_end(job, tmp_path):
    preset = load_preset(job)
    frames = ["--frames", 9] if preset.is_video else []
    ok("generate", job, "a lighthouse in a storm", "--demo", "--steps", 2, "--seed", 7, "--out", tmp_path, *frames)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["demo"] and report["label"] == "demo: random weights"
    assert report["phases"]["denoise"] > 0 and report["seed_doc"]["seconds"] == preset.seed_doc.seconds
    assert (report["enhancement"] is not None) == preset.enhance
    if preset.is_video:
        info = read_video_info(tmp_path / "video.mp4")
        assert (info["frames"], info["fps"], info["codec"], info["pix_fmt"]) == (9, preset.fps, "h264", "yuv420p")
        assert json.loads((tmp_path / "video.json").read_text())["demo"] is True
    else:
        pngs = sorted(tmp_path.glob("*.png"))
        assert len(pngs) == preset.num_images
        size = tuple(int(x) for x in report["size"].split("x"))
        assert all(Image.open(p).size == size for p in pngs)
        assert max(size) == 64  # demo models run small unless --width/--height say otherwise


def test_video_fast_full_frame_count(tmp_path):
    ok("generate", "video_fast", "a lighthouse in a storm", "--demo", "--steps", 2, "--out", tmp_path)
    info = read_video_info(tmp_path / "video.mp4")
    assert info["frames"] == 81 and info["fps"] == 16


@pytest.mark.slow
def test_png_parameters_chunk_and_replay(tmp_path):
    ok("generate", "sdxl_image_fast", "portrait of a dancer", "--demo", "--steps", 2, "--num-images", 2,
       "--seed", 41, "--guidance", 5.5, "--negative", "ugly", "--out", tmp_path / "a")
    img = Image.open(tmp_path / "a" / "image-01.png")
    params = parse_a1111(img.text["parameters"])
    assert params["prompt"] == "portrait of a dancer"
    assert params["Negative prompt"].startswith("ugly, child, minor")
    assert (params["Steps"], params["Seed"], params["CFG scale"], params["Size"], params["Sampler"]) == (
        "2", "42", "5.5", "64x64", "Euler")
    sidecar = json.loads((tmp_path / "a" / "image-01.json").read_text())
    assert sidecar["seed"] == 42 and sidecar["plan"]["negative_prompt"]["tokens"] <= 77
    # a demo run records its weights as the demo models, never as a folder of real weights
    assert sidecar["demo"] is True and sidecar["label"] == "demo: random weights"
    sdxl = sidecar["models"]["sdxl"]
    assert sdxl["kind"] == "demo" and Path(sdxl["local"]).parent.name == "demo"  # the demo cache's folder

    ok("generate", "--from-metadata", tmp_path / "a" / "image-01.png", "--out", tmp_path / "b")
    for name in ("image-00.png", "image-01.png"):
        a = np.asarray(Image.open(tmp_path / "a" / name))
        b = np.asarray(Image.open(tmp_path / "b" / name))
        assert np.array_equal(a, b)
    # A different seed gives different pixels: the comparison above can fail.
    ok("generate", "--from-metadata", tmp_path / "a" / "image-00.json", "--seed", 5, "--out", tmp_path / "c")
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "a" / "image-00.png")),
                              np.asarray(Image.open(tmp_path / "c" / "image-00.png")))


def test_bad_inputs_one_line(tmp_path):
    assert "unknown job type 'nope'" in one_error_line(run("generate", "nope", "x", "--demo"), 2)
    assert "prompt is empty" in one_error_line(run("generate", "image_fast", "   ", "--demo"), 2)
    assert "multiple of 16" in one_error_line(run("generate", "image_fast", "x", "--width", 100, "--demo"), 2)
    assert "refused" in one_error_line(run("generate", "image_fast", "nude schoolgirl", "--demo"), 3)
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "image_fast.yaml").write_text("family: [wan\n")
    assert "malformed YAML" in one_error_line(run("generate", "image_fast", "x", "--presets-dir", tmp_path / "p"), 2)
    (tmp_path / "m.yaml").write_text(f"wan:\n  path: {tmp_path / 'missing'}\n")
    line = one_error_line(run("generate", "image_fast", "x", "--models", tmp_path / "m.yaml"), 4)
    assert "does not exist" in line and "models fetch" not in line  # a local folder has nothing to fetch (#13)
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    (tmp_path / "m2.yaml").write_text(f"sdxl:\n  single_file: {tmp_path / 'bad.safetensors'}\n  config: {tmp_path}\n")
    assert "safetensors" in one_error_line(run("generate", "sdxl_image_fast", "x", "--models", tmp_path / "m2.yaml"), 4)


def test_existing_files_never_overwritten(tmp_path):
    (tmp_path / "image-00.png").write_bytes(b"mine")
    line = one_error_line(run("generate", "image_fast", "x", "--demo", "--out", tmp_path), 2)
    assert "never overwrites" in line and (tmp_path / "image-00.png").read_bytes() == b"mine"


def test_out_of_memory_keeps_finished_outputs(tmp_path, monkeypatch):
    from ourvidz.families.wan.pipeline import WanFamily

    real, calls = WanFamily.generate, []

    def generate(self, req, on_step=None):
        calls.append(req.prompt)
        if len(calls) == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real(self, req, on_step)

    monkeypatch.setattr(WanFamily, "generate", generate)
    (tmp_path / "prompts.txt").write_text("a cat\n# a comment\na dog\na bird\n")
    line = one_error_line(run("generate", "image_fast", "--prompt-file", tmp_path / "prompts.txt", "--demo",
                              "--steps", 1, "--out", tmp_path / "o"), 5)
    assert "out of GPU memory" in line
    assert (tmp_path / "o" / "000" / "image-00.png").is_file() and (tmp_path / "o" / "000" / "report.json").is_file()
    assert not (tmp_path / "o" / "001" / "image-00.png").exists()


def test_interrupt_is_one_line(monkeypatch, tmp_path):
    from ourvidz.families.wan.pipeline import WanFamily

    def generate(self, req, on_step=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(WanFamily, "generate", generate)
    assert "interrupted" in run("generate", "image_fast", "x", "--demo", "--out", tmp_path).stderr
    assert run("generate", "image_fast", "x", "--demo", "--out", tmp_path / "z").exit_code == 130


def test_dry_run_loads_nothing(tmp_path):
    result = ok("generate", "video_fast", "a boat", "--dry-run", "--seed", 3, "--out", tmp_path)
    assert "dry run" in result.output and "video.mp4" in result.output
    assert not any(tmp_path.iterdir())


def test_version_and_presets_cli():
    assert "ourvidz" in ok("--version").output
    listing = ok("presets", "list").output
    assert all(job in listing for job in JOB_TYPES)
    neg = ok("negative", "sdxl_image_fast", "portrait of a dancer").output
    assert "/ 77 CLIP tokens" in neg


def test_sidecar_is_complete(tmp_path):
    ok("generate", "image_fast", "a fox", "--demo", "--steps", 1, "--seed", 9, "--out", tmp_path)
    meta = json.loads((tmp_path / "image-00.json").read_text())
    assert meta["seed"] == 9 and meta["plan"]["preset"]["steps"] == 1 and meta["plan"]["overrides"] == {"steps": 1}
    assert meta["plan"]["negative_prompt"]["text"] and meta["versions"]["diffusers"]
    assert meta["models"]["wan"]["header_sha256"] and meta["timings"]["denoise"] > 0
    assert meta["label"] == "demo: random weights"
