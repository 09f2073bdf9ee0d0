"""Tiny deterministic random-weight models saved in the real on-disk formats (diffusers folders,
an A1111/LDM single-file SDXL checkpoint, a transformers causal LM), so the production loading code
runs without any download. Outputs are noise; each builder is byte-deterministic and takes seconds."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from ourvidz.clip_tokens import clip_bpe_path, clip_tokenizer
from ourvidz.clip_tokens import clip_vocab as vocab_of


# Small built-in text used to build the offline T5 / Qwen tokenizers.
CORPUS = (
    "a photo of a cat sitting on a wooden table next to a window with soft morning light. the quick brown fox "
    "jumps over the lazy dog in the park at sunset. cinematic shot of a city street at night, neon lights, rain, "
    "reflections, people walking. portrait of a woman smiling, close up, detailed face, studio lighting, 35mm film. "
    "landscape with mountains, a river, a forest and snow under a blue sky with white clouds. ocean waves crash on "
    "the beach while birds fly over the water. a dog runs and plays. slow motion video of a car driving on a road "
    "through the desert, dust, camera pan. you are a helpful assistant. rewrite the prompt to be more detailed and "
    "vivid. user: make a video of a red balloon flying. assistant: a bright red balloon drifts upward. "
    "high quality, masterpiece, best quality, sharp focus, 4k, 8k, 1080p, 24 fps, 0123456789."
)


# ---------------------------------------------------------------- tokenizers
def clip_tokenizers(clip_vocab: str = "openai"):
    """(tokenizer, tokenizer_2) as in SDXL: same BPE; the second pads with "!" (id 0) like the real one.

    clip_vocab="openai": the real 49408-token vocabulary (needs clip-anytorch).
    clip_vocab="bytes": no merges, 514 tokens, byte-level characters only (no extra package).
    """
    from transformers import CLIPTokenizer

    if clip_vocab == "openai":
        gz = clip_bpe_path()
        return clip_tokenizer(gz), clip_tokenizer(gz, pad_token="!")
    if clip_vocab != "bytes":
        raise ValueError(f"clip_vocab must be 'openai' or 'bytes', not {clip_vocab!r}")
    kw = dict(vocab=vocab_of([]), merges=[], model_max_length=77)
    return CLIPTokenizer(**kw), CLIPTokenizer(pad_token="!", **kw)


def t5_tokenizer():
    """UMT5-style Unigram tokenizer (pad=0, eos=1, unk=2) over CORPUS words plus single characters.

    Built by hand rather than with UnigramTrainer, whose float scores differ run to run.
    """
    from transformers import T5Tokenizer

    words = sorted({w.strip(".,:") for w in CORPUS.split()} - {""})
    chars = sorted(set(CORPUS) | set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,:;!?'\"()-") - {" "})
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -3.0)]
    vocab += [("▁" + w, -1.0) for w in words] + [(c, -5.0) for c in chars]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=512)


def qwen_tokenizer():
    """Byte-level BPE trained on CORPUS (BpeTrainer is deterministic) + ChatML specials/template."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=512, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=specials, show_progress=False
    )
    bpe.train_from_iterator(CORPUS.split(". "), trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    # Like Qwen2.5-Instruct: generation stops at <|im_end|>, padding uses <|endoftext|>.
    tok = Qwen2Tokenizer(vocab=model["vocab"], merges=merges, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                         additional_special_tokens=specials[1:], model_max_length=512)
    tok.chat_template = (
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    return tok


# ---------------------------------------------------------------- SDXL
def build_sdxl(folder, clip_vocab: str = "openai"):
    """Save a tiny StableDiffusionXLPipeline to `folder`; returns the in-memory pipeline."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    tokenizer, tokenizer_2 = clip_tokenizers(clip_vocab)
    # The two encoders must differ in hidden size: from_single_file tells CLIP-L from OpenCLIP-G by
    # position-embedding width; when equal it fills text_encoder_2 with text_encoder's weights and
    # silently leaves text_projection on the meta device.
    te_kw = dict(intermediate_size=37, layer_norm_eps=1e-5, num_attention_heads=4, num_hidden_layers=2,
                 vocab_size=len(tokenizer), max_position_embeddings=77, hidden_act="gelu", projection_dim=32,
                 bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=1)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        unet = UNet2DConditionModel(
            block_out_channels=(2, 4), layers_per_block=2, sample_size=32, in_channels=4, out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
            addition_time_embed_dim=8, transformer_layers_per_block=(1, 2),
            projection_class_embeddings_input_dim=6 * 8 + 32,  # time ids + pooled text_encoder_2 projection
            cross_attention_dim=32 + 48, norm_num_groups=1,
        )
        torch.manual_seed(0)
        vae = AutoencoderKL(
            block_out_channels=[32, 64], in_channels=3, out_channels=3, latent_channels=4, sample_size=128,
            down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
        )
        torch.manual_seed(0)
        text_encoder = CLIPTextModel(CLIPTextConfig(hidden_size=32, **te_kw))
        torch.manual_seed(0)
        text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(hidden_size=48, **te_kw))
    scheduler = EulerDiscreteScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        steps_offset=1, timestep_spacing="leading", interpolation_type="linear", prediction_type="epsilon",
    )
    for m in (unet, vae, text_encoder, text_encoder_2):
        m.eval()  # as from_pretrained returns them (train mode changes CLIP's output in the last ulp)
    pipe = StableDiffusionXLPipeline(unet=unet, vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                                     tokenizer=tokenizer, tokenizer_2=tokenizer_2, scheduler=scheduler)
    pipe.save_pretrained(folder, safe_serialization=True)
    return pipe


def save_pipeline_configs(pipe, folder) -> Path:
    """model_index.json + component configs + tokenizers + scheduler, without weights: the
    `config=` folder for `from_single_file`."""
    from diffusers import ConfigMixin

    folder = Path(folder)
    pipe.save_config(folder)
    for name, comp in pipe.components.items():
        if isinstance(comp, ConfigMixin):
            comp.save_config(folder / name)  # diffusers models and schedulers
        elif isinstance(comp, torch.nn.Module):
            comp.config.save_pretrained(folder / name)  # transformers models
        elif comp is not None:
            comp.save_pretrained(folder / name)  # tokenizers
    return folder


# LDM (original / A1111) key layout. Ported from diffusers' scripts/convert_diffusers_to_original_sdxl.py
# but derived from the configs instead of hard-coding SDXL's 3 UNet / 4 VAE levels.
_RESNET = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"),
           ("conv2", "out_layers.3"), ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection")]
_UNET_TOP = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
             "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2"}


def _unet_prefix_map(cfg) -> list[tuple[str, str]]:
    per = cfg["layers_per_block"] + 1
    pairs = [("mid_block.resnets.0.", "middle_block.0."), ("mid_block.attentions.0.", "middle_block.1."),
             ("mid_block.resnets.1.", "middle_block.2.")]
    for i in range(len(cfg["down_block_types"])):
        for j in range(per - 1):
            pairs.append((f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{i * per + j + 1}.0."))
            pairs.append((f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{i * per + j + 1}.1."))
        pairs.append((f"down_blocks.{i}.downsamplers.0.conv.", f"input_blocks.{(i + 1) * per}.0.op."))
    for i, kind in enumerate(cfg["up_block_types"]):
        for j in range(per):
            pairs.append((f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{i * per + j}.0."))
            pairs.append((f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{i * per + j}.1."))
        slot = 2 if "CrossAttn" in kind else 1  # the upsampler follows the attention when there is one
        pairs.append((f"up_blocks.{i}.upsamplers.0.", f"output_blocks.{i * per + per - 1}.{slot}."))
    return pairs


def unet_to_ldm(sd: dict, cfg) -> dict:
    prefixes = _unet_prefix_map(cfg)
    out = {}
    for k, v in sd.items():
        stem, _, leaf = k.rpartition(".")
        if stem in _UNET_TOP:
            out[f"{_UNET_TOP[stem]}.{leaf}"] = v
            continue
        for hf, ldm in prefixes:
            if k.startswith(hf):
                rest = k[len(hf):]
                if ".resnets." in hf:
                    for a, b in _RESNET:
                        rest = rest.replace(a + ".", b + ".", 1) if rest.startswith(a + ".") else rest
                k = ldm + rest
                break
        else:
            raise KeyError(f"no LDM name for UNet key {k}")
        out[k] = v
    return out


def vae_to_ldm(sd: dict, cfg) -> dict:
    n = len(cfg["block_out_channels"])
    pairs = [("mid_block.attentions.0.", "mid.attn_1."), ("mid_block.resnets.0.", "mid.block_1."),
             ("mid_block.resnets.1.", "mid.block_2."), ("conv_norm_out.", "norm_out.")]
    for i in range(n):
        pairs += [(f"encoder.down_blocks.{i}.resnets.", f"encoder.down.{i}.block."),
                  (f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down.{i}.downsample."),
                  (f"decoder.up_blocks.{i}.resnets.", f"decoder.up.{n - 1 - i}.block."),
                  (f"decoder.up_blocks.{i}.upsamplers.0.", f"decoder.up.{n - 1 - i}.upsample.")]
    attn = {"group_norm.": "norm.", "to_q.": "q.", "to_k.": "k.", "to_v.": "v.", "to_out.0.": "proj_out."}
    out = {}
    for k, v in sd.items():
        for hf, ldm in pairs:
            k = k.replace(hf, ldm)
        k = k.replace("conv_shortcut.", "nin_shortcut.")
        if ".mid.attn_1." in k:
            head, _, rest = k.partition(".mid.attn_1.")
            for a, b in attn.items():
                rest = b + rest[len(a):] if rest.startswith(a) else rest
            k = f"{head}.mid.attn_1.{rest}"
            if v.ndim == 2:  # LDM stores the attention projections as 1x1 convs
                v = v[:, :, None, None]
        out[k] = v
    return out


def clip_l_to_ldm(sd: dict) -> dict:
    # transformers >= 5.6 saves CLIPTextModel without the "text_model." level; LDM files have it.
    return {"text_model." + k.removeprefix("text_model."): v for k, v in sd.items() if not k.endswith("position_ids")}


def open_clip_to_ldm(sd: dict) -> dict:
    top = {"text_model.embeddings.token_embedding.weight": "token_embedding.weight",
           "text_model.embeddings.position_embedding.weight": "positional_embedding",
           "text_model.final_layer_norm.weight": "ln_final.weight", "text_model.final_layer_norm.bias": "ln_final.bias"}
    parts = [("text_model.encoder.layers.", "transformer.resblocks."), (".layer_norm1.", ".ln_1."),
             (".layer_norm2.", ".ln_2."), (".mlp.fc1.", ".mlp.c_fc."), (".mlp.fc2.", ".mlp.c_proj."),
             (".self_attn.out_proj.", ".attn.out_proj.")]
    out, qkv = {}, {}
    for k, v in sd.items():
        if k.endswith("position_ids"):
            continue
        if k == "text_projection.weight":
            out["text_projection"] = v.T.contiguous()  # open_clip multiplies x @ text_projection
        elif k in top:
            out[top[k]] = v
        elif ".self_attn." in k and k.split(".")[-2] in ("q_proj", "k_proj", "v_proj"):
            pre, proj, leaf = k.rsplit(".", 2)
            qkv.setdefault((pre, leaf), {})[proj[0]] = v
        else:
            for a, b in parts:
                k = k.replace(a, b)
            out[k] = v
    for (pre, leaf), t in qkv.items():
        pre = pre.replace(*parts[0]).replace(".self_attn", ".attn")
        out[f"{pre}.in_proj_{leaf}"] = torch.cat([t["q"], t["k"], t["v"]])
    return out


def sdxl_to_ldm_state_dict(pipe) -> dict:
    sd = {}
    for prefix, part in (
        ("model.diffusion_model.", unet_to_ldm(pipe.unet.state_dict(), pipe.unet.config)),
        ("first_stage_model.", vae_to_ldm(pipe.vae.state_dict(), pipe.vae.config)),
        ("conditioner.embedders.0.transformer.", clip_l_to_ldm(pipe.text_encoder.state_dict())),
        ("conditioner.embedders.1.model.", open_clip_to_ldm(pipe.text_encoder_2.state_dict())),
    ):
        sd.update({prefix + k: v.detach().contiguous() for k, v in part.items()})
    return sd


def save_sdxl_single_file(pipe, path, config_dir=None) -> Path:
    """One A1111-style .safetensors (UNet + VAE + both text encoders); optionally the weightless
    config folder that `StableDiffusionXLPipeline.from_single_file(path, config=config_dir)` needs."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(sdxl_to_ldm_state_dict(pipe), str(path))
    if config_dir is not None:
        save_pipeline_configs(pipe, config_dir)
    return path


# ---------------------------------------------------------------- Wan 2.1
def build_wan(folder):
    """Save a tiny Wan 2.1 text-to-video WanPipeline to `folder`; returns the in-memory pipeline."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    tokenizer = t5_tokenizer()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                               temperal_downsample=[False, True, True])
        torch.manual_seed(0)
        text_encoder = UMT5EncoderModel(UMT5Config(
            vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
            relative_attention_num_buckets=8, feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1,
            decoder_start_token_id=0, tie_word_embeddings=False,
        ))
        torch.manual_seed(0)
        transformer = WanTransformer3DModel(
            patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16,
            text_dim=32, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True,
            qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
        )
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                        flow_shift=5.0, num_train_timesteps=1000)
    for m in (transformer, vae, text_encoder):
        m.eval()
    pipe = WanPipeline(transformer=transformer, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                       scheduler=scheduler)
    pipe.save_pretrained(folder, safe_serialization=True)
    return pipe


# ---------------------------------------------------------------- Qwen2 (prompt LLM)
def build_qwen(folder):
    """Save a tiny Qwen2ForCausalLM + tokenizer (ChatML template) to `folder`; returns (model, tokenizer)."""
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    tok = qwen_tokenizer()
    eos = [tok.eos_token_id, tok.pad_token_id]  # <|im_end|> for chat, <|endoftext|> for plain text
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      tie_word_embeddings=True, bos_token_id=None, eos_token_id=eos[0], pad_token_id=tok.pad_token_id)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = Qwen2ForCausalLM(cfg).eval()
    model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=tok.pad_token_id,
                                               do_sample=True, temperature=0.7, top_p=0.8, top_k=20)
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return model, tok


# ---------------------------------------------------------------- cached demo folders
BUILDERS = {"sdxl": build_sdxl, "wan": build_wan, "qwen": build_qwen}


def demo_folder(family: str, root=None, clip_vocab: str = "openai") -> Path:
    """The demo model folder of a family, built once under $OURVIDZ_CACHE/demo (~/.cache/ourvidz).

    The name hashes this file and the torch/diffusers/transformers versions, so a change rebuilds. Built in
    a temporary folder and renamed into place: a folder under the final name is always complete.
    """
    import diffusers
    import transformers

    if family not in BUILDERS:
        raise ValueError(f"no demo model for {family!r}; known: {', '.join(BUILDERS)}")
    root = Path(root or os.environ.get("OURVIDZ_CACHE", Path.home() / ".cache" / "ourvidz")) / "demo"
    stamp = f"{torch.__version__}/{diffusers.__version__}/{transformers.__version__}/{clip_vocab}".encode()
    folder = root / f"{family}-{hashlib.sha256(Path(__file__).read_bytes() + stamp).hexdigest()[:12]}"
    if not folder.is_dir():
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{family}-", dir=root))
        try:
            BUILDERS[family](tmp, **({"clip_vocab": clip_vocab} if family == "sdxl" else {}))
            try:
                os.replace(tmp, folder)
            except OSError:  # another process finished first; its bytes are the same
                if not folder.is_dir():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def demo_sdxl_single_file(root=None, clip_vocab: str = "openai") -> tuple[Path, Path]:
    """(checkpoint, config folder) for `from_single_file(checkpoint, config=folder)`. The config
    folder is the demo diffusers folder; from_single_file reads only its configs and tokenizers."""
    from diffusers import StableDiffusionXLPipeline

    folder = demo_folder("sdxl", root, clip_vocab)
    ckpt = folder.with_name(folder.name + ".safetensors")
    if not ckpt.is_file():
        pipe = StableDiffusionXLPipeline.from_pretrained(folder, local_files_only=True)
        tmp = save_sdxl_single_file(pipe, ckpt.with_name(f".{ckpt.name}.{os.getpid()}"))
        os.replace(tmp, ckpt)
    return ckpt, folder
