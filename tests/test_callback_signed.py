"""The completion callback: HMAC-SHA256 over the exact bytes sent, the optional bearer token,
retries with backoff on network errors and 5xx, secrets never shown."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ourvidz.worker import callback


class Flaky(BaseHTTPRequestHandler):
    def do_POST(self):
        raw = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.got.append((raw, dict(self.headers)))
        status = self.server.statuses.pop(0) if self.server.statuses else 200
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    httpd.got, httpd.statuses = [], []
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd
    httpd.shutdown()


BODY = callback.callback_body("j-1", "completed", [{"type": "image", "url": "u/j-1/0.png", "thumbnail_url":
                                                    "u/j-1/0.thumb.webp", "metadata": {"seed": 5}}], None,
                              {"seed": 5, "generation_time": 1.5, "num_images": 1, "frame_num": 1, "note": "é ✓"})


def test_signature_is_over_the_exact_bytes_sent(server):
    creds = callback.Credentials(secret="s3cr3t", token="tok-1")
    out = callback.post_callback(f"http://127.0.0.1:{server.server_port}/cb", BODY, creds)
    assert out == "delivered: HTTP 200 after 1 attempt"
    [(raw, headers)] = server.got
    assert headers["X-Callback-Signature"] == "sha256=" + hmac.new(b"s3cr3t", raw, hashlib.sha256).hexdigest()
    assert headers["Authorization"] == "Bearer tok-1" and headers["Content-Type"] == "application/json"
    assert json.loads(raw) == BODY and raw == callback.encode(BODY)


def test_unsigned_without_a_secret(server):
    callback.post_callback(f"http://127.0.0.1:{server.server_port}/cb", BODY)
    [(_, headers)] = server.got
    assert "X-Callback-Signature" not in headers and "Authorization" not in headers


def test_retried_on_5xx_and_each_attempt_signed_alike(server):
    server.statuses = [503, 502]
    out = callback.post_callback(f"http://127.0.0.1:{server.server_port}/cb", BODY,
                                 callback.Credentials(secret="k"), backoff=0.01)
    assert out == "delivered: HTTP 200 after 3 attempts"
    assert len({(raw, h["X-Callback-Signature"]) for raw, h in server.got}) == 1


def test_a_refusal_is_recorded_not_retried(server):
    server.statuses = [401]
    out = callback.post_callback(f"http://127.0.0.1:{server.server_port}/cb", BODY, callback.Credentials(secret="bad"))
    assert out.startswith("not delivered: HTTP 401") and len(server.got) == 1


def test_network_errors_are_retried_then_reported():
    out = callback.post_callback("http://127.0.0.1:9/cb", BODY, attempts=2, backoff=0.01)
    assert out == "not delivered: connection refused after 2 attempts"


def test_credentials_come_from_the_environment_and_never_show(monkeypatch):
    monkeypatch.setenv(callback.SECRET_ENV, "very-secret")
    monkeypatch.setenv(callback.TOKEN_ENV, "very-token")
    creds = callback.Credentials.from_env()
    assert (creds.secret, creds.token) == ("very-secret", "very-token")
    assert "very" not in repr(creds) and "very" not in str(creds)
    monkeypatch.delenv(callback.SECRET_ENV)
    monkeypatch.delenv(callback.TOKEN_ENV)
    assert callback.Credentials.from_env() == callback.Credentials()
