"""The completion callback: what the worker POSTs to --callback-url when a job ends."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any


def callback_body(job_id: str, status: str, assets: list[str], error: str | None) -> dict[str, Any]:
    return {"job_id": job_id, "status": status, "assets": assets, "error_message": error}


def post_callback(url: str, body: dict[str, Any], attempts: int = 3, timeout: float = 10.0) -> str:
    """POST the completion callback; returns what happened, for the job's record (never raises)."""
    data = json.dumps(body).encode("utf-8")
    outcome = ""
    for i in range(attempts):
        request = urllib.request.Request(url, data=data, method="POST",
                                         headers={"Content-Type": "application/json", "User-Agent": "ourvidz"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return f"delivered: HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            outcome = f"HTTP {exc.code}"
            if exc.code < 500:
                break  # the receiver refused it; sending it again would not help
        except (urllib.error.URLError, OSError) as exc:
            outcome = str(getattr(exc, "reason", exc))
        if i + 1 < attempts:
            time.sleep(2**i)
    return f"not delivered: {outcome}"
