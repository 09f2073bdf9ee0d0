"""The real weight-loading paths (diffusers folders, SDXL single file, transformers LM), proven
offline on the tiny random models of the families' builders (ourvidz.families.<name>.build), and
`ourvidz generate --models` / `ourvidz models` on them."""

import hashlib
import importlib.metadata
import json
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from conftest import ok, one_error_line, run

from ourvidz.clip_tokens import ClipVocabMissing, clip_bpe_path, clip_tokenizer_files
from ourvidz.families import builders
from ourvidz.families.qwen import build as qwen_build
from ourvidz.families.sdxl import build as sdxl_build
from ourvidz.families.sdxl.single_file import save_single_file
from ourvidz.families.wan import build as wan_build

BUILDS = {"sdxl": sdxl_build.build_demo, "wan": wan_build.build_demo, "qwen": qwen_build.build_demo}

try:
    clip_bpe_path()
    HAS_CLIP = True
except ClipVocabMissing:
    HAS_CLIP = False
CLIP_VOCAB = "openai" if HAS_CLIP else "bytes"
needs_clip = pytest.mark.skipif(not HAS_CLIP, reason="clip-anytorch (OpenAI BPE vocab) not installed")
# Weights round-trip bit for bit, but transformers mmaps safetensors at unaligned addresses and
# BLAS then takes another kernel, so outputs differ in the last ulp (~1e-7).
ATOL = 1e-5


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError(f"test tried to reach the network: {args[:2]}")

    import huggingface_hub.constants

    # HF_HUB_OFFLINE is read once when huggingface_hub is imported; patch the live value too.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    real_connect = socket.socket.connect
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", lambda sock, address: refuse(address) if sock.family in (
        socket.AF_INET, socket.AF_INET6) else real_connect(sock, address))


def quiet(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sdxl_images(pipe, steps=2):
    return pipe("a photo of a cat", negative_prompt="blurry", num_inference_steps=steps, height=64, width=64,
                guidance_scale=5.0, generator=torch.Generator("cpu").manual_seed(0), output_type="np").images


def wan_frames(pipe):
    return pipe("a cat runs on the beach", negative_prompt="blurry", num_inference_steps=2, height=16, width=16,
                num_frames=5, guidance_scale=5.0, max_sequence_length=16,
                generator=torch.Generator("cpu").manual_seed(0), output_type="np").frames


def tree_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(folder)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def sdxl(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sdxl")
    pipe = quiet(sdxl_build.build_demo(folder, clip_vocab=CLIP_VOCAB))
    return pipe, folder, sdxl_images(pipe)


@pytest.fixture(scope="module")
def wan(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wan")
    pipe = quiet(wan_build.build_demo(folder))
    return pipe, folder, wan_frames(pipe)


# ------------------------------------------------------------------ tokenizers
@needs_clip
def test_clip_vocab_files_give_openai_ids(tmp_path):
    from transformers import CLIPTokenizer

    vocab, merges = clip_tokenizer_files(clip_bpe_path(), tmp_path)
    from_dir = CLIPTokenizer.from_pretrained(tmp_path)
    from_files = CLIPTokenizer(vocab=str(vocab), merges=str(merges))
    built, built_2 = sdxl_build.clip_tokenizers("openai")
    for tok in (from_dir, from_files, built, built_2):
        assert len(tok) == 49408
        assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
        assert tok("A painting of a squirrel eating a burger").input_ids[:7] == [49406, 320, 3086, 539, 320, 14004, 4371]
    assert built.model_max_length == 77
    padded = built_2("cat", padding="max_length", max_length=77).input_ids
    assert padded[:3] == [49406, 2368, 49407] and set(padded[3:]) == {0}  # SDXL's tokenizer_2 pads with "!"
    assert set(built("cat", padding="max_length", max_length=77).input_ids[3:]) == {49407}


def test_missing_clip_package_is_named(monkeypatch, tmp_path):
    real = importlib.metadata.distribution

    def missing(name):
        if name == "clip-anytorch":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(ClipVocabMissing, match="pip install --no-deps clip-anytorch"):
        sdxl_build.build_demo(tmp_path / "never-written")
    assert not (tmp_path / "never-written").exists()  # refused before anything is written


@pytest.mark.parametrize("family", ["sdxl", "wan", "qwen"])
@pytest.mark.slow
def test_builders_are_byte_deterministic(tmp_path, family):
    build = BUILDS[family]
    kw = {"clip_vocab": CLIP_VOCAB} if family == "sdxl" else {}
    torch.manual_seed(1234)
    build(tmp_path / "a", **kw)
    state = torch.random.get_rng_state()
    build(tmp_path / "b", **kw)
    assert torch.equal(state, torch.random.get_rng_state())  # builders leave the global RNG alone
    assert tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b")


# ------------------------------------------------------------------ SDXL
def test_sdxl_from_pretrained_matches_in_memory(sdxl):
    from diffusers import StableDiffusionXLPipeline

    _, folder, expected = sdxl
    loaded = quiet(StableDiffusionXLPipeline.from_pretrained(folder, local_files_only=True))
    assert loaded.unet.config.addition_embed_type == "text_time"
    assert loaded.scheduler.config.timestep_spacing == "leading" and loaded.scheduler.config.steps_offset == 1
    images = sdxl_images(loaded)
    assert images.shape == (1, 64, 64, 3) and np.isfinite(images).all()
    np.testing.assert_allclose(images, expected, atol=ATOL, rtol=0)


@pytest.mark.slow
def test_sdxl_single_file_roundtrip(sdxl, tmp_path):
    from diffusers import StableDiffusionXLPipeline
    from safetensors import safe_open

    pipe, _, expected = sdxl
    ckpt = save_single_file(pipe, tmp_path / "tiny_sdxl.safetensors", config_dir=tmp_path / "cfg")
    with safe_open(ckpt, "pt") as f:
        keys = set(f.keys())
        assert f.get_tensor("first_stage_model.decoder.mid.attn_1.q.weight").ndim == 4
    for key in ("model.diffusion_model.input_blocks.0.0.weight", "model.diffusion_model.label_emb.0.0.weight",
                "model.diffusion_model.middle_block.1.proj_in.weight",
                "conditioner.embedders.0.transformer.text_model.embeddings.position_embedding.weight",
                "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight",
                "conditioner.embedders.1.model.text_projection"):
        assert key in keys
    assert not list((tmp_path / "cfg").rglob("*.safetensors"))  # every weight must come from the checkpoint

    loaded = quiet(StableDiffusionXLPipeline.from_single_file(
        str(ckpt), config=str(tmp_path / "cfg"), local_files_only=True))
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        want, got = getattr(pipe, name).state_dict(), getattr(loaded, name).state_dict()
        assert want.keys() == got.keys(), name
        for k in want:
            assert torch.equal(want[k], got[k]), f"{name}.{k}"
    np.testing.assert_allclose(sdxl_images(loaded), expected, atol=ATOL, rtol=0)


def test_sdxl_single_file_without_config_needs_the_hub(sdxl, tmp_path):
    """Without config= diffusers guesses the repo from the keys (our tiny UNet reads as SD 1.x) and,
    even with local_files_only=True, retries the download online; offline that must fail."""
    from diffusers import StableDiffusionXLPipeline
    from huggingface_hub.errors import LocalEntryNotFoundError

    ckpt = save_single_file(sdxl[0], tmp_path / "tiny.safetensors")
    with pytest.raises(LocalEntryNotFoundError):
        StableDiffusionXLPipeline.from_single_file(str(ckpt), local_files_only=True)


def test_sdxl_byte_vocab_stand_in_runs(tmp_path):
    from diffusers import StableDiffusionXLPipeline

    sdxl_build.build_demo(tmp_path, clip_vocab="bytes")
    pipe = quiet(StableDiffusionXLPipeline.from_pretrained(tmp_path, local_files_only=True))
    assert len(pipe.tokenizer) == 514 == pipe.text_encoder.config.vocab_size
    assert np.isfinite(sdxl_images(pipe, steps=1)).all()


@pytest.mark.slow
def test_demo_folder_is_cached_and_single_file_variant_loads(tmp_path):
    from diffusers import StableDiffusionXLPipeline

    qwen = builders.demo_folder("qwen", root=tmp_path)
    assert qwen == builders.demo_folder("qwen", root=tmp_path) and (qwen / "model.safetensors").is_file()
    ckpt, config = sdxl_build.demo_single_file(root=tmp_path, clip_vocab=CLIP_VOCAB)
    assert sorted(p.name for p in (tmp_path / "demo").iterdir()) == sorted([qwen.name, config.name, ckpt.name])
    pipe = quiet(StableDiffusionXLPipeline.from_single_file(str(ckpt), config=str(config), local_files_only=True))
    assert np.isfinite(sdxl_images(pipe, steps=1)).all()


# ------------------------------------------------------------------ Wan 2.1
def test_wan_from_pretrained_matches_in_memory(wan):
    from diffusers import UniPCMultistepScheduler, WanPipeline

    _, folder, expected = wan
    loaded = quiet(WanPipeline.from_pretrained(folder, local_files_only=True))
    assert isinstance(loaded.scheduler, UniPCMultistepScheduler)
    assert loaded.scheduler.config.use_flow_sigmas and loaded.scheduler.config.flow_shift == 5.0
    frames = wan_frames(loaded)
    assert frames.shape == (1, 5, 16, 16, 3) and np.isfinite(frames).all()
    np.testing.assert_allclose(frames, expected, atol=ATOL, rtol=0)


def test_wan_bf16_with_fp32_vae(wan):
    from diffusers import AutoencoderKLWan, WanPipeline

    _, folder, expected = wan
    vae = AutoencoderKLWan.from_pretrained(folder, subfolder="vae", dtype=torch.float32, local_files_only=True)
    pipe = quiet(WanPipeline.from_pretrained(folder, vae=vae, dtype=torch.bfloat16, local_files_only=True))
    assert pipe.vae.dtype == torch.float32
    assert pipe.transformer.dtype == pipe.text_encoder.dtype == torch.bfloat16
    frames = wan_frames(pipe)
    assert frames.dtype == np.float32 and np.isfinite(frames).all()
    assert np.abs(frames - expected).max() < 0.05


# ------------------------------------------------------------------ Qwen2 prompt LLM
def test_qwen_generates_deterministic_tokens(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, _ = qwen_build.build_demo(tmp_path)
    lm = AutoModelForCausalLM.from_pretrained(tmp_path, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    assert type(lm).__name__ == "Qwen2ForCausalLM" and lm.config.num_key_value_heads == 2
    assert tok.eos_token == "<|im_end|>" and tok.eos_token_id in lm.generation_config.eos_token_id
    messages = [{"role": "system", "content": "you are a helpful assistant."},
                {"role": "user", "content": "make a video of a red balloon flying."}]
    prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n")
    enc = tok(prompt, return_tensors="pt")
    assert tok.unk_token_id not in enc.input_ids[0].tolist()  # byte-level: nothing unknown

    def sample(m, seed):
        torch.manual_seed(seed)
        out = m.generate(**enc, max_new_tokens=12, do_sample=True)
        return out[0, enc.input_ids.shape[1]:].tolist()

    first = sample(lm, 0)
    assert len(first) > 0 and first == sample(lm, 0) == sample(model, 0)
    assert isinstance(tok.decode(first, skip_special_tokens=True), str)


# ------------------------------------------------------------------ through the CLI: --models and `ourvidz models`
@pytest.mark.slow
def test_load_from_folder_and_single_file(tmp_path):
    from ourvidz.families.builders import demo_folder
    from ourvidz.families.sdxl.build import demo_single_file

    folder = demo_folder("sdxl")
    ckpt, config = demo_single_file()
    common = ["sdxl_image_fast", "a red car", "--steps", 2, "--num-images", 1, "--seed", 3, "--width", 64, "--height", 64]
    (tmp_path / "folder.yaml").write_text(f"sdxl:\n  path: {folder}\n")
    (tmp_path / "single.yaml").write_text(f"sdxl:\n  single_file: {ckpt}\n  config: {config}\n")
    ok("generate", *common, "--models", tmp_path / "folder.yaml", "--out", tmp_path / "f")
    ok("generate", *common, "--models", tmp_path / "single.yaml", "--out", tmp_path / "s")
    f = json.loads((tmp_path / "f" / "report.json").read_text())
    s = json.loads((tmp_path / "s" / "report.json").read_text())
    assert not f["demo"] and not s["demo"]
    assert f["models"]["sdxl"]["kind"] == "folder" and s["models"]["sdxl"]["kind"] == "single_file"
    assert {"sdxl checkpoint read", "sdxl unet"} <= set(s["load"]) and "sdxl unet" in f["load"]
    a = np.asarray(Image.open(tmp_path / "f" / "image-00.png")).astype(int)
    b = np.asarray(Image.open(tmp_path / "s" / "image-00.png")).astype(int)
    assert np.abs(a - b).max() <= 1  # same weights through two loaders


def test_models_status_and_fetch_offline(tmp_path, monkeypatch):
    from ourvidz.families.builders import demo_folder

    (tmp_path / "m.yaml").write_text(f"sdxl:\n  path: {demo_folder('sdxl')}\nwan:\n  path: Wan-AI/Wan2.1-T2V-1.3B-Diffusers\n"
                                     f"qwen:\n  path: {tmp_path}\n")
    from ourvidz.families.weights import status

    assert "sdxl" in ok("models", "--models", tmp_path / "m.yaml").output
    rows = {r["family"]: r for r in status(tmp_path / "m.yaml")}
    assert rows["sdxl"]["found"] and rows["sdxl"]["bytes"] > 0 and rows["sdxl"]["configured"].startswith("folder")
    assert not rows["wan"]["found"] and "not in the local Hugging Face cache" in rows["wan"]["detail"]
    assert not rows["qwen"]["found"] and "no config.json" in rows["qwen"]["detail"]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    line = one_error_line(run("models", "fetch", "wan", "--models", tmp_path / "m.yaml"), 4)
    assert "hub is unreachable" in line
    assert "nothing to download" in one_error_line(run("models", "fetch", "sdxl", "--models", tmp_path / "m.yaml"), 2)  # a local folder
    assert "unknown family" in one_error_line(run("models", "fetch", "flux"), 2)
