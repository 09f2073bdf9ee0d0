"""Qwen 2.5 builders: a tiny causal LM with its tokenizer (a transformers folder) and the full-size
7B architecture with random weights."""

from __future__ import annotations

import json

import torch

from ourvidz.families.base import timed
from ourvidz.families.builders import (
    CORPUS, RANDOM_IDENTITY, built_for_user_files, dtype_name, finish, on_device, safetensors_files,
)

QWEN_7B = dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
               num_key_value_heads=4, vocab_size=152064, rope_theta=1e6, rms_norm_eps=1e-6, tie_word_embeddings=False,
               max_position_embeddings=32768)


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


def build_demo(folder):
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


class RandomQwen:
    @classmethod
    def load(cls, source, device, dtype):
        from transformers import Qwen2Config, Qwen2ForCausalLM

        from ourvidz.families.qwen.enhancer import QwenEnhancer

        times = {}
        tok = qwen_tokenizer()
        torch.manual_seed(0)
        with timed(times, "random init", device), on_device(device, dtype):
            model = Qwen2ForCausalLM(Qwen2Config(**QWEN_7B, eos_token_id=tok.eos_token_id,
                                                 pad_token_id=tok.pad_token_id))
            finish([model], device, dtype)
        # Sampled ids past the small tokenizer's vocabulary decode to nothing, so the text is
        # degenerate and every attempt runs to max_new_tokens: the enhancement's worst-case cost.
        return QwenEnhancer(model, tok, device, times, RANDOM_IDENTITY, demo=True)


USER_DTYPES = {"hub": torch.bfloat16, "half": torch.bfloat16}  # Qwen/Qwen2.5-7B ships bfloat16


def write_user_files(folder, size: str, device, precision: str) -> tuple[dict, dict]:
    """The model as users have it: a transformers folder (save_pretrained, safetensors) with its tokenizer."""
    dtype = USER_DTYPES[precision]
    model, tokenizer = built_for_user_files("qwen", size, device, dtype)
    model.to(dtype=dtype).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return ({"path": str(folder)}, {"route": "folder", "files": safetensors_files(folder), "dtype": dtype_name(dtype)})
