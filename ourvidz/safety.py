"""The prompt safety check: sexual content combined with any sign of a minor is refused.

It runs before any model loads, in every entry point (generate, batch, worker, enhance), and
again on an enhanced prompt. A negative prompt is not checked: it names what must NOT appear, so
"child" there is protective. The check is deliberately not user-tunable: its word lists are data
in the built-in presets/safety_terms.yaml, never read from the user's presets search path.

How a prompt is read (normalise(), then _views()):
  1. NFKC (full-width and styled letters become plain ones); format characters (zero-width
     spaces and joiners, soft hyphens) and stray combining marks are dropped; casefolded.
  2. Letters of other scripts that imitate Latin ones (Cyrillic "с" in "сhild") become the Latin
     letter, from the Unicode confusables data shipped by confusable-homoglyphs. This form keeps
     accents: terms that only count with them ("niña", not the name Nina) are matched there.
  3. Transliterated to ASCII by anyascii ("zwölf" -> "zwolf"); pictographs are dropped first
     (anyascii spells them out: the 18+ sign would read "underage").
  4. Views of the ASCII text: leetspeak undone in words that mix letters with digits or symbols
     ("k1d", "s3xy"; "1" read both as i and as l), and letters spelled out one at a time
     ("n.u.d.e", "n u d e", "k-i-d") joined. Ages are read from a view where number words are
     digits ("twelve-year-old", "doce años", "zwölf Jahre"), never from the leetspeak ones.
Phrases in which a listed word means something else ("breast cancer", "nude-colored", "minor
key", "no nudity") are blanked before matching, only where they occur. A minor term misspelt by
one swapped, missing or extra letter ("chlid") counts; a changed letter does not ("chili").
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from dataclasses import dataclass
from importlib import resources

from anyascii import anyascii

from ourvidz.errors import PromptRefused
from ourvidz.datafiles import builtin_presets_dir, read_yaml

TERMS_FILE = "safety_terms.yaml"
MINOR_AGE = 18
_B, _E = r"(?<![a-z0-9])", r"(?![a-z0-9])"  # word edges on folded text
_SEP = r"[\s_-]+"
_LEET = {"i": str.maketrans("01345@$7!", "oieasasti"), "l": str.maketrans("01345@$7!", "oleasasti")}
_LEET_TOKEN = re.compile(r"(?:[a-z0-9@$]|!(?=[a-z0-9@$]))+")  # "k!d", not the "!" ending "kids!"
# A run of 3+ single characters with the same separator each time: "n.u.d.e", "k i d".
_SPELLED = re.compile(r"(?<![a-z0-9@$])[a-z0-9@$](?:([^a-z0-9@$]{1,3})[a-z0-9@$](?![a-z0-9@$]))(?:\1[a-z0-9@$](?![a-z0-9@$]))+")
_WORD = re.compile(r"[a-z]{5,}")


@functools.cache
def _homoglyphs() -> dict[str, str]:
    """Non-Latin character -> the lowercase ASCII letter it imitates."""
    text = resources.files("confusable_homoglyphs").joinpath("confusables.json").read_text("utf-8")
    table = {}
    for char, entries in json.loads(text).items():
        if len(char) != 1 or char.isascii() or unicodedata.name(char, "").startswith("LATIN"):
            continue
        for entry in entries:
            letter = _ascii_letter(entry["c"])
            if letter:
                table[char] = letter
                break
    return table


def _ascii_letter(s: str) -> str | None:
    if len(s) != 1:
        return None
    if s.isascii():
        return s.lower() if s.isalpha() else None
    # Small capitals (Cyrillic "н" imitates "ʜ") are as good as the letter.
    m = re.fullmatch(r"LATIN LETTER SMALL CAPITAL ([A-Z])", unicodedata.name(s, ""))
    return m.group(1).lower() if m else None


def normalise(text: str) -> tuple[str, str]:
    """The text as (Latin look-alikes mapped, accents kept; plain ASCII), both lowercase."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(c for c in text if unicodedata.category(c) not in ("Cf", "Mn", "Me"))
    table = _homoglyphs()
    latin = " ".join("".join(table.get(c, c) for c in text.casefold()).split())
    plain = "".join(" " if unicodedata.category(c) == "So" else c for c in latin)
    return latin, " ".join(anyascii(plain).lower().split())


def _fold(term: str) -> str:
    return normalise(term)[1]


def _term(term: str, latin: bool = False) -> str:
    """A term of the data file as a regex body: spaces and hyphens match separators, a trailing
    * any word ending, and an s/es plural is allowed."""
    star = term.endswith("*")
    text = term.rstrip("*")
    text = normalise(text)[0] if latin else _fold(text)
    body = _SEP.join(re.escape(w) for w in text.replace("-", " ").split())
    return body + (r"[a-z]*" if star else r"(?:e?s)?")


def _words(terms, latin: bool = False, edges: bool = True) -> re.Pattern:
    bodies = sorted({_term(t, latin) for t in terms}, key=len, reverse=True)
    alternatives = "|".join(bodies) or "(?!)"
    return re.compile(rf"{_B}(?:{alternatives}){_E}" if edges else f"(?:{alternatives})")


def _edits(word: str) -> set[str]:
    """Words one swapped, missing or extra letter away (not a changed one)."""
    splits = [(word[:i], word[i:]) for i in range(len(word) + 1)]
    swapped = {a + b[1] + b[0] + b[2:] for a, b in splits if len(b) > 1}
    missing = {a + b[1:] for a, b in splits if b}
    extra = {a + c + b for a, b in splits for c in "abcdefghijklmnopqrstuvwxyz"}
    return swapped | missing | extra


@dataclass(frozen=True)
class _Rules:
    sexual: re.Pattern
    minor: re.Pattern
    sexual_inside: re.Pattern  # no word edges: for letters spelled out and run together
    minor_inside: re.Pattern
    accented: re.Pattern  # minor terms matched on the accent-keeping form
    benign: re.Pattern
    benign_latin: re.Pattern
    misspelt: dict[str, str]
    numbers: re.Pattern
    number_values: dict[str, int]
    ages: re.Pattern


@functools.cache
def rules() -> _Rules:
    data = read_yaml(builtin_presets_dir() / TERMS_FILE)
    sexual = [t for terms in data["sexual"].values() for t in terms]
    minor = [t for terms in data["minor"].values() for t in terms]
    patterns = "|".join(data["minor_patterns"])
    minor_re = _words(minor)
    minor_re = re.compile(f"{minor_re.pattern}|{_B}(?:{patterns})")

    exact = {_fold(t) for t in minor if "*" not in t} | {_fold(t) for t in data["not_misspellings"]}
    misspelt = {}
    for term in data["misspelled"]:
        for variant in _edits(_fold(term)):
            if len(variant) >= 5 and variant not in exact:
                misspelt.setdefault(variant, term)

    values = {_fold(w).replace("-", " "): int(n) for lang in data["numbers"].values() for w, n in lang.items()}
    units = "|".join(_term(w).removesuffix(r"(?:e?s)?") for w in sorted(values, key=len, reverse=True))
    tens = "|".join(re.escape(_fold(w)) for lang in data["tens"].values() for w in lang)
    joiners = "|".join(map(re.escape, data["tens_joiners"]))
    numbers = re.compile(
        rf"{_B}(?P<tens>(?:{tens})(?:{_SEP}(?:{joiners}){_SEP}|[\s-]*))?(?P<unit>{units})(?=jahr|[^a-z]|$)"
    )
    n = r"(?<!\d)(\d{1,3})(?!\d)"
    ages = [p.replace("{n}", n) for lang in data["age_patterns"].values() for p in lang]
    return _Rules(
        sexual=_words(sexual),
        minor=minor_re,
        sexual_inside=_words([t for t in sexual if len(_fold(t)) >= 3], edges=False),
        minor_inside=_words([t for t in minor if len(_fold(t)) >= 3], edges=False),
        accented=_words(data["accent_required"], latin=True),
        benign=_words(data["benign"]),
        benign_latin=_words(data["benign"], latin=True),
        misspelt=misspelt,
        numbers=numbers,
        number_values=values,
        ages=re.compile("|".join(f"(?:{p})" for p in ages)),
    )


def _digits(r: _Rules, text: str) -> str:
    def repl(m: re.Match) -> str:
        if m.group("tens"):
            return m.group(0)
        return str(r.number_values[re.sub(_SEP, " ", m.group("unit"))])

    return r.numbers.sub(repl, text)


def _unleet(text: str, table: dict) -> str:
    def repl(m: re.Match) -> str:
        token = m.group(0)
        return token.translate(table) if re.search("[a-z]", token) else token

    return _LEET_TOKEN.sub(repl, text)


def _views(plain: str) -> tuple[list[str], list[str]]:
    """Word views of the ASCII text, and the runs of spelled-out letters joined."""
    views = [plain, *(_unleet(plain, t) for t in _LEET.values())]
    blobs = []
    for view in list(views):
        spelled = []

        def join(m: re.Match) -> str:
            letters = re.sub(r"[^a-z0-9@$]", "", m.group(0))
            spelled.extend([letters, *(letters.translate(t) for t in _LEET.values())])
            return " " + letters + " "

        joined = _SPELLED.sub(join, view)
        if spelled:
            views += [joined, *(_unleet(joined, t) for t in _LEET.values())]
            blobs += spelled
    return list(dict.fromkeys(views)), list(dict.fromkeys(blobs))


def _found(text: str) -> tuple[list[str], list[str]]:
    """(sexual terms, signs of a minor) found in the text, as matched after normalising."""
    r = rules()
    latin, plain = normalise(text)
    views, blobs = _views(r.benign.sub(" ", plain))
    views = [r.benign.sub(" ", v) for v in views]
    sexual = [m.group(0) for v in views for m in r.sexual.finditer(v)]
    minors = [m.group(0) for v in views for m in r.minor.finditer(v)]
    sexual += [m.group(0) for b in blobs for m in r.sexual_inside.finditer(b)]
    minors += [m.group(0) for b in blobs for m in r.minor_inside.finditer(b)]
    minors += [w for v in views for w in _WORD.findall(v) if w in r.misspelt]
    minors += [m.group(0) for m in r.accented.finditer(r.benign_latin.sub(" ", latin))]
    for m in r.ages.finditer(_digits(r, r.benign.sub(" ", plain))):
        if int(next(g for g in m.groups() if g)) < MINOR_AGE:
            minors.append(m.group(0))
    return list(dict.fromkeys(sexual)), list(dict.fromkeys(minors))


def sexual_terms(text: str) -> list[str]:
    return _found(text)[0]


def minor_terms(text: str) -> list[str]:
    return _found(text)[1]


def check_prompt(prompt: str, what: str = "prompt") -> None:
    """Raise PromptRefused if the text pairs sexual content with a minor."""
    sexual, minors = _found(prompt)
    if minors and sexual:
        raise PromptRefused(
            f"{what} refused: it combines sexual content ({sexual[0]!r}) with a reference to a minor "
            f"({minors[0]!r}); ourvidz never generates this"
        )
