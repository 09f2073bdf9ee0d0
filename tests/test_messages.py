"""Progress and messages (issue #13, item 4): a progress line for every phase, no library noise,
--device checked in one line, OURVIDZ_DEBUG as documented, `models fetch` that fetches what the
errors promise and only the files a family loads, CPU threads pinned."""

import fnmatch
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from ourvidz import families
from ourvidz.cli import app

runner = CliRunner()


def run(*args, env=None):
    return runner.invoke(app, [str(a) for a in args], env=env)


def one_error_line(result, code):
    assert result.exit_code == code, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    return errors[0]


# ------------------------------------------------------------------ --device
@pytest.mark.parametrize("device", ["banana", "cuda:x", "gpu", "cpu:0"])
def test_a_malformed_device_is_one_line_exit_2(device, tmp_path):
    line = one_error_line(run("generate", "image_fast", "a cat", "--demo", "--device", device, "--out", tmp_path), 2)
    assert "expected cpu, cuda, cuda:N or mps" in line and "unexpected" not in line


def test_mps_or_cuda_not_here_is_bad_input_not_missing_weights(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    line = one_error_line(run("generate", "image_fast", "a cat", "--demo", "--device", "mps", "--out", tmp_path), 2)
    assert "MPS is not available" in line
    if not torch.cuda.is_available():
        line = one_error_line(run("generate", "image_fast", "a cat", "--demo", "--device", "cuda:0"), 2)
        assert "no CUDA GPU" in line
    # Also where the device is only read by the model cache (enhance, batch, worker).
    line = one_error_line(run("enhance", "a cat", "--demo", "--device", "banana"), 2)
    assert "--device 'banana'" in line


def test_a_cuda_index_past_the_last_gpu_is_refused(monkeypatch):
    from ourvidz.errors import BadInput
    from ourvidz.families.base import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(BadInput, match="cuda:0 to cuda:1"):
        resolve_device("cuda:2")


# ------------------------------------------------------------------ OURVIDZ_DEBUG
def test_debug_adds_the_traceback_to_an_ourvidz_error():
    plain = run("generate", "no_such_job", "a cat", "--demo")
    assert plain.exit_code == 2 and "Traceback" not in plain.stderr
    debug = run("generate", "no_such_job", "a cat", "--demo", env={"OURVIDZ_DEBUG": "1"})
    assert debug.exit_code == 2
    assert "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1].startswith("error:")  # the one line still ends it
    assert run("generate", "no_such_job", "a cat", "--demo", env={"OURVIDZ_DEBUG": "0"}).stderr.count("Traceback") == 0


def test_debug_adds_the_traceback_to_a_bug(monkeypatch):
    import ourvidz.presets

    def boom(*a, **k):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(ourvidz.presets, "load_all", boom)
    plain = run("presets", "list")
    assert plain.exit_code == 1 and "OURVIDZ_DEBUG=1" in plain.stderr and "Traceback" not in plain.stderr
    debug = run("presets", "list", env={"OURVIDZ_DEBUG": "1"})
    assert debug.exit_code == 1 and "Traceback" in debug.stderr and "ZeroDivisionError: boom" in debug.stderr


# ------------------------------------------------------------------ models fetch
# The stabilityai/stable-diffusion-xl-base-1.0 repository's files (as listed on the hub).
SDXL_REPO = """model_index.json scheduler/scheduler_config.json
text_encoder/config.json text_encoder/model.fp16.safetensors text_encoder/model.safetensors text_encoder/flax_model.msgpack
text_encoder/model.onnx text_encoder/openvino_model.bin text_encoder/openvino_model.xml
text_encoder_2/config.json text_encoder_2/model.fp16.safetensors text_encoder_2/model.safetensors text_encoder_2/flax_model.msgpack
tokenizer/merges.txt tokenizer/special_tokens_map.json tokenizer/tokenizer_config.json tokenizer/vocab.json
tokenizer_2/merges.txt tokenizer_2/special_tokens_map.json tokenizer_2/tokenizer_config.json tokenizer_2/vocab.json
unet/config.json unet/diffusion_pytorch_model.fp16.safetensors unet/diffusion_pytorch_model.safetensors
unet/diffusion_flax_model.msgpack unet/model.onnx unet/model.onnx_data unet/openvino_model.bin unet/openvino_model.xml
vae/config.json vae/diffusion_pytorch_model.fp16.safetensors vae/diffusion_pytorch_model.safetensors vae/diffusion_flax_model.msgpack
vae_1_0/diffusion_pytorch_model.fp16.safetensors vae_decoder/model.onnx vae_encoder/model.onnx
sd_xl_base_1.0.safetensors sd_xl_base_1.0_0.9vae.safetensors sd_xl_offset_example-lora_1.0.safetensors 01.png""".split()


def selected(patterns, files):
    return sorted(f for f in files if any(fnmatch.fnmatch(f, p) for p in patterns))


def test_sdxl_fetch_patterns_take_what_the_family_loads_and_nothing_else():
    got = selected(families.get("sdxl").fetch_patterns, SDXL_REPO)
    assert not [f for f in got if any(x in f for x in ("flax", "onnx", "openvino", "vae_1_0", "sd_xl_base"))]
    assert not [f for f in got if f.endswith(".safetensors") and ".fp16." not in f]
    for component in ("unet", "vae", "text_encoder", "text_encoder_2"):
        assert any(f.startswith(component + "/") and f.endswith(".fp16.safetensors") for f in got)
        assert f"{component}/config.json" in got
    assert "tokenizer/vocab.json" in got and "tokenizer_2/merges.txt" in got and "model_index.json" in got


def test_fp16_patterns_fall_back_to_the_plain_file_where_a_repo_has_no_fp16_copy():
    from ourvidz.families.weights import select_files

    patterns = list(families.get("sdxl").fetch_patterns)
    assert select_files(SDXL_REPO, patterns) == selected(patterns, SDXL_REPO)
    finetune = [f for f in SDXL_REPO if ".fp16." not in f]
    got = select_files(finetune, patterns)
    assert "unet/diffusion_pytorch_model.safetensors" in got and "text_encoder_2/model.safetensors" in got
    assert not [f for f in got if "flax" in f or "onnx" in f or "openvino" in f]


def test_every_family_declares_its_fetch_patterns():
    for name, spec in families.FAMILIES.items():
        assert spec.fetch_patterns, name
        assert not [p for p in spec.fetch_patterns if "onnx" in p or "flax" in p or "msgpack" in p]


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    calls = []

    def snapshot_download(repo_id, local_files_only=False, allow_patterns=None, **kw):
        calls.append({"repo": repo_id, "local_only": local_files_only, "patterns": allow_patterns})
        folder = tmp_path / "hub" / repo_id.replace("/", "--")
        (folder / "unet").mkdir(parents=True, exist_ok=True)
        (folder / "unet" / "config.json").write_text("{}")
        return str(folder)

    import huggingface_hub

    def list_repo_files(self, repo_id, **kw):
        raise OSError("offline")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files", list_repo_files)
    return calls


def test_the_fetch_an_error_suggests_fetches_something(tmp_path, fake_hub):
    models = tmp_path / "models.yaml"
    models.write_text("wan: demo\n")
    line = one_error_line(run("generate", "sdxl_image_fast", "a cat", "--models", models, "--out", tmp_path / "o"), 4)
    assert "ourvidz models fetch sdxl" in line and "stabilityai/stable-diffusion-xl-base-1.0" in line
    result = run("models", "fetch", "sdxl", "--models", models)
    assert result.exit_code == 0, result.output
    assert "nothing to" not in result.output
    assert fake_hub == [{"repo": "stabilityai/stable-diffusion-xl-base-1.0", "local_only": False,
                         "patterns": list(families.get("sdxl").fetch_patterns)}]
    # ... and says what to add so that the next run uses it (no loop back to the same error).
    assert f"add 'sdxl: {{path: stabilityai/stable-diffusion-xl-base-1.0}}' to {models}" in result.stderr


def test_fetch_takes_the_files_the_listing_has(tmp_path, fake_hub, monkeypatch):
    import huggingface_hub

    finetune = [f for f in SDXL_REPO if ".fp16." not in f]
    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files", lambda self, repo_id, **kw: finetune)
    models = tmp_path / "models.yaml"
    models.write_text("sdxl:\n  path: someone/sdxl-finetune\n")
    result = run("models", "fetch", "sdxl", "--models", models, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["hub_id"] == "someone/sdxl-finetune"
    patterns = fake_hub[0]["patterns"]
    assert "unet/diffusion_pytorch_model.safetensors" in patterns and not [p for p in patterns if "onnx" in p]


def test_fetch_of_a_single_file_family_gets_its_config_repo(tmp_path, fake_hub):
    from ourvidz.families.weights import SINGLE_FILE_CONFIG

    ckpt = tmp_path / "lustify.safetensors"
    ckpt.write_bytes(b"")
    models = tmp_path / "models.yaml"
    models.write_text(f"sdxl:\n  single_file: {ckpt}\n")
    result = run("models", "fetch", "sdxl", "--models", models, "--json")
    assert result.exit_code == 0, result.output
    assert fake_hub[0]["repo"] == "stabilityai/stable-diffusion-xl-base-1.0"
    assert fake_hub[0]["patterns"] == SINGLE_FILE_CONFIG


def test_a_missing_local_folder_does_not_suggest_a_fetch_that_has_nothing_to_do(tmp_path):
    models = tmp_path / "models.yaml"
    models.write_text(f"sdxl:\n  path: {tmp_path / 'nowhere'}\nwan: demo\n")
    line = one_error_line(run("generate", "sdxl_image_fast", "a cat", "--models", models, "--out", tmp_path / "o"), 4)
    assert "does not exist" in line and "models fetch" not in line
    # `models fetch` for a family set to a local folder says so in one line (exit 2).
    line = one_error_line(run("models", "fetch", "sdxl", "--models", models), 2)
    assert "nothing to download" in line


# ------------------------------------------------------------------ progress
def test_every_phase_of_a_video7b_demo_run_shows(tmp_path):
    result = run("generate", "video7b_fast_enhanced", "two dancers on a rooftop", "--demo", "--steps", 2,
                 "--frames", 5, "--seed", 1, "--out", tmp_path / "v")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("video7b_fast_enhanced: ")]
    names = [line.split(": ", 1)[1].split(" · ")[0] for line in lines]
    for expected in ("qwen: load model", "qwen: enhance prompt", "wan: load transformer", "wan: load vae",
                     "wan: load text_encoder", "wan: encode prompt", "denoise", "wan: vae decode", "encode mp4"):
        assert expected in names, (expected, lines)
    load = next(line for line in lines if "wan: load transformer" in line)
    assert " KB · " in load or " MB · " in load  # with its bytes
    assert next(line for line in lines if "encode mp4" in line).split(" · ")[1] == "5 frames"
    assert "2 steps" in next(line for line in lines if ": denoise" in line)
    # Progress is on stderr: stdout has the result only.
    assert "wan: vae decode" not in result.stdout and "wrote " in result.stdout


def test_run_job_reports_phases_to_its_listener(tmp_path):
    from ourvidz import generate as gen
    from ourvidz.job import run_job
    from ourvidz.overrides import Overrides

    request = gen.Request(job_type="sdxl_image_fast", prompt="a cat", demo=True, out_dir=tmp_path / "o",
                          overrides=Overrides(steps=2, num_images=2))
    plan = gen.make_plans(request)[0]
    events = []
    run_job(plan, gen.cache_for(request), on_phase=lambda event, ph: events.append((event, ph.name, ph.unit,
                                                                                    ph.completed, ph.total)))
    ends = {name: (unit, done, total) for event, name, unit, done, total in events if event == "end"}
    assert ends["save png"] == ("files", 2, 2)
    assert ends["sdxl: load unet"][0] == "B" and ends["sdxl: load unet"][1] == ends["sdxl: load unet"][2] > 0
    assert {"sdxl: encode prompt", "sdxl: vae decode"} <= set(ends)
    starts = [name for event, name, *_ in events if event == "start"]
    assert sorted(starts) == sorted(ends)  # every phase that starts ends


@pytest.mark.slow
def test_no_library_warnings_in_a_demo_run(tmp_path):
    import os
    import subprocess
    import sys

    # A real process with every warning shown (PYTHONWARNINGS=default): only ourvidz's own lines.
    env = dict(os.environ, PYTHONWARNINGS="default", PYTHONPATH=str(Path(__file__).resolve().parents[1]),
               OURVIDZ_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "ourvidz", "generate", "sdxl_image_fast", "a cat", "--demo",
                           "--steps", "2", "--num-images", "1", "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    ours = ("sdxl_image_fast: ", "demo: random weights")
    assert [line for line in proc.stderr.splitlines() if not line.startswith(ours)] == []


# ------------------------------------------------------------------ CPU threads
def test_cpu_threads_are_pinned(monkeypatch):
    from ourvidz.families import base

    before = torch.get_num_threads()
    try:
        monkeypatch.setattr(base, "physical_cores", lambda: 16)
        torch.set_num_threads(8)
        assert base.pin_cpu_threads(torch.device("cpu")) == 4 and torch.get_num_threads() == 4
        monkeypatch.setattr(base, "physical_cores", lambda: 2)  # one core is left to the rest
        torch.set_num_threads(2)
        assert base.pin_cpu_threads(torch.device("cpu")) == 1 and torch.get_num_threads() == 1
        monkeypatch.setattr(base, "physical_cores", lambda: 1)
        assert base.pin_cpu_threads(torch.device("cpu")) == 1
        monkeypatch.setattr(base, "physical_cores", lambda: 16)
        torch.set_num_threads(2)  # fewer threads already chosen (tests, a shared machine): kept
        assert base.pin_cpu_threads(torch.device("cpu")) == 2
        monkeypatch.setenv("OURVIDZ_THREADS", "3")
        assert base.pin_cpu_threads(torch.device("cpu")) == 3 and torch.get_num_threads() == 3
        assert base.pin_cpu_threads(torch.device("cuda")) is None
    finally:
        torch.set_num_threads(before)
    assert base.physical_cores() >= 1


def test_a_fetched_fp16_only_component_loads_as_the_fp16_variant(tmp_path):
    from ourvidz.families.base import _variant

    only = tmp_path / "unet"
    only.mkdir()
    (only / "diffusion_pytorch_model.fp16.safetensors").write_bytes(b"")
    assert _variant(only) == "fp16"
    (only / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    assert _variant(only) is None  # the plain file is there: loaded as before
    assert _variant(tmp_path / "missing") is None
