"""Full-size architectures with random weights, built straight on the device, for measuring speed
where the real weights can't be had (speed does not depend on weight values).

The configurations are the public ones (../shared/spec/architectures.md). Tokenizers are the
demo ones: CLIP's real BPE; small stand-ins for UMT5 and Qwen, whose prompts are padded (UMT5,
512 tokens) or generate a fixed number of new tokens (Qwen), so the cost is the real one.
Each builder returns the same family object the real loaders return, so a job runs unchanged.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from ourvidz.pipelines.base import timed

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
WAN_1_3B = dict(patch_size=[1, 2, 2], num_attention_heads=12, attention_head_dim=128, in_channels=16, out_channels=16,
                text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True,
                qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024)
UMT5_XXL = dict(vocab_size=256384, d_model=4096, d_ff=10240, num_layers=24, num_heads=64, d_kv=64,
                feed_forward_proj="gated-gelu", relative_attention_num_buckets=32, pad_token_id=0, eos_token_id=1,
                decoder_start_token_id=0, tie_word_embeddings=False)
QWEN_7B = dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
               num_key_value_heads=4, vocab_size=152064, rope_theta=1e6, rms_norm_eps=1e-6, tie_word_embeddings=False,
               max_position_embeddings=32768)


@contextmanager
def on_device(device: torch.device, dtype: torch.dtype):
    """Parameters are created on the device in the target dtype: no CPU copy, no fp32 detour."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(old)


def _finish(modules, device, dtype):
    for m in modules:
        m.to(device=device, dtype=dtype).eval().requires_grad_(False)


RANDOM_IDENTITY = {"kind": "random", "note": "full-size architecture, random weights (speed only)"}


class RandomSDXL:
    @classmethod
    def load(cls, source, device, dtype):
        from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
        from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

        from ourvidz.pipelines.demo import clip_tokenizers
        from ourvidz.pipelines.sdxl import SDXLFamily

        tok, tok2 = clip_tokenizers("openai")
        times = {}
        torch.manual_seed(0)  # the bench builds this twice (plain and ourvidz): the same weights
        with timed(times, "random init", device), on_device(device, dtype):
            unet = UNet2DConditionModel(**SDXL_UNET)
            vae = AutoencoderKL(**SDXL_VAE)
            te = CLIPTextModel(CLIPTextConfig(**CLIP_L))
            te2 = CLIPTextModelWithProjection(CLIPTextConfig(**CLIP_G))
            _finish([unet, vae, te, te2], device, dtype)
        pipe = StableDiffusionXLPipeline(unet=unet, vae=vae, text_encoder=te, text_encoder_2=te2, tokenizer=tok,
                                         tokenizer_2=tok2, scheduler=EulerDiscreteScheduler(**SDXL_SCHEDULER),
                                         add_watermarker=False)
        return SDXLFamily(pipe, device, dtype, times, RANDOM_IDENTITY)


class RandomWan:
    @classmethod
    def load(cls, source, device, dtype):
        from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
        from transformers import UMT5Config, UMT5EncoderModel

        from ourvidz.pipelines.demo import t5_tokenizer
        from ourvidz.pipelines.wan import WanFamily

        times = {}
        torch.manual_seed(0)
        with timed(times, "random init", device):
            with on_device(device, dtype):
                transformer = WanTransformer3DModel(**WAN_1_3B)
                text_encoder = UMT5EncoderModel(UMT5Config(**UMT5_XXL))
            with on_device(device, torch.float32):
                vae = AutoencoderKLWan()
            _finish([transformer, text_encoder], device, dtype)
            _finish([vae], device, torch.float32)
        scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0,
                                            num_train_timesteps=1000)
        pipe = WanPipeline(transformer=transformer, vae=vae, text_encoder=text_encoder, tokenizer=t5_tokenizer(),
                           scheduler=scheduler)
        return WanFamily(pipe, device, dtype, times, RANDOM_IDENTITY)


class RandomQwen:
    @classmethod
    def load(cls, source, device, dtype):
        from transformers import Qwen2Config, Qwen2ForCausalLM

        from ourvidz.pipelines.demo import qwen_tokenizer
        from ourvidz.pipelines.enhance import QwenEnhancer

        times = {}
        tok = qwen_tokenizer()
        torch.manual_seed(0)
        with timed(times, "random init", device), on_device(device, dtype):
            model = Qwen2ForCausalLM(Qwen2Config(**QWEN_7B, eos_token_id=tok.eos_token_id,
                                                 pad_token_id=tok.pad_token_id))
            _finish([model], device, dtype)
        # Sampled ids past the small tokenizer's vocabulary decode to nothing, so the text is
        # degenerate and every attempt runs to max_new_tokens: the enhancement's worst-case cost.
        return QwenEnhancer(model, tok, device, times, RANDOM_IDENTITY, demo=True)


RANDOM_LOADERS = {"sdxl": RandomSDXL, "wan": RandomWan, "qwen": RandomQwen}
