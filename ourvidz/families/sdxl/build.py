"""SDXL builders: the tiny demo pipeline (saved as a diffusers folder, and as an A1111 single file)
and the full-size architecture with random weights."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ourvidz.clip_tokens import clip_bpe_path, clip_tokenizer
from ourvidz.clip_tokens import clip_vocab as vocab_of
from ourvidz.families.base import timed
from ourvidz.families.builders import RANDOM_IDENTITY, built_for_user_files, demo_folder, dtype_name, finish, on_device

SDXL_UNET = dict(
    block_out_channels=[320, 640, 1280], layers_per_block=2, transformer_layers_per_block=[1, 2, 10],
    attention_head_dim=[5, 10, 20], cross_attention_dim=2048,
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    mid_block_type="UNetMidBlock2DCrossAttn", addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816, use_linear_projection=True, in_channels=4, out_channels=4,
    sample_size=128, norm_num_groups=32,
)
SDXL_VAE = dict(
    block_out_channels=[128, 256, 512, 512], down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4, latent_channels=4, layers_per_block=2, scaling_factor=0.13025,
    force_upcast=True, sample_size=1024, in_channels=3, out_channels=3,
)
CLIP_L = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
              max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768)
CLIP_G = dict(vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
              max_position_embeddings=77, hidden_act="gelu", projection_dim=1280)
SDXL_SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                      steps_offset=1, timestep_spacing="leading", prediction_type="epsilon")
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


def build_demo(folder, clip_vocab: str = "openai"):
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


def demo_single_file(root=None, clip_vocab: str = "openai") -> tuple[Path, Path]:
    """(checkpoint, config folder) for `from_single_file(checkpoint, config=folder)`. The config
    folder is the demo diffusers folder; from_single_file reads only its configs and tokenizers."""
    from diffusers import StableDiffusionXLPipeline

    from ourvidz.families.sdxl.single_file import save_single_file

    folder = demo_folder("sdxl", root, clip_vocab=clip_vocab)
    ckpt = folder.with_name(folder.name + ".safetensors")
    if not ckpt.is_file():
        pipe = StableDiffusionXLPipeline.from_pretrained(folder, local_files_only=True)
        tmp = save_single_file(pipe, ckpt.with_name(f".{ckpt.name}.{os.getpid()}"))
        os.replace(tmp, ckpt)
    return ckpt, folder
class RandomSDXL:
    @classmethod
    def load(cls, source, device, dtype):
        from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
        from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

        from ourvidz.families.sdxl.pipeline import SDXLFamily

        tok, tok2 = clip_tokenizers("openai")
        times = {}
        torch.manual_seed(0)  # the bench builds this twice (plain and ourvidz): the same weights
        with timed(times, "random init", device), on_device(device, dtype):
            unet = UNet2DConditionModel(**SDXL_UNET)
            vae = AutoencoderKL(**SDXL_VAE)
            te = CLIPTextModel(CLIPTextConfig(**CLIP_L))
            te2 = CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_G))
            finish([unet, vae, te, te2], device, dtype)
        pipe = StableDiffusionXLPipeline(unet=unet, vae=vae, text_encoder=te, text_encoder_2=te2, tokenizer=tok,
                                         tokenizer_2=tok2, scheduler=EulerDiscreteScheduler(**SDXL_SCHEDULER),
                                         add_watermarker=False)
        return SDXLFamily(pipe, device, dtype, times, RANDOM_IDENTITY)


# A user's SDXL: a civitai-style single file, fp16 throughout (LUSTIFY's is), about 6.9 GB.
USER_DTYPES = {"hub": torch.float16, "half": torch.float16}


def write_user_files(folder, size: str, device, precision: str) -> tuple[dict, dict]:
    """The model as users have it: one A1111/LDM single-file fp16 .safetensors and beside it the
    weightless config folder (configs, tokenizers, scheduler) that from_single_file reads offline.
    The file appears under its name only when complete."""
    from ourvidz.families.sdxl.single_file import save_single_file

    dtype = USER_DTYPES[precision]
    pipe = built_for_user_files("sdxl", size, device, dtype)
    folder = Path(folder)
    ckpt, config = folder / "ourvidz-random-sdxl.safetensors", folder / "config"
    tmp = save_single_file(pipe, ckpt.with_name(f".{ckpt.name}.{os.getpid()}"), config_dir=config)
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, ckpt)
    return ({"single_file": str(ckpt), "config": str(config)},
            {"route": "single_file", "files": [str(ckpt)], "dtype": dtype_name(dtype)})
