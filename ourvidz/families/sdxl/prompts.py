"""SDXL prompt encoding: prompts and negatives of any length, with weights, through compel.

Two routes, chosen per job:

- "diffusers": the prompt and the negative each fit in CLIP's 77 tokens and carry no weights (or
  weighting is off). StableDiffusionXLPipeline.encode_prompt runs exactly as before, so the
  embeddings, and the images, are the same bytes as without this module.
- "compel": anything longer, or weighted. Each text encoder (CLIP ViT-L, OpenCLIP bigG) embeds the
  text in 77-token chunks (BOS + up to 75 tokens + EOS, split at the last punctuation that fits,
  as A1111 splits at commas) through compel's EmbeddingsProvider with SDXL's embeddings (the
  penultimate hidden states, not normalised); the two are concatenated per token as diffusers
  does, and the prompt and the negative are padded to the same number of chunks with the empty
  prompt's chunk. Weights follow compel: a token of weight w is the empty prompt's embedding plus
  w times its difference from it; weights below 1 blend towards the text without the fragment.
  The pooled embedding (SDXL's second conditioning) is text_encoder_2's, from the first window
  of the text without weighting syntax, exactly as diffusers computes it; an empty negative is
  zeros when the model says force_zeros_for_empty_prompt, as in diffusers.

`encode` returns the embeddings and a record, per encoder, of the token count, the window, the
chunks (with their text), any truncation and the weighted fragments: the sidecar and the report
carry it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ourvidz.clip_tokens import token_ids
from ourvidz.weighting import WeightedText, parse

ENCODERS = ("text_encoder", "text_encoder_2")


@dataclass
class Encoded:
    prompt_embeds: torch.Tensor
    negative_prompt_embeds: torch.Tensor | None
    pooled_prompt_embeds: torch.Tensor
    negative_pooled_prompt_embeds: torch.Tensor | None
    record: dict[str, Any]


def count(tokenizer, text: str) -> int:
    """Tokens of the text including BOS and EOS, untruncated, without transformers' length warning."""
    return len(token_ids(tokenizer, text)) + 2


def _provider(tokenizer, text_encoder, device):
    from compel.embeddings_provider import EmbeddingsProvider, ReturnedEmbeddingsType, SplitLongTextMode

    return EmbeddingsProvider(
        tokenizer=tokenizer, text_encoder=text_encoder, truncate=False, device=device,
        returned_embeddings_type=ReturnedEmbeddingsType.PENULTIMATE_HIDDEN_STATES_NON_NORMALIZED,
        split_long_text_mode=SplitLongTextMode.PHRASES)


def _chunk_texts(tokenizer, ids: torch.Tensor, window: int) -> list[str]:
    specials = {tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id}
    flat = ids.reshape(-1).tolist()
    return [tokenizer.decode([t for t in flat[i : i + window] if t not in specials]).strip()
            for i in range(0, len(flat), window)]


def _pooled(pipe, text: str, device) -> torch.Tensor:
    """text_encoder_2's pooled embedding of the text's first window, as encode_prompt computes it."""
    tok = pipe.tokenizer_2
    ids = tok(text, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt").input_ids
    return pipe.text_encoder_2(ids.to(device), output_hidden_states=True)[0]


def _entry(tokenizer, text: WeightedText, chunks: list[str] | None, window: int) -> dict[str, Any]:
    tokens = sum(len(token_ids(tokenizer, t)) for t, _ in text.fragments) + 2 if text.fragments else 2
    return {"tokens": tokens, "window": window, "chunks": len(chunks) if chunks else 1,
            "chunk_texts": chunks, "truncated": False,
            "weighted": [[t, round(w, 4)] for t, w in text.weighted]}


def describe(pipe, text: WeightedText, chunks: dict[str, list[str]] | None) -> dict[str, Any]:
    """The record of one text: per encoder {tokens, window, chunks, chunk_texts, truncated, weighted}."""
    tokenizers = {"text_encoder": pipe.tokenizer, "text_encoder_2": pipe.tokenizer_2}
    window = pipe.tokenizer.model_max_length
    rec: dict[str, Any] = {name: _entry(tok, text, (chunks or {}).get(name), window) for name, tok in tokenizers.items()}
    pooled_tokens = count(pipe.tokenizer_2, text.plain)
    rec["text_encoder_2"] |= {"pooled_from": f"the first {window} tokens of the text without weighting syntax",
                              "pooled_truncated": pooled_tokens > window}
    if text.compel_text:
        rec["compel_text"] = text.compel_text  # the text after the A1111 -> compel rewrite
    return rec


def _embed(pipe, providers, text: WeightedText, device) -> tuple[torch.Tensor, dict[str, list[str]]]:
    """[1, chunks*77, 768+1280] for one text, and each encoder's chunk texts."""
    frags = [t for t, _ in text.fragments] or [""]
    weights = [w for _, w in text.fragments] or [1.0]
    parts, chunks = [], {}
    for name, provider in zip(ENCODERS, providers):
        emb, ids = provider.get_embeddings_for_weighted_prompt_fragments(
            [frags], [weights], should_return_tokens=True, device=device)
        parts.append(emb)
        chunks[name] = _chunk_texts(provider.tokenizer, ids, provider.max_token_count)
    if parts[0].shape[1] != parts[1].shape[1]:  # the two CLIP tokenizers share one BPE: never expected
        longest = max(p.shape[1] for p in parts)
        parts = [_pad(p, pr.empty_z.to(p), longest) for p, pr in zip(parts, providers)]
    return torch.cat(parts, dim=-1), chunks


def _pad(embeds: torch.Tensor, empty: torch.Tensor, length: int) -> torch.Tensor:
    while embeds.shape[1] < length:
        embeds = torch.cat([embeds, empty.expand(embeds.shape[0], -1, -1)], dim=1)
    return embeds


def choose_route(pipe, prompt: WeightedText, negative: WeightedText) -> str:
    window = pipe.tokenizer.model_max_length
    weighted = bool(prompt.weighted or negative.weighted)
    long_ = any(count(tok, t.plain) > window for tok in (pipe.tokenizer, pipe.tokenizer_2) for t in (prompt, negative)
                if t.source)
    return "compel" if weighted or long_ else "diffusers"


def encode(pipe, prompt: str, negative: str, *, weighting: bool, device, num_images: int, cfg: bool) -> Encoded:
    """SDXL's four conditioning tensors for one prompt, repeated for num_images, and their record."""
    wp, wn = parse(prompt, weighting), parse(negative, weighting)
    route = choose_route(pipe, wp, wn)
    record: dict[str, Any] = {"route": route, "weighting": weighting}
    if route == "diffusers":
        pe, npe, ppe, nppe = pipe.encode_prompt(
            wp.plain, device=device, num_images_per_prompt=num_images, do_classifier_free_guidance=cfg,
            negative_prompt=wn.plain or None)
        record["prompt"] = describe(pipe, wp, None)
        record["negative"] = describe(pipe, wn, None) if cfg and wn.source else None
        record["notes"] = _notes(record)
        return Encoded(pe, npe, ppe, nppe, record)

    providers = [_provider(pipe.tokenizer, pipe.text_encoder, device),
                 _provider(pipe.tokenizer_2, pipe.text_encoder_2, device)]
    pe, chunks = _embed(pipe, providers, wp, device)
    ppe = _pooled(pipe, wp.plain, device)
    record["prompt"] = describe(pipe, wp, chunks)
    npe = nppe = None
    record["negative"] = None
    if cfg:
        if not wn.source and pipe.config.force_zeros_for_empty_prompt:
            npe, nppe = torch.zeros_like(pe), torch.zeros_like(ppe)
        else:
            npe, nchunks = _embed(pipe, providers, wn, device)
            nppe = _pooled(pipe, wn.plain, device)
            record["negative"] = describe(pipe, wn, nchunks) if wn.source else None
            empty = torch.cat([p.empty_z.to(device) for p in providers], dim=-1).to(pe.dtype)
            length = max(pe.shape[1], npe.shape[1])
            pe, npe = _pad(pe, empty.to(pe.dtype), length), _pad(npe, empty.to(npe.dtype), length)
    record["embedded_tokens"] = pe.shape[1]  # both texts, after padding to the same number of chunks
    record["notes"] = _notes(record)

    dtype = pipe.text_encoder_2.dtype

    def repeat(x: torch.Tensor | None, pooled: bool = False) -> torch.Tensor | None:
        if x is None:
            return None
        x = x.to(dtype=dtype, device=device)
        return x.repeat(1, num_images).view(num_images, -1) if pooled else \
            x.repeat(1, num_images, 1).view(num_images, x.shape[1], -1)

    return Encoded(repeat(pe), repeat(npe), repeat(ppe, True), repeat(nppe, True), record)


def _notes(record: dict[str, Any]) -> list[str]:
    """One sentence per text that is longer than a window or weighted: what happened to it."""
    notes = []
    for what in ("prompt", "negative"):
        rec = record.get(what)
        if not rec:
            continue
        enc = rec["text_encoder"]
        if enc["chunks"] > 1:
            notes.append(f"sdxl: the {what} is {enc['tokens']} CLIP tokens, embedded whole in {enc['chunks']} chunks "
                         f"of {enc['window']}; the pooled embedding reads its first {enc['window']}")
        if enc["weighted"]:
            n = len(enc["weighted"])
            notes.append(f"sdxl: the {what} has {n} weighted fragment{'s' if n > 1 else ''}")
    return notes
