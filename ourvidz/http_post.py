"""POSTing a JSON body (the completion callback) with the standard library, and saying truthfully what happened.

- Only http:// and https:// URLs: check_callback_url refuses the rest (file://, ftp://, data:, a
  URL without a host, with spaces or control characters, over 2048 characters) with a one-line
  BadInput, at start-up; post_json checks again and returns a failed Delivery, without raising.
- Redirects are refused, never followed: urllib would follow a 301/302/303 as a GET without the
  body (the receiver never gets it) and a 307/308 to wherever the Location says, carrying the job's
  result to another host. A callback URL should be the receiver's final one; the Delivery says
  "HTTP 302 redirect to URL refused" so the operator can fix it.
- Retries with exponential backoff (backoff, 2*backoff, 4*backoff ...) on network errors, timeouts,
  5xx, 408 and 429; any other status is the receiver's answer and is not sent again.
- `timeout` is urllib's: for connecting and for each read, not the whole exchange.
- Delivery.detail is one line and never shows the URL's secrets (the Location is masked too):
  "HTTP 200 after 1 attempt", "HTTP 200 after 3 attempts", "HTTP 302 redirect to https://x/ refused",
  "HTTP 404 Not Found, not retried: <the body's start>", "HTTP 503 after 4 attempts",
  "connection refused after 4 attempts", "timed out after 4 attempts".
"""

from __future__ import annotations

import http.client
import socket
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Callable, Mapping
from urllib.parse import urlsplit

from ourvidz.errors import BadInput
from ourvidz.jsonio import short
from ourvidz.redact import mask_url

SCHEMES = ("http", "https")
MAX_URL = 2048
RETRY_STATUS = frozenset({408, 429})  # and every 5xx
DEFAULT_HEADERS = {"Content-Type": "application/json", "User-Agent": "ourvidz"}


@dataclass(frozen=True)
class Delivery:
    ok: bool  # a 2xx answer
    status: int | None  # the last HTTP status; None when no answer came
    attempts: int  # requests sent (0: the URL was refused before sending)
    detail: str  # one line, for the job's record and the log

    def __str__(self) -> str:
        return ("delivered: " if self.ok else "not delivered: ") + self.detail


def check_callback_url(url: str, what: str = "callback URL") -> str:
    """The URL, if a callback may be POSTed to it; else a one-line BadInput (the URL masked)."""
    if not isinstance(url, str) or not url:
        raise BadInput(f"{what}: empty")
    shown = short(mask_url(url), 120)
    if len(url) > MAX_URL:
        raise BadInput(f"{what} {shown}: longer than {MAX_URL} characters")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise BadInput(f"{what} {shown}: spaces or control characters (percent-encode them)")
    if not url.isascii():
        raise BadInput(f"{what} {shown}: not ASCII (percent-encode the path, punycode the host)")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
    except ValueError as exc:
        raise BadInput(f"{what} {shown}: {short(exc, 80)}") from None
    if parts.scheme.lower() not in SCHEMES:
        raise BadInput(f"{what} {shown}: only http:// and https:// are allowed (got {parts.scheme or 'no'} scheme)")
    if not parts.hostname:
        raise BadInput(f"{what} {shown}: no host")
    return url


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None  # the 3xx then comes back as an HTTPError, with its Location


def _reason(exc: BaseException) -> str:
    """A network failure in a few words."""
    reason = getattr(exc, "reason", exc) if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return "timed out"
    if isinstance(reason, ConnectionResetError):
        return "connection reset"
    if isinstance(reason, http.client.RemoteDisconnected):
        return "connection closed without an answer"
    if isinstance(reason, socket.gaierror):
        return f"cannot resolve the host ({short(reason.strerror or reason, 60)})"
    if isinstance(reason, ssl.SSLError):
        return f"TLS: {short(getattr(reason, 'reason', None) or reason, 80)}"
    if isinstance(reason, str):
        return short(reason, 100)
    return short(f"{type(reason).__name__}: {reason}", 100)


def _times(n: int) -> str:
    return f"{n} attempt" + ("" if n == 1 else "s")


def post_json(url: str, body: bytes, headers: Mapping[str, str] | None = None, *, timeout: float = 10.0,
              attempts: int = 4, backoff: float = 0.5, sleep: Callable[[float], None] = time.sleep,
              opener: urllib.request.OpenerDirector | None = None) -> Delivery:
    """POST body to url; retry what may succeed later; never raises, never follows a redirect."""
    try:
        check_callback_url(url)
    except BadInput as exc:
        return Delivery(False, None, 0, str(exc))
    opener = opener or urllib.request.build_opener(_NoRedirect)
    sent = {**DEFAULT_HEADERS, **dict(headers or {})}
    attempts = max(1, attempts)
    status: int | None = None
    outcome = ""
    for i in range(1, attempts + 1):
        request = urllib.request.Request(url, data=bytes(body), method="POST", headers=sent)
        try:
            with opener.open(request, timeout=timeout) as response:
                status = response.status
                if 200 <= status < 300:
                    return Delivery(True, status, i, f"HTTP {status} after {_times(i)}")
                outcome = f"HTTP {status} {response.reason}".rstrip()  # a 1xx: unexpected, sent again
        except urllib.error.HTTPError as exc:
            status = exc.code
            try:
                if 300 <= status < 400:
                    where = exc.headers.get("Location") if exc.headers else None
                    to = f" to {short(mask_url(where), 120)}" if where else ""
                    return Delivery(False, status, i, f"HTTP {status} redirect{to} refused")
                if not (status >= 500 or status in RETRY_STATUS):
                    try:
                        answer = exc.read(500)
                    except Exception:  # noqa: BLE001 - the body is a courtesy
                        answer = b""
                    said = f": {short(answer, 100)}" if answer.strip() else ""
                    return Delivery(False, status, i, f"HTTP {status} {exc.reason}, not retried{said}")
                outcome = f"HTTP {status}"
            finally:
                exc.close()
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            status, outcome = None, _reason(exc)
        except Exception as exc:  # noqa: BLE001 - a bad header value, ...: sending it again would not help
            return Delivery(False, None, i, f"not sent: {_reason(exc)}")
        if i < attempts:
            sleep(backoff * 2 ** (i - 1))
    return Delivery(False, status, attempts, f"{outcome} after {_times(attempts)}")
