"""Counting CLIP tokens, for SDXL's 77-token window.

The count comes from the best tokenizer at hand: the loaded model's own, else a CLIP BPE
tokenizer built from OpenAI's vocabulary file that ships inside the clip-anytorch wheel (read
as a file; the package is never imported, it would pull in torchvision), else an estimate that
never undercounts.
"""

from __future__ import annotations

import functools
import gzip
import json
import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable

CLIP_WINDOW = 77  # BOS + 75 + EOS
_VOCAB_IN_WHEEL = "clip/bpe_simple_vocab_16e6.txt.gz"


@dataclass(frozen=True)
class TokenCounter:
    """count(text) -> tokens including BOS and EOS, untruncated."""

    count: Callable[[str], int]
    source: str
    exact: bool


def clip_vocab_file() -> Path | None:
    try:
        path = Path(metadata.distribution("clip-anytorch").locate_file(_VOCAB_IN_WHEEL))
    except metadata.PackageNotFoundError:
        return None
    return path if path.is_file() else None


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def write_clip_tokenizer_files(vocab_gz: Path, out_dir: Path) -> tuple[Path, Path]:
    """vocab.json + merges.txt exactly as OpenAI's simple_tokenizer builds its vocabulary."""
    lines = gzip.open(vocab_gz, "rt", encoding="utf-8").read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    vocab = list(bytes_to_unicode().values())
    vocab += [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab_path, merges_path = out_dir / "vocab.json", out_dir / "merges.txt"
    vocab_path.write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}), encoding="utf-8")
    merges_path.write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n", encoding="utf-8")
    return vocab_path, merges_path


def cache_dir() -> Path:
    return Path(os.environ.get("OURVIDZ_CACHE", Path.home() / ".cache" / "ourvidz"))


@functools.lru_cache(maxsize=1)
def vocab_tokenizer():
    """A transformers CLIPTokenizer from the clip-anytorch vocabulary, or None."""
    gz = clip_vocab_file()
    if gz is None:
        return None
    from transformers import CLIPTokenizer

    out = cache_dir() / "clip-tokenizer"
    if not (out / "merges.txt").is_file():
        tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")
        write_clip_tokenizer_files(gz, tmp)
        try:
            tmp.rename(out)
        except OSError:  # another process made it first
            pass
    return CLIPTokenizer(str(out / "vocab.json"), str(out / "merges.txt"), model_max_length=CLIP_WINDOW)


def from_tokenizer(tokenizer, source: str) -> TokenCounter:
    specials = tokenizer.num_special_tokens_to_add()

    def count(text: str) -> int:  # tokenize() does not warn about the model's max length
        return len(tokenizer.tokenize(text)) + specials

    return TokenCounter(count, source, exact=True)


def estimate(text: str) -> int:
    """An upper bound: every BPE token covers at least one byte of the lowercased text."""
    return sum(len(ch.encode("utf-8")) for ch in text.lower() if ch not in " \t\n\r") + 2


def best_counter(model_tokenizer=None) -> TokenCounter:
    if model_tokenizer is not None:
        return from_tokenizer(model_tokenizer, "the model's CLIP tokenizer")
    tok = vocab_tokenizer()
    if tok is not None:
        return from_tokenizer(tok, "CLIP BPE vocabulary (clip-anytorch)")
    return TokenCounter(estimate, "estimate (no CLIP tokenizer found; never undercounts)", exact=False)
