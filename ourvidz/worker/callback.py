"""The completion callback: what the worker POSTs to --callback-url when a job ends."""

from __future__ import annotations

import json
from typing import Any

from ourvidz.http_post import post_json


def callback_body(job_id: str, status: str, assets: list[str], error: str | None) -> dict[str, Any]:
    return {"job_id": job_id, "status": status, "assets": assets, "error_message": error}


def post_callback(url: str, body: dict[str, Any], attempts: int = 4, timeout: float = 10.0) -> str:
    """POST the completion callback (retried with backoff on network errors and 5xx; redirects
    refused, never followed as a GET); returns what happened, for the job's record. Never raises."""
    return str(post_json(url, json.dumps(body).encode("utf-8"), {"User-Agent": "ourvidz"}, timeout=timeout,
                         attempts=attempts))
