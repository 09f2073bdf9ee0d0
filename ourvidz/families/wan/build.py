"""Wan 2.1 builders: the tiny demo pipeline (a diffusers folder) and the full-size 1.3B
architecture with random weights."""

from __future__ import annotations

import torch

from ourvidz.families.base import timed
from ourvidz.families.builders import (
    CORPUS, RANDOM_IDENTITY, built_for_user_files, dtype_name, finish, on_device, safetensors_files,
)

WAN_1_3B = dict(patch_size=[1, 2, 2], num_attention_heads=12, attention_head_dim=128, in_channels=16, out_channels=16,
                text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True,
                qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024)
UMT5_XXL = dict(vocab_size=256384, d_model=4096, d_ff=10240, num_layers=24, num_heads=64, d_kv=64,
                feed_forward_proj="gated-gelu", relative_attention_num_buckets=32, pad_token_id=0, eos_token_id=1,
                decoder_start_token_id=0, tie_word_embeddings=False)
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


def build_demo(folder):
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


class RandomWan:
    @classmethod
    def load(cls, source, device, dtype):
        from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
        from transformers import UMT5Config, UMT5EncoderModel

        from ourvidz.families.wan.pipeline import WanFamily

        times = {}
        torch.manual_seed(0)
        with timed(times, "random init", device):
            with on_device(device, dtype):
                transformer = WanTransformer3DModel(**WAN_1_3B)
                text_encoder = UMT5EncoderModel(UMT5Config(**UMT5_XXL))
            with on_device(device, torch.float32):
                vae = AutoencoderKLWan()
            finish([transformer, text_encoder], device, dtype)
            finish([vae], device, torch.float32)
        scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0,
                                            num_train_timesteps=1000)
        pipe = WanPipeline(transformer=transformer, vae=vae, text_encoder=text_encoder, tokenizer=t5_tokenizer(),
                           scheduler=scheduler)
        return WanFamily(pipe, device, dtype, times, RANDOM_IDENTITY)


# Wan-AI/Wan2.1-T2V-1.3B-Diffusers ships float32 safetensors for every component (its conversion
# saved what it loaded: a 5.7 GB transformer, a 22.7 GB UMT5 encoder in shards, a 0.5 GB VAE); the
# loader casts the transformer and the encoder to the run's dtype. "half": those two in bfloat16, as
# a user who re-saved them at the precision they run in has them (14.7 GB); the VAE stays float32.
USER_DTYPES = {"hub": torch.float32, "half": torch.bfloat16}


def write_user_files(folder, size: str, device, precision: str) -> tuple[dict, dict]:
    """The model as `ourvidz models fetch` leaves it: a diffusers folder (save_pretrained, safetensors)."""
    dtype = USER_DTYPES[precision]
    pipe = built_for_user_files("wan", size, device, dtype)
    pipe.transformer.to(dtype=dtype)
    pipe.text_encoder.to(dtype=dtype)
    pipe.vae.to(dtype=torch.float32)
    pipe.save_pretrained(folder, safe_serialization=True)
    return ({"path": str(folder)}, {"route": "folder", "files": safetensors_files(folder), "dtype": {
        "transformer": dtype_name(dtype), "text_encoder": dtype_name(dtype), "vae": "float32"}})
