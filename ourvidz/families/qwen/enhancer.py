"""Qwen 2.5 prompt enhancement: a base causal LM rewrites a short prompt into a detailed, cinematic one.

The instruction, the sampling settings and the limits are data (presets/enhancement.yaml, read by
ourvidz.enhancement). Enhancement never fails a job: a time limit with nothing usable, an empty or
degenerate result, a result the safety check refuses or an error while generating is a failed
attempt, and after the last one the original prompt is used, with a warning in the report.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from ourvidz.enhancement import EnhancementSettings
from ourvidz.errors import BadInput, PromptRefused, WeightsError, one_line
from ourvidz.families.base import module_bytes, sync, weight_bytes
from ourvidz.progress import phase
from ourvidz.families.qwen import FAMILY
from ourvidz.safety import check_prompt
from ourvidz.families.weights import ModelSource, identity, local_dir

DEMO_NOTE = "demo: random weights; the enhanced prompt is noise"
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\ufffd]")  # not \t or \n: a blank line is an end marker


# ---------------------------------------------------------------- cleaning and checks
def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def _grams(seq, n: int) -> list[tuple]:
    return [tuple(seq[i : i + n]) for i in range(len(seq) - n + 1)]


def repeat_ratio(text: str, n: int) -> float:
    """The share of repeated word n-grams (character 5-grams for text with few words)."""
    words = _words(text)
    grams = _grams(words, n) if len(words) >= 2 * n + 2 else _grams(text.replace(" ", ""), 5)
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def instruction_overlap(text: str, instruction: str) -> float:
    """The share of the text's word 4-grams that come from the instruction."""
    grams = _grams(_words(text), 4)
    known = set(_grams(_words(instruction), 4))
    return sum(g in known for g in grams) / len(grams) if grams else 0.0


def clean(raw: str, settings: EnhancementSettings, unfinished: bool = False) -> str:
    """The model's continuation -> one line of prompt text: no echoed cue or instruction lines,
    cut at the first end marker; an unfinished text is cut back to its last full sentence."""
    head, tail = settings.parts
    cue = tail.strip()
    text = _CONTROL.sub("", raw.replace("\r\n", "\n")).lstrip()
    while cue and text.lower().startswith(cue.lower()):
        text = text[len(cue) :].lstrip()
    cuts = [i for i in (text.find(m) for m in settings.end_markers) if i >= 0]
    if cuts:
        text, unfinished = text[: min(cuts)], False
    for line in head.splitlines():  # a base model sometimes repeats lines of the instruction
        if len(line.strip()) >= 20:
            text = text.replace(line.strip(), " ")
    text = " ".join(text.split()).strip(" \"'“”")
    if unfinished:
        end = max(text.rfind(c) for c in ".!?")
        if end + 1 >= settings.min_chars:
            text = text[: end + 1]
    return text


def problem(text: str, original: str, settings: EnhancementSettings) -> str | None:
    """Why a cleaned result is unusable, or None."""
    if not text:
        return "empty result"
    if len(text) < settings.min_chars:
        return f"too short ({len(text)} characters, minimum {settings.min_chars})"
    if _words(text) == _words(original):
        return "the original prompt, unchanged"
    ratio = repeat_ratio(text, settings.repeat_ngram)
    if ratio > settings.max_repeat_ratio:
        return f"repetitive ({ratio:.0%} repeated {settings.repeat_ngram}-grams)"
    overlap = instruction_overlap(text, settings.parts[0])
    if overlap > settings.max_instruction_overlap:
        return f"an echo of the instruction ({overlap:.0%} of it copied)"
    return None


# ---------------------------------------------------------------- result
@dataclass
class EnhancementResult:
    original: str
    text: str  # the prompt to use: the enhanced one, or the original after a fallback
    seconds: float
    attempts: int
    fallback: bool
    warning: str
    new_tokens: int  # of the attempt whose text is used (0 after a fallback)
    truncated: bool  # the user's prompt was cut to fit max_input_tokens
    input_tokens: int
    prompt_tokens: int  # the user's prompt before any cut
    attempt_log: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"chars": {"original": len(self.original), "text": len(self.text)}}


class _Limits(StoppingCriteria):
    """Stops generation at the time limit or once the new text holds an end marker."""

    def __init__(self, tokenizer, start: int, markers: list[str], seconds: float):
        self.tokenizer, self.start, self.markers, self.seconds = tokenizer, start, markers, seconds
        self.t0 = time.perf_counter()
        self.timed_out = self.hit_marker = False

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        if time.perf_counter() - self.t0 > self.seconds:
            self.timed_out = True
        else:
            text = self.tokenizer.decode(input_ids[0, self.start :], skip_special_tokens=False).lstrip()
            self.hit_marker = any(m in text for m in self.markers)
        return torch.full((input_ids.shape[0],), self.timed_out or self.hit_marker, dtype=torch.bool,
                          device=input_ids.device)


# ---------------------------------------------------------------- the model
def source_folder(source: ModelSource) -> Path:
    if source.is_demo:
        from ourvidz.families.builders import demo_folder

        return demo_folder(FAMILY.name)
    folder = local_dir(source.path, source.allow_download, FAMILY.name)
    if not (folder / "config.json").is_file():
        raise WeightsError(f"{folder} is not a transformers model folder (no config.json); point 'qwen: path:' "
                           "at Qwen2.5-7B (a folder or the hub id Qwen/Qwen2.5-7B)")
    return folder


class QwenEnhancer:
    family = FAMILY.name

    def __init__(self, model, tokenizer, device: torch.device, load_times: dict[str, float], identity: dict,
                 demo: bool = False):
        self.model, self.tokenizer, self.device = model, tokenizer, device
        self.load_times = load_times
        self.identity = identity
        self.demo = demo

    @classmethod
    def load(cls, source: ModelSource, device: torch.device, dtype: torch.dtype) -> QwenEnhancer:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder = source_folder(source)
        times: dict[str, float] = {}
        t0 = time.perf_counter()
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        times["tokenizer"] = time.perf_counter() - t0
        kwargs: dict[str, Any] = {"dtype": dtype, "local_files_only": True}
        if device.type == "cuda":
            kwargs["device_map"] = str(device)  # straight onto the GPU, no CPU copy first
        t0 = time.perf_counter()
        size = weight_bytes(folder)
        with phase("load model", total=size or None, unit="B") as ph:
            model = AutoModelForCausalLM.from_pretrained(folder, **kwargs).eval()
            if device.type != "cuda":
                model.to(device)
            sync(device)
            ph.update(size)
        times["model"] = time.perf_counter() - t0
        return cls(model, tokenizer, device, times, identity(source, folder), demo=source.is_demo)

    def nbytes(self) -> int:
        return module_bytes(self.model)

    def to(self, device: torch.device) -> None:
        self.model.to(device)
        self.device = device

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def build_input(self, prompt: str, settings: EnhancementSettings) -> tuple[list[int], bool, int]:
        """(instruction + prompt + cue token ids, whether the prompt was cut, the prompt's own tokens)."""
        head, tail = settings.parts
        if head.endswith(" "):  # BPE joins a word with the space before it: " two", not " " + "two"
            head, prompt = head[:-1], " " + prompt
        h, p, t = self._encode(head), self._encode(prompt), self._encode(tail)
        room = settings.max_input_tokens - len(h) - len(t)
        if room < 1:
            raise BadInput(f"the enhancement instruction alone is {len(h) + len(t)} tokens; max_input_tokens "
                           f"({settings.max_input_tokens}) leaves no room for the prompt")
        return h + p[:room] + t, len(p) > room, len(p)

    def _attempt(self, ids: list[int], seed: int, s: EnhancementSettings) -> tuple[str, int, bool, bool]:
        """(raw continuation, new tokens, timed out, finished: ended by EOS or an end marker)."""
        input_ids = torch.tensor([ids], device=self.device)
        limits = _Limits(self.tokenizer, len(ids), s.end_markers, s.timeout_seconds)
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.inference_mode():
            torch.manual_seed(seed)
            out = self.model.generate(
                input_ids=input_ids, attention_mask=torch.ones_like(input_ids), do_sample=True,
                temperature=s.temperature, top_p=s.top_p, top_k=s.top_k, repetition_penalty=s.repetition_penalty,
                max_new_tokens=s.max_new_tokens, stopping_criteria=StoppingCriteriaList([limits]),
                pad_token_id=self.tokenizer.eos_token_id if self.tokenizer.pad_token_id is None
                else self.tokenizer.pad_token_id)
        new = out[0, len(ids) :]
        finished = limits.hit_marker or (not limits.timed_out and len(new) < s.max_new_tokens)
        return self.tokenizer.decode(new, skip_special_tokens=True), len(new), limits.timed_out, finished

    def enhance(self, prompt: str, seed: int, settings: EnhancementSettings) -> EnhancementResult:
        t_start = time.perf_counter()
        ids, truncated, prompt_tokens = self.build_input(prompt, settings)
        log: list[dict[str, Any]] = []
        failures: list[str] = []
        for i in range(settings.attempts):
            t0, entry = time.perf_counter(), {"seed": seed + i}
            try:
                raw, n, timed_out, finished = self._attempt(ids, seed + i, settings)
                entry |= {"new_tokens": n, "timed_out": timed_out}
                text = clean(raw, settings, unfinished=not finished)
                why = problem(text, prompt, settings)
                if why is None:
                    check_prompt(text, what="enhanced prompt")
                elif timed_out:
                    why = f"time limit of {settings.timeout_seconds:g} s reached after {n} tokens, nothing usable: {why}"
            except PromptRefused:
                why = "the safety check refused the result"
            except torch.OutOfMemoryError:
                torch.cuda.empty_cache()
                why = "out of GPU memory"
            except Exception as exc:  # noqa: BLE001 - the job goes on with the original prompt
                why = f"error while generating: {one_line(exc)}"
            entry |= {"seconds": time.perf_counter() - t0, "outcome": why or "ok"}
            log.append(entry)
            if why is None:
                warning = (f"time limit of {settings.timeout_seconds:g} s reached; the enhanced prompt was cut"
                           if timed_out else "")
                return self._result(prompt, text, t_start, log, False, warning, n, truncated, len(ids), prompt_tokens)
            failures.append(f"attempt {i + 1}: {why}")
        warning = f"prompt enhancement failed ({'; '.join(failures)}); the original prompt was used"
        return self._result(prompt, prompt, t_start, log, True, warning, 0, truncated, len(ids), prompt_tokens)

    def _result(self, original, text, t_start, log, fallback, warning, new_tokens, truncated, input_tokens,
                prompt_tokens) -> EnhancementResult:
        return EnhancementResult(
            original=original, text=text, seconds=time.perf_counter() - t_start, attempts=len(log),
            fallback=fallback, warning=warning, new_tokens=new_tokens, truncated=truncated,
            input_tokens=input_tokens, prompt_tokens=prompt_tokens, attempt_log=log,
            note=DEMO_NOTE if self.demo and not fallback else "")
