"""The completion callback: what the worker POSTs to --callback-url when a job ends, in the
production contract (docs/production-payloads.md, "The completion callback"):

    POST <url>   Content-Type: application/json
                 X-Callback-Signature: sha256=<lowercase hex HMAC-SHA256(secret, the exact body bytes)>
                 Authorization: Bearer <token>            (when a token is configured)
    {"job_id", "status": "completed"|"failed", "assets": [{"type": "image"|"video", "url": <storage
     path>, "thumbnail_url": <storage path>, "metadata": {"seed", ...}}], "error_message",
     "metadata": {"seed", "generation_time", "num_images", "frame_num", ...}}

The secret is $OURVIDZ_CALLBACK_SECRET and the token $OURVIDZ_CALLBACK_TOKEN, read once at start;
neither is printed, logged or stored in a record. The body is serialised once and those bytes are
signed and sent. Retries with backoff on network errors and 5xx (ourvidz.http_post.post_json);
what happened goes into the job's record.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from typing import Any

from ourvidz.http_post import post_json

SECRET_ENV = "OURVIDZ_CALLBACK_SECRET"
TOKEN_ENV = "OURVIDZ_CALLBACK_TOKEN"
SIGNATURE_HEADER = "X-Callback-Signature"


@dataclass(frozen=True, repr=False)
class Credentials:
    secret: str | None = None
    token: str | None = None

    @classmethod
    def from_env(cls) -> Credentials:
        return cls(os.environ.get(SECRET_ENV) or None, os.environ.get(TOKEN_ENV) or None)

    def __repr__(self) -> str:  # never the values
        return f"Credentials(secret={'set' if self.secret else 'unset'}, token={'set' if self.token else 'unset'})"


def callback_body(job_id: str, status: str, assets: list[dict[str, Any]], error: str | None,
                  metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"job_id": job_id, "status": status, "assets": assets, "error_message": error,
            "metadata": metadata or {}}


def encode(body: dict[str, Any]) -> bytes:
    """The exact bytes sent (and signed)."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def signature(secret: str, data: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode("utf-8"), data, hashlib.sha256).hexdigest()


def headers(data: bytes, credentials: Credentials) -> dict[str, str]:
    out = {"User-Agent": "ourvidz"}
    if credentials.secret:
        out[SIGNATURE_HEADER] = signature(credentials.secret, data)
    if credentials.token:
        out["Authorization"] = f"Bearer {credentials.token}"
    return out


def post_callback(url: str, body: dict[str, Any], credentials: Credentials = Credentials(), attempts: int = 4,
                  timeout: float = 10.0, backoff: float = 0.5) -> str:
    """POST the callback, signed over the bytes sent (retried with backoff on network errors and 5xx;
    redirects refused); returns what happened, for the job's record. Never raises."""
    data = encode(body)
    return str(post_json(url, data, headers(data, credentials), timeout=timeout, attempts=attempts, backoff=backoff))
