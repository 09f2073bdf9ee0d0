"""Secrets out of messages: Redis and callback URLs as they may be shown, and known secret values removed.

    mask_url("redis://app:hunter2@db:6379/0")          -> "redis://app:***@db:6379/0"
    mask_url("rediss://:hunter2@db/0")                   -> "rediss://:***@db/0"
    mask_url("https://ghp_abc@host/x")                   -> "https://***@host/x"   (a lone user is a token)
    mask_url("https://h/cb?job=1&token=abc&X-Amz-Signature=f00") -> "https://h/cb?job=1&token=***&X-Amz-Signature=***"

A query or fragment parameter is masked when its name (percent-decoded, lower case, without
'-' and '_') contains one of SECRET_WORDS: password, token, secret, key, signature (sig),
credential, auth, session, ... Masking more than needed is the safe mistake; a name like
"monkey" is masked too. Secrets in a URL's path (some webhook URLs carry one) cannot be told
from the rest: pass them to mask_text as known secrets (url_secrets finds only the forms above).

mask_url never raises and parses nothing strictly: a URL urllib would refuse is masked all the same.
"""

from __future__ import annotations

import re
from typing import Iterable
from urllib.parse import quote, unquote

MASK = "***"
SECRET_WORDS = ("pass", "pwd", "token", "secret", "key", "sig", "credential", "auth", "session", "cookie",
                "jwt", "bearer", "private", "otp", "code")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")


def is_secret_name(name: str) -> bool:
    """Whether a query parameter (or header) called `name` carries a secret."""
    norm = unquote(name).lower().replace("-", "").replace("_", "")
    return any(word in norm for word in SECRET_WORDS)


def _split(url: str) -> tuple[str, str, str]:
    """(scheme://, userinfo or '', the rest after '@'), for any text."""
    m = _SCHEME.match(url)
    if not m:
        return "", "", url
    head, rest = m.group(), url[m.end():]
    at = rest.find("@")
    if at < 0:
        return head, "", rest
    candidate = rest[:at]
    # Userinfo is what comes before the first '@' when no '/', '?' or '#' comes before it; or,
    # password first, when it holds a ':' ("u:pa/ss@host", ":123?@host": unencoded characters
    # that urllib would read as a path or a query). "h:8080/x?mail=a@b" and "u:p@h/to/@me" are
    # masked too much ("h:***@b", "u:***@me"): the safe mistake.
    ipv6_host = candidate.startswith("[") and "]" in candidate  # "[::1]:8080/@me": no userinfo
    if ipv6_host or (any(c in candidate for c in "/?#") and ":" not in candidate):
        return head, "", rest
    if ":" in candidate:  # a password may hold '@' too ("u:p@ss@host"): up to the last '@' before a query
        stop = min((i for i in (rest.find(c, at) for c in "?#") if i >= 0), default=len(rest))
        at = rest.rindex("@", 0, stop)
        candidate = rest[:at]
    return head, candidate, rest[at + 1:]


def _mask_userinfo(userinfo: str) -> str:
    user, colon, _ = userinfo.partition(":")
    return f"{user}:{MASK}" if colon else MASK


def _mask_params(part: str) -> str:
    items = []
    for item in part.split("&"):
        name, eq, value = item.partition("=")
        items.append(f"{name}={MASK}" if eq and value and is_secret_name(name) else item)
    return "&".join(items)


def _params(url: str) -> tuple[str, str, str]:
    """(before '?', query, fragment) of the text after the userinfo."""
    rest, hash_, fragment = url.partition("#")
    base, q, query = rest.partition("?")
    return base, (q and query), (hash_ and fragment)


def mask_url(url: str) -> str:
    """The URL with every secret it shows replaced by ***: userinfo and secret-named parameters."""
    if not isinstance(url, str):
        url = str(url)
    head, userinfo, rest = _split(url)
    out = head + (_mask_userinfo(userinfo) + "@" if userinfo else "")
    base, query, fragment = _params(rest)
    out += base
    if "?" in rest.partition("#")[0]:
        out += "?" + _mask_params(query)
    if "#" in rest:
        out += "#" + _mask_params(fragment)
    return out


def url_secrets(url: str | None) -> list[str]:
    """The secret values in a URL as written and percent-decoded: to give mask_text."""
    if not url:
        return []
    found: list[str] = []
    _, userinfo, rest = _split(url)
    if userinfo:
        user, colon, password = userinfo.partition(":")
        found.append(password if colon else user)
    _, query, fragment = _params(rest)
    for part in (query, fragment):
        for item in part.split("&") if part else ():
            name, eq, value = item.partition("=")
            if eq and value and is_secret_name(name):
                found.append(value)
    out: list[str] = []
    for value in found:
        for form in (value, unquote(value)):
            if form and form not in out:
                out.append(form)
    return out


def mask_text(text: str, secrets: Iterable[str] = (), *, min_len: int = 4) -> str:
    """The text with every known secret (as written, percent-encoded or -decoded) replaced by ***,
    then every URL in it masked by mask_url.

    Secrets shorter than min_len are left alone: masking every "ab" in a message would hide the
    message and not protect a two-letter password.
    """
    if not isinstance(text, str):
        text = str(text)
    forms: set[str] = set()
    for secret in secrets or ():
        if not secret:
            continue
        for form in (secret, quote(secret, safe=""), quote(secret), unquote(secret)):
            if len(form) >= min_len:
                forms.add(form)
    if forms:
        pattern = "|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True))
        text = re.sub(pattern, MASK, text)
    return _URL_IN_TEXT.sub(lambda m: mask_url(m.group()), text)
