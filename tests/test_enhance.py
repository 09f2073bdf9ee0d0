"""Qwen prompt enhancement (issue 4): settings, the cleaner, the tiny demo model, and the four
7b_enhanced job types end to end in demo mode. (The memory policy it shares with the Wan models,
ModelCache, is tests/test_model_cache.py.)"""

import json
from pathlib import Path

import pytest
import torch
import yaml
from conftest import JOB_TYPES, ok, run

from ourvidz.datafiles import builtin_presets_dir
from ourvidz.enhancement import EnhancementSettings, load_settings
from ourvidz.errors import BadInput
from ourvidz.families.qwen.enhancer import QwenEnhancer, clean, problem, repeat_ratio
from ourvidz.families.weights import ModelSource
from ourvidz.plan import plan_job
from ourvidz.presets import load_preset

ENHANCED = [t for t in JOB_TYPES if load_preset(t).enhance]  # the four 7b_enhanced job types
PROMPT = "two dancers on a rooftop"


@pytest.fixture(scope="module")
def settings() -> EnhancementSettings:
    return load_settings()


@pytest.fixture(scope="module")
def enhancer(tmp_path_factory) -> QwenEnhancer:
    return QwenEnhancer.load(ModelSource("qwen", "demo", "demo"), torch.device("cpu"), torch.float32)


def presets_dir_with(tmp_path: Path, **changes) -> Path:
    """A presets folder whose enhancement.yaml is the built-in one with some values replaced or added."""
    data = yaml.safe_load((builtin_presets_dir() / "enhancement.yaml").read_text()) | changes
    folder = tmp_path / "presets"
    folder.mkdir(exist_ok=True)
    (folder / "enhancement.yaml").write_text(yaml.safe_dump(data))
    return folder


# ------------------------------------------------------------------ settings
def test_settings_follow_the_spec(settings):
    s = settings
    assert (s.temperature, s.top_p, s.top_k, s.repetition_penalty) == (0.7, 0.9, 40, 1.1)
    assert (s.max_new_tokens, s.max_input_tokens, s.timeout_seconds, s.attempts) == (150, 1024, 60, 2)
    head, tail = s.parts
    for section in ("visual details", "lighting and atmosphere", "camera work", "artistic style", "technical quality"):
        assert section in head
    assert head.rstrip().endswith("Original prompt:") and tail.strip() == "Enhanced prompt:"
    assert "<|im_start|>" not in s.instruction  # plain text for the base model, no chat template


@pytest.mark.parametrize("change, expected", [
    ({"temperature": -1}, "field 'temperature': Input should be greater than 0"),
    ({"instruction": "no placeholder here"}, "field 'instruction': must contain {prompt} exactly once"),
    ({"instruction": "Rewrite: {prompt}"}, "field 'instruction': must end with a cue"),
    ({"end_markers": []}, "field 'end_markers': List should have at least 1 item"),
    ({"bogus": 1}, "field 'bogus': unknown field"),
])
def test_bad_enhancement_file_names_file_and_field(tmp_path, change, expected):
    folder = presets_dir_with(tmp_path, **change)
    with pytest.raises(BadInput) as exc:
        load_settings(folder)
    message = str(exc.value)
    assert str(folder / "enhancement.yaml") in message and expected in message and "\n" not in message


def preset_copy(tmp_path: Path, job_type: str, extra: str) -> Path:
    folder = tmp_path / "presets"
    folder.mkdir(exist_ok=True)
    (folder / f"{job_type}.yaml").write_text((builtin_presets_dir() / f"{job_type}.yaml").read_text() + extra)
    return folder


def test_preset_overrides_enhancement_settings(tmp_path):
    folder = preset_copy(tmp_path, "video7b_fast_enhanced", "enhancement:\n  max_new_tokens: 20\n  temperature: 0.5\n")
    plan = plan_job("video7b_fast_enhanced", PROMPT, seed=1, out_dir=tmp_path / "o", presets_dir=folder)
    s = plan.enhancement_settings()
    assert (s.max_new_tokens, s.temperature, s.top_k) == (20, 0.5, 40)
    assert plan.to_dict()["enhancement_settings"]["max_new_tokens"] == 20


@pytest.mark.parametrize("extra, expected", [
    ("enhancement:\n  temprature: 0.5\n", "field 'enhancement.temprature': unknown field"),
    ("enhancement:\n  top_p: 2\n", "field 'enhancement.top_p': Input should be less than or equal to 1"),
    ("enhancement:\n  instruction: 'x'\n", "field 'enhancement.instruction': must contain {prompt}"),
    ("enhancement: 3\n", "field 'enhancement'"),
])
def test_bad_preset_override_is_one_line(tmp_path, extra, expected):
    folder = preset_copy(tmp_path, "video7b_fast_enhanced", extra)
    with pytest.raises(BadInput) as exc:
        load_preset("video7b_fast_enhanced", folder)
    assert "video7b_fast_enhanced.yaml" in str(exc.value) and expected in str(exc.value)


def test_plans_resolve_settings_only_when_enhancing(tmp_path):
    on = plan_job("image7b_fast_enhanced", PROMPT, seed=1, out_dir=tmp_path / "a")
    off = plan_job("image7b_fast_enhanced", PROMPT, seed=1, out_dir=tmp_path / "b", enhance=False)
    forced = plan_job("sdxl_image_fast", PROMPT, seed=1, out_dir=tmp_path / "c", enhance=True)
    assert on.enhance and on.to_dict()["enhancement_settings"]["timeout_seconds"] == 60
    assert not off.enhance and off.to_dict()["enhancement_settings"] is None
    assert forced.enhance and forced.enhancement_settings().attempts == 2


# ------------------------------------------------------------------ cleaning and degenerate results
def test_clean_strips_cue_and_cuts_at_end_markers(settings):
    raw = ' Enhanced prompt: "Two dancers  leap across\ta rooftop at dusk, warm rim light."\n\nOriginal prompt: a cat'
    assert clean(raw, settings) == "Two dancers leap across a rooftop at dusk, warm rim light."
    assert clean("A red balloon rises. Original prompt: x", settings) == "A red balloon rises."
    assert clean("A red\x00 balloon\ufffd rises slowly over the old town at dawn.<|endoftext|>junk", settings) \
        == "A red balloon rises slowly over the old town at dawn."


def test_clean_removes_echoed_instruction_lines(settings):
    echoed = settings.parts[0].splitlines()[0]
    text = clean(f"{echoed} A lone dancer spins on a wet rooftop under neon signs, slow dolly shot.", settings)
    assert text == "A lone dancer spins on a wet rooftop under neon signs, slow dolly shot."


def test_clean_cuts_unfinished_text_back_to_a_sentence(settings):
    raw = "Two dancers leap across a rooftop at dusk, warm rim light. The camera circles them as the"
    assert clean(raw, settings, unfinished=True) == "Two dancers leap across a rooftop at dusk, warm rim light."
    assert clean(raw, settings, unfinished=False) == raw  # finished by EOS: kept whole
    assert clean("too short. and then it goes on without an end", settings, unfinished=True).endswith("end")


GOOD = ("Two dancers in flowing white silk leap across a rain-slicked rooftop at dusk, the city glowing below; "
        "warm rim light, a slow dolly shot at eye level, 35mm film look, sharp focus, 4K.")


@pytest.mark.parametrize("text, why", [
    ("", "empty"),
    ("a rooftop", "too short"),
    ("Two dancers on a rooftop!!! ", "too short"),
    ("two dancers on a rooftop " * 1, "too short"),
    ("the dancers dance on the roof " * 12, "repetitive"),
    ("a" * 200, "repetitive"),
    ("abcdef" * 30, "repetitive"),
    ("the subjects, their clothing and materials, colours, textures and the setting, light sources, time of day, "
     "weather and mood, shot size, angle, lens and camera movement", "echo of the instruction"),
    (GOOD, None),
])
def test_degenerate_results(settings, text, why):
    found = problem(text, PROMPT, settings)
    assert (found is None) if why is None else (why in found)


def test_unchanged_prompt_is_a_failure(settings):
    long = "Two dancers in white on a rooftop at night with city lights behind them"
    assert "unchanged" in problem(long.upper() + ".", long, settings)


def test_repeat_ratio():
    assert repeat_ratio(GOOD, 3) == 0.0
    assert repeat_ratio("one two three " * 10, 3) > 0.8


# ------------------------------------------------------------------ the tiny demo model
def test_deterministic_for_a_seed(enhancer, settings):
    a = enhancer.enhance(PROMPT, seed=11, settings=settings)
    b = enhancer.enhance(PROMPT, seed=11, settings=settings)
    c = enhancer.enhance(PROMPT, seed=12, settings=settings)
    assert not a.fallback and a.warning == "" and a.new_tokens > 0 and a.text != PROMPT
    assert a.text == b.text and a.new_tokens == b.new_tokens
    assert c.text != a.text
    d = a.to_dict()
    for key in ("original", "text", "seconds", "attempts", "fallback", "warning", "new_tokens", "truncated"):
        assert key in d
    assert d["original"] == PROMPT and d["truncated"] is False and d["attempts"] == 1
    assert "noise" in d["note"]  # demo output is labelled


def test_global_rng_untouched(enhancer, settings):
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    enhancer.enhance(PROMPT, seed=5, settings=settings)
    assert torch.equal(torch.rand(3), expected)


def test_long_prompt_is_truncated_instruction_kept(enhancer, settings):
    long = " ".join(["a slow cinematic shot of a city street at night with neon lights and rain"] * 200)
    ids, truncated, prompt_tokens = enhancer.build_input(long, settings)
    assert truncated and prompt_tokens > settings.max_input_tokens and len(ids) == settings.max_input_tokens
    assert enhancer.tokenizer.decode(ids).endswith("Enhanced prompt:")  # the cue survives the cut
    small = settings.model_copy(update={"max_input_tokens": 600})
    result = enhancer.enhance(long, seed=1, settings=small)
    assert result.truncated and result.input_tokens == 600 and result.prompt_tokens == prompt_tokens
    assert result.original == long  # a fallback would use the whole prompt, not the cut one
    short = enhancer.enhance(PROMPT, seed=1, settings=small)
    assert not short.truncated and short.input_tokens < 600


def test_instruction_longer_than_the_input_limit(enhancer, settings):
    with pytest.raises(BadInput, match="max_input_tokens"):
        enhancer.enhance(PROMPT, seed=1, settings=settings.model_copy(update={"max_input_tokens": 16}))


def test_time_limit_falls_back_to_the_original(enhancer, settings):
    result = enhancer.enhance(PROMPT, seed=7, settings=settings.model_copy(update={"timeout_seconds": 1e-6}))
    assert result.fallback and result.text == PROMPT and result.new_tokens == 0
    assert result.attempts == 2 and [a["seed"] for a in result.attempt_log] == [7, 8]
    assert all(a["timed_out"] for a in result.attempt_log)
    assert "time limit" in result.warning and "original prompt was used" in result.warning


def test_retry_after_a_degenerate_attempt(enhancer, settings, monkeypatch):
    outputs = iter([("loop loop loop " * 20, 60, False, True), (GOOD + "\n\nOriginal prompt: x", 50, False, True)])
    monkeypatch.setattr(enhancer, "_attempt", lambda ids, seed, s: next(outputs))
    result = enhancer.enhance(PROMPT, seed=3, settings=settings)
    assert not result.fallback and result.text == GOOD and result.attempts == 2 and result.new_tokens == 50
    assert "repetitive" in result.attempt_log[0]["outcome"] and result.attempt_log[1]["outcome"] == "ok"


@pytest.mark.parametrize("output, why", [
    (("A nude teen poses on a rooftop at night, cinematic light, sharp focus.", 20, False, True), "safety check"),
    (RuntimeError("CUDA error: device-side assert triggered"), "error while generating: RuntimeError"),
])
def test_refused_or_crashed_attempts_fall_back(enhancer, settings, monkeypatch, output, why):
    def attempt(ids, seed, s):
        if isinstance(output, Exception):
            raise output
        return output

    monkeypatch.setattr(enhancer, "_attempt", attempt)
    result = enhancer.enhance(PROMPT, seed=3, settings=settings)
    assert result.fallback and result.text == PROMPT and why in result.warning and result.attempts == 2


# ------------------------------------------------------------------ end to end through the CLI (demo)
def generate(*args):
    return ok("generate", *args, "--demo", "--seed", "5")


def sidecar_of(out: Path) -> dict:
    report = json.loads((out / "report.json").read_text())
    side = next(p for p in report["files"] if p.endswith(".json"))
    return json.loads((out / side).read_text())


@pytest.mark.parametrize("job_type", ENHANCED)
def test_enhanced_job_types_end_to_end(tmp_path, job_type):
    out = tmp_path / job_type
    result = generate(job_type, PROMPT, "--out", str(out))
    report = json.loads((out / "report.json").read_text())
    enh = report["enhancement"]
    assert enh["original"] == PROMPT and not enh["fallback"] and enh["new_tokens"] > 0 and enh["seconds"] > 0
    assert {"qwen tokenizer", "qwen model"} <= set(report["load"]) and "qwen" in report["models"]
    assert "enhance prompt" in result.output and "enhanced prompt:" in result.output
    side = sidecar_of(out)
    assert side["plan"]["prompt"] == PROMPT and side["enhancement"]["original"] == PROMPT
    assert side["prompt_used"] == enh["text"] != PROMPT
    assert side["plan"]["enhancement_settings"]["max_new_tokens"] == 150
    assert (out / ("video.mp4" if "video" in job_type else "image-00.png")).is_file()


def test_no_enhance_skips_qwen(tmp_path):
    out = tmp_path / "off"
    generate("video7b_fast_enhanced", PROMPT, "--out", str(out), "--no-enhance", "--frames", "5")
    report = json.loads((out / "report.json").read_text())
    assert report["enhancement"] is None and "qwen" not in report["models"]
    assert not any(k.startswith("qwen") for k in report["load"])
    assert sidecar_of(out)["prompt_used"] == PROMPT


def test_enhance_on_an_sdxl_job_records_clip_tokens(tmp_path):
    out = tmp_path / "sdxl"
    generate("sdxl_image_fast", PROMPT, "--out", str(out), "--enhance", "--num-images", "1", "--steps", "2")
    enh = json.loads((out / "report.json").read_text())["enhancement"]
    assert not enh["fallback"] and enh["clip_window"] == 77 and enh["clip_tokens"] > 2
    assert enh["clip_truncated"] == (enh["clip_tokens"] > 77)


def test_forced_failure_falls_back_and_still_writes_the_video(tmp_path):
    folder = presets_dir_with(tmp_path, timeout_seconds=0.000001)
    out = tmp_path / "fail"
    result = generate("video7b_fast_enhanced", PROMPT, "--out", str(out), "--presets-dir", str(folder), "--frames", "5")
    report = json.loads((out / "report.json").read_text())
    enh = report["enhancement"]
    assert enh["fallback"] and enh["text"] == PROMPT and "time limit" in enh["warning"]
    assert "warning:" in result.output and "fallback: original prompt used" in result.output
    assert (out / "video.mp4").stat().st_size > 0 and sidecar_of(out)["prompt_used"] == PROMPT


def test_enhance_command(tmp_path):
    result = run("enhance", PROMPT, "--demo", "--seed", "3")
    assert result.exit_code == 0, result.output
    assert "enhanced prompt" in result.output and "new tokens" in result.output and "seed 3" in result.output
    assert "noise" in result.output  # the demo is labelled
    again = run("enhance", PROMPT, "--demo", "--seed", "3")
    assert again.stdout.split("\n")[:3] == result.stdout.split("\n")[:3]  # same seed, same text (stdout: no timings)
    folder = presets_dir_with(tmp_path, timeout_seconds=0.000001)
    failed = run("enhance", PROMPT, "--demo", "--presets-dir", folder, "--job-type", "sdxl_image_fast")
    assert failed.exit_code == 0 and "fallback" in failed.output and "CLIP tokens" in failed.output


@pytest.mark.parametrize("args, code", [
    (["enhance", "   ", "--demo"], 2),
    (["enhance", "nude teen on a beach", "--demo"], 3),
    (["enhance", PROMPT, "--demo", "--job-type", "nope"], 2),
])
def test_enhance_command_errors(args, code):
    assert run(*args).exit_code == code
