"""The prompt safety check: sexual content combined with any sign of a minor is refused.

It runs before any model loads, in every entry point (generate, batch, worker, enhance), and
again on an enhanced prompt. It is deliberately not user-tunable, so it lives in code. Matching
is on whole words, case-insensitive, plurals included; ages are read from "15 year old",
"15yo", "aged 15" and the like.
"""

from __future__ import annotations

import re

from ourvidz.errors import PromptRefused

_SEXUAL = r"""
nude|nudes|nudity|naked|topless|bottomless|undress\w*|striptease|stripper\w*|nsfw|porn\w*|xxx|explicit|
sex|sexy|sexual\w*|erotic\w*|lewd|hentai|fetish\w*|bdsm|bondage|kink\w*|orgasm\w*|
masturbat\w*|intercourse|blowjob\w*|handjob\w*|cum|cumshot|creampie|genital\w*|penis\w*|
vagina\w*|pussy|pussies|boobs?|breasts?|nipples?|tits|titties|
butt\s*plug|lingerie|seductive\w*|aroused|arousal|horny|spread\s+legs|fuck\w*
"""
_MINOR = r"""
child|children|childlike|childish|kid|kids|kiddie|minor|minors|underage\w*|under\s*age|
teen|teens|teenage\w*|preteen\w*|tween|tweens|adolescen\w*|juvenile|pubescent|prepubescent|
schoolgirl\w*|schoolboy\w*|school\s+girl\w*|school\s+boy\w*|loli\w*|shota\w*|toddler\w*|
infant\w*|baby\s+girl|baby\s+boy|little\s+girl\w*|little\s+boy\w*|young\s+girl\w*|young\s+boy\w*|
girl\s+child|boy\s+child|middle\s+school\w*|elementary\s+school\w*|grade\s+school\w*|
jailbait|barely\s+legal|pedo\w*|paedo\w*
"""


def _words(pattern: str) -> re.Pattern:
    alternatives = "|".join(p.strip() for p in pattern.split("|") if p.strip())
    return re.compile(rf"(?<![a-z0-9])(?:{alternatives})(?![a-z0-9])", re.IGNORECASE)


SEXUAL = _words(_SEXUAL)
MINOR = _words(_MINOR)
AGE = re.compile(
    r"(?<!\d)(\d{1,2})\s*(?:-|\s)?\s*(?:y/?o|yrs?\.?\s*old|years?[\s-]*old|year[\s-]*old)(?![a-z])"
    r"|\baged?\s+(\d{1,2})\b",
    re.IGNORECASE,
)


def minor_terms(text: str) -> list[str]:
    found = [m.group(0).lower() for m in MINOR.finditer(text)]
    for m in AGE.finditer(text):
        age = int(m.group(1) or m.group(2))
        if age < 18:
            found.append(m.group(0).lower())
    return found


def sexual_terms(text: str) -> list[str]:
    return [m.group(0).lower() for m in SEXUAL.finditer(text)]


def check_prompt(prompt: str, what: str = "prompt") -> None:
    """Raise PromptRefused if the text pairs sexual content with a minor."""
    minors = minor_terms(prompt)
    sexual = sexual_terms(prompt)
    if minors and sexual:
        raise PromptRefused(
            f"{what} refused: it combines sexual content ({sexual[0]!r}) with a reference to a minor "
            f"({minors[0]!r}); ourvidz never generates this"
        )
