"""The cold-start bench's user files (bench/user_weights.py) at demo size: an A1111/LDM SDXL single
file with its config folder, a Wan diffusers folder and a models file; `ourvidz generate --models`
loading them in a real process, offline; the cold-start function end to end."""

import json
import os
import subprocess
import sys

import pytest
from safetensors import safe_open

from ourvidz.bench.cold import cold_starts, override_flags
from ourvidz.bench.tables import cold_start_table, markdown
from ourvidz.bench.user_weights import families_for_jobs, write_user_weights
from ourvidz.errors import BadInput
from ourvidz.families.weights import resolve_sources

QUICK = {"steps": 2, "width": 64, "height": 64, "num_images": 1, "frames": 5}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    return write_user_weights(["sdxl", "wan"], tmp_path_factory.mktemp("user-weights"), "cpu", size="demo")


def test_jobs_need_their_families_and_the_writer_refuses_before_writing(tmp_path):
    assert families_for_jobs(["sdxl_image_fast", "video_fast", "image_fast"]) == ["sdxl", "wan"]
    assert families_for_jobs(["video7b_fast_enhanced"]) == ["qwen", "wan"]  # the enhancer only where asked
    for bad in ({"family_names": ["flux"]}, {"family_names": ["sdxl"], "size": "huge"},
                {"family_names": ["sdxl"], "precision": "fp8"}):
        with pytest.raises(BadInput):
            write_user_weights(root=tmp_path / "w", **{"device": "cpu", **bad})
    assert not (tmp_path / "w").exists()
    assert override_flags("sdxl_image_fast", QUICK) == ["--steps", "2", "--width", "64", "--height", "64",
                                                        "--num-images", "1"]
    assert "--num-images" not in override_flags("video_fast", QUICK) and "--frames" in override_flags("video_fast", QUICK)


def test_cold_start_table_renders_new_and_old_rows():
    new = {"wall_s": 10.5, "load_s": 3.0, "load": {"sdxl checkpoint": 3.0}, "route": {"sdxl": "single_file"},
           "bytes_read": 6.9e9, "page_cache": "dropped", "denoise_s": 3.1, "cached_wall_s": 9.0,
           "write": {"sdxl": {"route": "single_file", "bytes": 6.9e9, "write_s": 12.0}}}
    old = {"wall_s": 67.27, "load_s": 0.54, "denoise_s": 32.98, "compile_first_s": 74.67, "compile_cached_s": 66.66}
    lines = cold_start_table({"sdxl_image_fast": new, "video_fast": old})
    row_new = next(line for line in lines if line.startswith("| sdxl_image_fast"))
    row_old = next(line for line in lines if line.startswith("| video_fast"))
    assert "sdxl: single_file (6.90 GB, page cache dropped)" in row_new and "sdxl 12.0 s (6.90 GB)" in row_new
    assert "12 s met" in row_new and "sdxl checkpoint 3.00" in row_new and "9.00 s" in row_new
    assert "built in memory" in row_old and "40 s missed" in row_old and "66.66 s" in row_old


@pytest.mark.slow
def test_writer_writes_a_single_file_a_folder_and_a_models_file(written):
    sources = resolve_sources(written.models_file)
    sdxl, wan = sources["sdxl"], sources["wan"]
    assert sdxl.kind == "single_file" and wan.kind == "folder" and set(sources) == {"sdxl", "wan"}
    with safe_open(sdxl.path, "pt") as f:
        keys = set(f.keys())
        assert f.get_slice("model.diffusion_model.input_blocks.0.0.weight").get_dtype() == "F16"
    assert "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight" in keys
    assert "first_stage_model.decoder.mid.attn_1.q.weight" in keys and not any(k.startswith("unet.") for k in keys)
    config = os.path.join(sdxl.config, "model_index.json")
    assert os.path.isfile(config) and not list(__import__("pathlib").Path(sdxl.config).rglob("*.safetensors"))
    assert os.path.isfile(os.path.join(wan.path, "model_index.json"))
    with safe_open(os.path.join(wan.path, "vae", "diffusion_pytorch_model.safetensors"), "pt") as f:
        assert f.get_slice(next(iter(f.keys()))).get_dtype() == "F32"  # the VAE as the hub ships it
    rec = written.families
    assert rec["sdxl"]["route"] == "single_file" and rec["wan"]["route"] == "folder"
    assert rec["sdxl"]["bytes"] >= os.path.getsize(sdxl.path) > 0 and rec["wan"]["bytes"] > 0
    assert all(r["write_s"] > 0 and r["size"] == "demo" for r in rec.values())
    assert json.loads((written.models_file.parent / "written.json").read_text())["families"]["wan"]["route"] == "folder"


@pytest.mark.slow
def test_generate_loads_the_written_files_offline(written, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    sources = resolve_sources(written.models_file)
    for job, family, route, path in (("sdxl_image_fast", "sdxl", "single_file", sources["sdxl"].path),
                                     ("video_fast", "wan", "folder", sources["wan"].path)):
        out = tmp_path / job
        proc = subprocess.run([sys.executable, "-m", "ourvidz", "generate", job, "a red car", "--seed", "3",
                               "--models", str(written.models_file), "--out", str(out),
                               *override_flags(job, QUICK)], capture_output=True, text=True, env=env)
        assert proc.returncode == 0, proc.stderr
        report = json.loads((out / "report.json").read_text())
        assert not report["demo"] and report["models"][family]["kind"] == route
        assert report["models"][family]["path"] == path and report["models"][family]["bytes"] > 0
        assert any(k.startswith(family) for k in report["load"])
        output = out / ("video.mp4" if family == "wan" else "image-00.png")
        sidecar = json.loads(output.with_suffix(".json").read_text())
        assert output.stat().st_size > 0 and sidecar["models"][family]["path"] == path
        assert "demo" not in json.dumps(sidecar["models"][family])


@pytest.mark.slow
def test_cold_start_bench_writes_user_files_and_times_them(tmp_path):
    saved = []
    results = cold_starts({}, ["sdxl_image_fast"], "random", "cpu", None, log=lambda line: None,
                          save=lambda r: saved.append(json.dumps(r)), size="demo", overrides=QUICK,
                          weights_dir=tmp_path / "weights")
    row = results["cold_start"]["sdxl_image_fast"]
    assert row["route"] == {"sdxl": "single_file"} and row["weights"] == "random"
    assert row["files"]["sdxl"].endswith("ourvidz-random-sdxl.safetensors") and row["bytes_read"] > 0
    assert row["wall_s"] > row["job_total_s"] > row["load_s"] > 0 and "sdxl checkpoint" in "".join(row["load"])
    assert row["cached_wall_s"] > 0 and "compile_first_s" not in row  # nothing is compiled on the CPU
    assert row["write"]["sdxl"]["route"] == "single_file" and row["write"]["sdxl"]["bytes"] > 0
    assert row["page_cache"] in ("dropped", "not dropped") and len(saved) >= 2
    assert not list((tmp_path / "weights").iterdir())  # the written files are removed afterwards
    assert "| sdxl_image_fast | sdxl: single_file" in markdown(results)


@pytest.mark.slow
def test_sdxl_family_loads_a_single_file_exactly(tmp_path):
    """ourvidz's single-file route (one read onto the device, converted per component) gives the
    weights of the pipeline that wrote the file, and those of diffusers' own from_single_file."""
    import torch
    from diffusers import StableDiffusionXLPipeline

    from ourvidz.families.builders import demo_folder
    from ourvidz.families.sdxl.pipeline import SDXLFamily
    from ourvidz.families.sdxl.single_file import save_single_file
    from ourvidz.families.weights import ModelSource

    pipe = StableDiffusionXLPipeline.from_pretrained(demo_folder("sdxl"), local_files_only=True)
    ckpt = save_single_file(pipe, tmp_path / "m.safetensors", config_dir=tmp_path / "cfg")
    source = ModelSource("sdxl", "single_file", str(ckpt), config=str(tmp_path / "cfg"))
    ours = SDXLFamily.load(source, torch.device("cpu"), torch.float32)
    theirs = StableDiffusionXLPipeline.from_single_file(str(ckpt), config=str(tmp_path / "cfg"), local_files_only=True)
    assert set(ours.load_times) == {"checkpoint read", "unet", "vae", "text_encoder", "text_encoder_2",
                                    "hash (beyond the load)"}
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        want, got, diffusers_own = (getattr(p, name).state_dict() for p in (pipe, ours.pipe, theirs))
        assert want.keys() == got.keys() == diffusers_own.keys(), name
        for k in want:
            assert torch.equal(want[k], got[k]) and torch.equal(got[k], diffusers_own[k]), f"{name}.{k}"
            assert got[k].dtype == torch.float32
    assert ours.pipe.scheduler.config.timestep_spacing == "leading" and len(ours.pipe.tokenizer_2) > 0
