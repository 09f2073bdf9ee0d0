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
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable

CLIP_WINDOW = 77  # BOS + 75 + EOS
CLIP_DIST = "clip-anytorch"
_VOCAB_IN_WHEEL = "clip/bpe_simple_vocab_16e6.txt.gz"


@dataclass(frozen=True)
class TokenCounter:
    """count(text) -> tokens including BOS and EOS, untruncated."""

    count: Callable[[str], int]
    source: str
    exact: bool


class ClipVocabMissing(RuntimeError):
    pass


def clip_vocab_file() -> Path | None:
    try:
        path = Path(metadata.distribution(CLIP_DIST).locate_file(_VOCAB_IN_WHEEL))
    except metadata.PackageNotFoundError:
        return None
    return path if path.is_file() else None


def clip_bpe_path() -> Path:
    """OpenAI's CLIP BPE file from the installed clip-anytorch wheel, or a clear error."""
    path = clip_vocab_file()
    if path is None:
        raise ClipVocabMissing(
            f"The CLIP BPE vocabulary ({_VOCAB_IN_WHEEL}) comes from the '{CLIP_DIST}' package, which is not "
            f"installed: pip install --no-deps {CLIP_DIST}==2.6.0 (scripts/setup.sh does)")
    return path


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    rest = [b for b in range(256) if b not in bs]
    return dict(zip(bs + rest, map(chr, bs + [256 + n for n in range(len(rest))])))


def openai_merges(vocab_gz: Path) -> list[tuple[str, str]]:
    with gzip.open(vocab_gz, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    return [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]


def clip_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    """Token -> id in openai/CLIP simple_tokenizer.py's order, so the ids are the real ones."""
    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}


def clip_tokenizer_files(vocab_gz: Path, out_dir: Path) -> tuple[Path, Path]:
    """vocab.json + merges.txt (49408 tokens), the files a CLIP tokenizer folder holds."""
    merges = openai_merges(vocab_gz)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps(clip_vocab(merges), ensure_ascii=False), encoding="utf-8")
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n", encoding="utf-8")
    return out / "vocab.json", out / "merges.txt"


def clip_tokenizer(vocab_gz: Path, pad_token: str | None = None):
    """A transformers CLIPTokenizer from OpenAI's BPE file. transformers 5 ignores vocab_file= and
    merges_file= given by keyword (a 3-token vocabulary results), so the data is passed as vocab=/merges=;
    model_max_length must be set by hand or it is 1e30."""
    from transformers import CLIPTokenizer

    merges = openai_merges(vocab_gz)
    extra = {"pad_token": pad_token} if pad_token else {}
    return CLIPTokenizer(vocab=clip_vocab(merges), merges=merges, model_max_length=CLIP_WINDOW, **extra)


@functools.lru_cache(maxsize=1)
def vocab_tokenizer():
    """A CLIP tokenizer from the clip-anytorch vocabulary, or None."""
    gz = clip_vocab_file()
    return clip_tokenizer(gz) if gz else None


def token_ids(tokenizer, text: str) -> list[int]:
    """The text's token ids without BOS/EOS, untruncated and without transformers' "Token indices
    sequence length is longer than the specified maximum sequence length" warning: counting a text
    longer than the window is the point here (transformers 5's tokenize() does warn)."""
    return tokenizer(text, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]


def from_tokenizer(tokenizer, source: str) -> TokenCounter:
    specials = tokenizer.num_special_tokens_to_add()

    def count(text: str) -> int:
        return len(token_ids(tokenizer, text)) + specials

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
