"""Outputs other tools read fully (issue #13, item 3): the A1111 parameters (read back by the
third-party sd-parsers), the A1111 model hash and name, the MP4's index first and its tags."""

import hashlib
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from ourvidz.cli import app
from ourvidz.outputs import (
    a1111_parameters,
    mp4_boxes,
    parse_a1111,
    read_video_tags,
    save_mp4,
)

runner = CliRunner()


def ok(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def sd_parsers_read(path):
    from sd_parsers import ParserManager

    info = ParserManager().parse(str(path))
    assert info is not None, f"sd-parsers found no parameters in {path}"
    sampler = info.samplers[0]
    return {
        "generator": info.generator.value,
        "prompt": sampler.prompts[0].value,
        "negative": sampler.negative_prompts[0].value,
        "seed": sampler.parameters["seed"],
        "steps": sampler.parameters["steps"],
        "cfg": sampler.parameters["cfg_scale"],
        "sampler": sampler.name,
        "size": info.metadata.get("Size"),
        "model": sampler.model.name,
        "model_hash": sampler.model.hash,
        "version": info.metadata.get("Version"),
        "note": info.metadata.get("Note"),
    }


def test_parameters_quote_values_as_a1111_does():
    text = a1111_parameters("a cat, on a mat", "blurry, text", 20, "Euler", 6.5, 7, 64, 96, "lustify_v20",
                            {"Note": "demo: random weights", "Job": "x"}, model_hash="0123456789", version="ourvidz 0.1.0")
    tail = text.splitlines()[-1]
    assert tail.startswith("Steps: 20, Sampler: Euler, CFG scale: 6.5, Seed: 7, Size: 64x96, Model hash: 0123456789, "
                           "Model: lustify_v20, ")
    assert 'Note: "demo: random weights"' in tail and tail.endswith("Version: ourvidz 0.1.0")
    back = parse_a1111(text)
    assert back["prompt"] == "a cat, on a mat" and back["Negative prompt"] == "blurry, text"
    assert back["Note"] == "demo: random weights" and back["Model hash"] == "0123456789"


def test_sd_parsers_reads_a_demo_png(tmp_path):
    ok("generate", "sdxl_image_fast", "a red fox in snow", "--demo", "--steps", 2, "--num-images", 1, "--seed", 11,
       "--negative", "cartoon", "--out", tmp_path / "o")
    meta = json.loads((tmp_path / "o" / "image-00.json").read_text())
    got = sd_parsers_read(tmp_path / "o" / "image-00.png")
    assert got["generator"] == "AUTOMATIC1111"
    assert got["prompt"] == "a red fox in snow"
    assert got["negative"] == meta["plan"]["negative_prompt"]["text"] and got["negative"].startswith("cartoon")
    assert (got["seed"], got["steps"], got["cfg"], got["sampler"]) == ("11", "2", "6", "Euler")
    preset = meta["plan"]["preset"]
    assert got["size"] == f"{preset['width']}x{preset['height']}"
    assert got["model"] == "ourvidz-demo (random weights)"
    # A folder has no A1111 hash; the stand-in is the header hash's first 10 hex digits.
    ident = meta["models"]["sdxl"]
    assert got["model_hash"] == ident["model_hash"] == ident["header_sha256"][:10]
    assert "stand-in" in ident["model_hash_kind"]
    assert got["version"].startswith("ourvidz ")
    assert got["note"] == "demo (random weights)"  # every field, the demo note too


@pytest.mark.slow
def test_single_file_checkpoint_hash_is_autov2_and_name_has_no_extension(tmp_path, monkeypatch):
    from ourvidz.families.sdxl.build import demo_single_file

    ckpt, config = demo_single_file()
    models = tmp_path / "models.yaml"
    models.write_text(f"sdxl:\n  single_file: {ckpt}\n  config: {config}\n")
    ok("generate", "sdxl_image_fast", "a red car", "--models", models, "--steps", 2, "--num-images", 1,
       "--width", 64, "--height", 64, "--seed", 3, "--out", tmp_path / "s")
    autov2 = hashlib.sha256(ckpt.read_bytes()).hexdigest()[:10]
    got = sd_parsers_read(tmp_path / "s" / "image-00.png")
    assert got["model_hash"] == autov2
    assert got["model"] == ckpt.stem and not got["model"].endswith(".safetensors")
    assert (got["prompt"], got["seed"], got["steps"], got["size"]) == ("a red car", "3", "2", "64x64")
    meta = json.loads((tmp_path / "s" / "image-00.json").read_text())
    assert meta["models"]["sdxl"]["sha256"].startswith(autov2) and "AutoV2" in meta["models"]["sdxl"]["model_hash_kind"]


def test_file_hash_is_remembered_by_path_size_and_mtime(tmp_path, monkeypatch):
    import os

    from ourvidz import progress
    from ourvidz.families.weights import file_sha256

    monkeypatch.setenv("OURVIDZ_CACHE", str(tmp_path / "cache"))
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"x" * 100_000)
    seen = []
    with progress.reporting(lambda event, ph: seen.append((event, ph.name, ph.completed, ph.total))):
        assert file_sha256(f) == hashlib.sha256(f.read_bytes()).hexdigest()
        assert file_sha256(f) == hashlib.sha256(f.read_bytes()).hexdigest()  # from the cache: no second read
    assert [s for s in seen if s[0] == "start"] == [("start", "hash model.safetensors", 0.0, 100_000)]
    assert seen[-1][0] == "end" and seen[-1][2] == 100_000
    assert str(f.resolve()) in json.loads((tmp_path / "cache" / "hashes.json").read_text())
    f.write_bytes(b"y" * 100_000)
    os.utime(f, ns=(1, 1))
    assert file_sha256(f) == hashlib.sha256(b"y" * 100_000).hexdigest()


def test_mp4_index_comes_first_and_tags_carry_the_parameters(tmp_path):
    frames = np.random.default_rng(0).integers(0, 255, (9, 32, 48, 3), dtype=np.uint8)
    text = a1111_parameters("a lighthouse, storm", "blurry", 25, "UniPC", 6.5, 42, 48, 32, "Wan2.1-T2V-1.3B-Diffusers",
                            {"Frames": 9, "FPS": 16}, model_hash="abcdef0123", version="ourvidz 0.1.0")
    done = []
    path = save_mp4(tmp_path / "v.mp4", frames, 16, comment=text, metadata={"description": "a lighthouse, storm"},
                    on_frame=lambda i, n: done.append((i, n)))
    boxes = mp4_boxes(path)
    assert boxes.index("moov") < boxes.index("mdat"), boxes
    assert done[-1] == (9, 9)
    tags = read_video_tags(path)
    assert tags["description"] == "a lighthouse, storm"
    back = parse_a1111(tags["comment"])
    assert back["prompt"] == "a lighthouse, storm" and back["Negative prompt"] == "blurry"
    assert {k: back[k] for k in ("Seed", "Steps", "CFG scale", "Size", "Model", "Model hash")} == {
        "Seed": "42", "Steps": "25", "CFG scale": "6.5", "Size": "48x32", "Model": "Wan2.1-T2V-1.3B-Diffusers",
        "Model hash": "abcdef0123"}
    assert not list(tmp_path.glob(".ourvidz-mp4-*")), "the encoding folder is removed"


def test_demo_video_is_faststart_with_the_same_metadata_as_a_png(tmp_path):
    ok("generate", "video_fast", "a lighthouse in a storm", "--demo", "--steps", 2, "--frames", 5, "--seed", 9,
       "--out", tmp_path / "v")
    path = tmp_path / "v" / "video.mp4"
    boxes = mp4_boxes(path)
    assert boxes.index("moov") < boxes.index("mdat"), boxes
    meta = json.loads((tmp_path / "v" / "video.json").read_text())
    back = parse_a1111(read_video_tags(path)["comment"])
    preset = meta["plan"]["preset"]
    assert back["prompt"] == "a lighthouse in a storm"
    assert back["Negative prompt"] == meta["plan"]["negative_prompt"]["text"]
    assert (back["Seed"], back["Steps"], back["CFG scale"]) == ("9", "2", f"{preset['guidance']:g}")
    assert back["Size"] == f"{preset['width']}x{preset['height']}"
    assert back["Model"] == "ourvidz-demo (random weights)" and back["Model hash"] == meta["models"]["wan"]["model_hash"]
    assert back["Frames"] == "5" and back["Version"].startswith("ourvidz ")
