import pytest
from hypothesis import given, settings, strategies as st

from ourvidz.clip_tokens import best_counter, clip_vocab_file, estimate, vocab_tokenizer
from ourvidz.negative import build_negative, load_vocabulary

VOCAB = load_vocabulary()


@pytest.fixture(scope="module")
def clip():
    assert clip_vocab_file() is not None, "install the clip-anytorch wheel with --no-deps (scripts/setup.sh does)"
    return best_counter()


def test_real_clip_tokenizer_ids():
    assert vocab_tokenizer()("a photo of a cat")["input_ids"] == [49406, 320, 1125, 539, 320, 2368, 49407]


def test_sdxl_strategy_categories(clip):
    neg = build_negative("sdxl", counter=clip)
    assert neg.tokens <= 77 and clip.count(neg.text) == neg.tokens
    anatomical = [c for c in neg.included if c.startswith("anatomical.")]
    artifacts = [c for c in neg.included if c.startswith("artifacts.")]
    assert anatomical == ["anatomical.hands", "anatomical.fingers", "anatomical.face", "anatomical.body"]
    assert len(artifacts) == 3
    assert "nsfw (6 of 21)" in neg.included
    for term in VOCAB.lists["critical"] + VOCAB.lists["nsfw"][:6]:
        assert term in neg.text.split(", ")
    assert any(c.startswith("quality") for c in neg.included)  # room was left for some quality terms


def test_wan_strategies(clip):
    img = build_negative("wan_image", counter=clip)
    assert len([c for c in img.included if c.startswith("anatomical.")]) == 6
    assert len([c for c in img.included if c.startswith("artifacts.")]) == 4
    assert sum(t in img.text.split(", ") for t in VOCAB.lists["nsfw"]) == 8
    vid = build_negative("wan_video", counter=clip)
    terms = vid.text.split(", ")
    every = VOCAB.lists["critical"] + VOCAB.lists["video"] + VOCAB.lists["nsfw"] + VOCAB.lists["quality"]
    every += [t for g in VOCAB.groups.values() for ts in g.values() for t in ts]
    assert set(every) == set(terms) and vid.dropped == []


@pytest.mark.parametrize("strategy", ["sdxl", "wan_image", "wan_video"])
def test_minor_exclusion_always_in(strategy, clip):
    terms = build_negative(strategy, counter=clip).text.split(", ")
    assert {"child", "underage", "minor"} <= set(terms)


def test_user_text_first_no_duplicates_deterministic(clip):
    a = build_negative("sdxl", "ugly,  Bad Anatomy, cartoon", counter=clip)
    assert a.text.startswith("ugly, Bad Anatomy, cartoon, ")
    terms = [t.lower() for t in a.text.split(", ")]
    assert len(terms) == len(set(terms))
    assert build_negative("sdxl", "ugly,  Bad Anatomy, cartoon", counter=clip).text == a.text


def test_no_auto_negative(clip):
    assert build_negative("sdxl", "ugly", auto=False, counter=clip).text == "ugly"
    assert build_negative("wan_video", auto=False, counter=clip).text == ""


def test_user_text_too_long_is_accepted(clip):  # issue #13: SDXL negatives are chunked, never refused
    neg = build_negative("sdxl", "word " * 80, counter=clip)
    assert neg.user_text == " ".join(["word"] * 80) and neg.auto_window == "own"


words = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=60)


@settings(max_examples=150, deadline=None)
@given(user=st.lists(words, max_size=12).map(", ".join))
def test_sdxl_budget_never_exceeded(user):
    clip = best_counter()
    neg = build_negative("sdxl", user, counter=clip)
    auto = neg.text[len(neg.user_text) + 2:] if neg.auto_window == "own" else neg.text
    assert clip.count(auto) <= 77  # the auto terms' budget; the user's text is never cut or refused
    for term in VOCAB.lists["critical"]:
        assert term.lower() in neg.text.lower()


@settings(max_examples=150, deadline=None)
@given(text=st.text(max_size=200))
def test_estimate_never_undercounts(text):
    assert estimate(text) >= best_counter().count(text)


def test_estimate_keeps_budget():
    from ourvidz.clip_tokens import TokenCounter
    neg = build_negative("sdxl", counter=TokenCounter(estimate, "estimate", exact=False))
    assert best_counter().count(neg.text) <= estimate(neg.text) <= 77
