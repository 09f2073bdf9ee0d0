"""Issue #13 item 1: long SDXL prompts and negatives in 77-token chunks, A1111 and compel weights,
--no-weighting, per-encoder token records, Wan's 512-token window, and the counter's warning."""

import json
from types import SimpleNamespace

import pytest
import torch

from ourvidz.clip_tokens import best_counter, clip_tokenizer, clip_vocab_file, from_tokenizer
from ourvidz.negative import build_negative, load_vocabulary
from ourvidz.weighting import parse, to_compel

VOCAB = load_vocabulary()
CPU = torch.device("cpu")

# The issue's acceptance texts: ~120 CLIP tokens with (word:1.4) weights, and a ~90-token negative.
PROMPT_120 = (
    "a portrait of a young woman in a (red silk dress:1.4) standing on a rooftop garden at golden hour, "
    "soft warm light, city skyline behind her, (detailed face:1.2), flowing hair moved by the wind, "
    "[background crowd], bokeh lights, shallow depth of field, 85mm lens, film grain, kodak portra colors, "
    "gentle smile, hands resting on a stone balustrade, potted lemon trees, string lights overhead, "
    "pigeons on the ledge, a distant cathedral dome, long shadows across the terracotta tiles, "
    "high detail, sharp focus, cinematic composition")
NEGATIVE_90 = (
    "cartoon, anime, 3d render, painting, sketch, drawing, illustration, (oversaturated colors:1.3), "
    "harsh flash lighting, overexposed sky, underexposed face, lens flare, chromatic aberration, vignette, "
    "plastic skin, waxy skin, airbrushed skin, doll face, cross-eyed, lazy eye, crooked teeth, "
    "duplicate person, cropped head, out of frame, tilted horizon")


# ---------------------------------------------------------------- syntax (no model)
@pytest.mark.parametrize("a1111, compel", [
    ("(red dress:1.4)", "(red dress)1.4"),
    ("(cat)", "(cat)1.1"),
    ("((cat))", "((cat)1.1)1.1"),
    ("[cat]", "(cat)0.909091"),
    ("(x: 0.5)", "(x)0.5"),
    ("a \\(literal\\) x", "a \\(literal\\) x"),
    ("a (red dress)1.3 cat++", "a (red dress)1.3 cat++"),  # compel's own syntax is left alone
    ("smile :)", "smile :\\)"),  # unmatched brackets are literal
    ("a (b", "a \\(b"),
    ("plain text", "plain text"),
])
def test_a1111_to_compel(a1111, compel):
    assert to_compel(a1111) == compel


@pytest.mark.parametrize("text, expected", [
    ("a (red dress:1.4) and [background]", [("a", 1.0), ("red dress", 1.4), ("and", 1.0), ("background", 1 / 1.1)]),
    ("((cat))", [("cat", 1.21)]),
    ("(a (b:1.5))", [("a", 1.1), ("b", 1.65)]),
    ("cat++ in a hat", [("cat", 1.21), ("in a hat", 1.0)]),
    ("word-- x", [("word", 0.81), ("x", 1.0)]),
    ("a \\(literal\\) x", [("a (literal) x", 1.0)]),
])
def test_weights_a1111_and_compel(text, expected):
    got = parse(text).fragments
    assert [t for t, _ in got] == [t for t, _ in expected]
    assert [w for _, w in got] == pytest.approx([w for _, w in expected], abs=1e-6)


def test_no_weighting_is_literal():
    w = parse("a (red dress:1.4) cat++", weighting=False)
    assert w.fragments == [("a (red dress:1.4) cat++", 1.0)] and w.weighted == [] and w.plain == w.source
    plain = parse("a red fox in snow")  # no syntax: exactly the text
    assert plain.plain == "a red fox in snow" and plain.compel_text == ""


# ---------------------------------------------------------------- the token counter
def test_counter_does_not_warn_past_the_window(monkeypatch):
    import transformers.tokenization_utils_base as base

    said = []
    monkeypatch.setattr(base.logger, "warning", lambda msg, *a, **k: said.append(str(msg)))
    tok = clip_tokenizer(clip_vocab_file())  # fresh: transformers warns once per tokenizer
    text = "word " * 200
    assert from_tokenizer(tok, "test").count(text) == 202
    assert not [m for m in said if "sequence length is longer" in m]
    tok.tokenize(text)  # the old way did warn
    assert [m for m in said if "sequence length is longer" in m]


# ---------------------------------------------------------------- the negative builder
@pytest.fixture(scope="module")
def clip():
    return best_counter()


@pytest.mark.parametrize("words", [70, 90, 300])
def test_long_user_negative_never_refused_or_dropped(words, clip):
    user = ", ".join(f"ugly{i}" for i in range(words // 2))
    neg = build_negative("sdxl", user, counter=clip)
    assert neg.text.startswith(neg.user_text + ", ")  # the user's text, whole and first
    terms = neg.text.split(", ")
    assert all(t in terms for t in VOCAB.lists["critical"])
    assert neg.auto_window == "own"
    auto = neg.text[len(neg.user_text) + 2:]
    assert clip.count(auto) <= 77  # the auto terms keep their budget, in a window of their own
    assert neg.tokens == clip.count(neg.text) > 77 and neg.user_tokens == clip.count(neg.user_text)


def test_short_user_negative_shares_the_window_as_before(clip):
    neg = build_negative("sdxl", "cartoon", counter=clip)
    assert neg.auto_window == "shared" and neg.tokens <= 77
    assert "nsfw (6 of 21)" in neg.included


def test_no_auto_negative_long_text_accepted(clip):
    neg = build_negative("sdxl", "word " * 90, auto=False, counter=clip)
    assert neg.text == " ".join(["word"] * 90) and neg.tokens == 92


def test_issue_negative_90_tokens(clip):
    neg = build_negative("sdxl", NEGATIVE_90, counter=clip)
    assert neg.user_text == NEGATIVE_90 and neg.auto_window == "own"


# ---------------------------------------------------------------- SDXL encoding on the demo model
@pytest.fixture(scope="module")
def sdxl():
    from ourvidz.model_cache import ModelCache

    model, _ = ModelCache(demo=True, device="cpu").get("sdxl")
    return model.pipe


def _encode(pipe, prompt, negative, weighting=True, n=1, cfg=True):
    from ourvidz.families.sdxl.prompts import encode

    with torch.inference_mode():
        return encode(pipe, prompt, negative, weighting=weighting, device=CPU, num_images=n, cfg=cfg)


def _reference(pipe, prompt, negative, n=1, cfg=True):
    with torch.inference_mode():
        return pipe.encode_prompt(prompt, device=CPU, num_images_per_prompt=n, do_classifier_free_guidance=cfg,
                                  negative_prompt=negative or None)


def _tensors(enc):
    return [enc.prompt_embeds, enc.negative_prompt_embeds, enc.pooled_prompt_embeds, enc.negative_pooled_prompt_embeds]


@pytest.mark.parametrize("prompt, negative, weighting", [
    ("a red fox in snow", "cartoon, blurry", True),  # no syntax: the default keeps today's embeddings
    ("a red fox in snow", "cartoon, blurry", False),
    ("a photo (1990s) of a [red] fox", "cartoon", False),  # --no-weighting: brackets are literal text
    ("a red fox in snow", "", True),  # an empty negative: zeros, as diffusers does
])
def test_short_unweighted_is_byte_identical(sdxl, prompt, negative, weighting):
    enc = _encode(sdxl, prompt, negative, weighting, n=2)
    assert enc.record["route"] == "diffusers"
    for ours, theirs in zip(_tensors(enc), _reference(sdxl, prompt, negative, n=2)):
        assert torch.equal(ours, theirs)
    assert enc.record["prompt"]["text_encoder"]["chunks"] == 1
    assert enc.record["prompt"]["text_encoder"]["truncated"] is False


def test_long_weighted_prompt_and_negative_are_chunked(sdxl, clip):
    negative = build_negative("sdxl", NEGATIVE_90, counter=clip).text
    enc = _encode(sdxl, PROMPT_120, negative, n=2)
    rec = enc.record
    assert rec["route"] == "compel"
    for what in ("prompt", "negative"):
        for name in ("text_encoder", "text_encoder_2"):
            e = rec[what][name]
            assert e["chunks"] >= 2 and len(e["chunk_texts"]) == e["chunks"] and e["truncated"] is False
            assert e["tokens"] > 77 and e["window"] == 77
    assert rec["prompt"]["text_encoder"]["weighted"] == [["red silk dress", 1.4], ["detailed face", 1.2],
                                                         ["background crowd", 0.9091]]
    assert rec["negative"]["text_encoder"]["weighted"] == [["oversaturated colors", 1.3]]
    assert "pigeons on the ledge" in rec["prompt"]["text_encoder"]["chunk_texts"][-1]  # nothing cut
    pe, npe, ppe, nppe = _tensors(enc)
    assert pe.shape == npe.shape and pe.shape[0] == 2 and pe.shape[1] % 77 == 0
    assert pe.shape[1] == 77 * max(rec["prompt"]["text_encoder"]["chunks"], rec["negative"]["text_encoder"]["chunks"])
    # The pooled embedding is diffusers' own, of the text without the weighting syntax.
    plain = parse(PROMPT_120).plain
    assert torch.equal(ppe, _reference(sdxl, plain, "", n=2)[2])
    assert any("chunks" in note for note in rec["notes"])


def test_weights_change_the_embedding(sdxl):
    plain = _encode(sdxl, "a cat in a hat", "x").prompt_embeds
    up = _encode(sdxl, "a (cat:1.4) in a hat", "x")
    assert up.record["route"] == "compel" and not torch.equal(plain, up.prompt_embeds)
    off = _encode(sdxl, "a (cat:1.4) in a hat", "x", weighting=False)
    assert off.record["route"] == "diffusers" and off.record["prompt"]["text_encoder"]["weighted"] == []


# ---------------------------------------------------------------- Wan's 512-token window
def test_wan_records_truncation():
    from transformers import AutoTokenizer

    from ourvidz.families.base import GenerationRequest
    from ourvidz.families.builders import demo_folder
    from ourvidz.families.wan.pipeline import WanFamily

    tok = AutoTokenizer.from_pretrained(demo_folder("wan"), subfolder="tokenizer")
    fake = SimpleNamespace(pipe=SimpleNamespace(tokenizer=tok))

    def record(prompt, negative="blurry"):
        req = GenerationRequest(prompt=prompt, negative_prompt=negative, width=16, height=16, steps=1,
                                guidance=5.0, seeds=[0])
        return WanFamily.text_record(fake, req)

    short = record("a lighthouse in a storm")
    assert short["prompt"]["text_encoder"]["truncated"] is False and short["notes"] == []
    long = record("lighthouse " * 600)
    enc = long["prompt"]["text_encoder"]
    assert enc["tokens"] > 512 and enc["window"] == 512 and enc["truncated"] is True
    assert "cut" in long["notes"][0] and long["negative"]["text_encoder"]["truncated"] is False


# ---------------------------------------------------------------- end to end (the issue's "done when")
@pytest.mark.slow
def test_demo_run_120_token_weighted_prompt_90_token_negative(tmp_path):
    from typer.testing import CliRunner

    from ourvidz.cli import app

    result = CliRunner().invoke(app, ["generate", "sdxl_image_fast", PROMPT_120, "--negative", NEGATIVE_90, "--demo",
                                      "--steps", "1", "--num-images", "1", "--seed", "3", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "warn" not in result.stderr.lower() and "truncat" not in result.stderr.lower()
    meta = json.loads((tmp_path / "image-00.json").read_text())
    assert meta["plan"]["weighting"] is True
    te = meta["text_encoding"]
    assert te["route"] == "compel"
    assert te["prompt"]["text_encoder"]["chunks"] == 2 and te["prompt"]["text_encoder"]["weighted"][0] == ["red silk dress", 1.4]
    assert te["negative"]["text_encoder_2"]["chunks"] >= 2
    assert meta["plan"]["negative_prompt"]["user_text"] == NEGATIVE_90
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["text_encoding"]["prompt"]["text_encoder"]["tokens"] > 77


def test_no_weighting_flag_is_a_plan_field(tmp_path):
    from ourvidz.plan import plan_job

    plan = plan_job("sdxl_image_fast", "a (cat:1.4)", weighting=False, out_dir=tmp_path, demo=True)
    assert plan.to_dict()["weighting"] is False
    assert plan_job("sdxl_image_fast", "a (cat:1.4)", out_dir=tmp_path, demo=True).weighting is True
