"""ourvidz.http_post against a real HTTP server on 127.0.0.1: retries, refused redirects, truthful details."""

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ourvidz.errors import BadInput
from ourvidz.http_post import Delivery, check_callback_url, post_json


class Receiver:
    """A callback receiver whose answers are scripted per path: a list of statuses, the last repeated."""

    def __init__(self):
        self.script: dict[str, list] = {}
        self.seen: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                receiver.seen.append({"method": "POST", "path": self.path, "headers": dict(self.headers),
                                      "body": self.rfile.read(length)})
                self._answer()

            def do_GET(self):
                receiver.seen.append({"method": "GET", "path": self.path, "headers": dict(self.headers), "body": b""})
                self._answer()

            def _answer(self):
                steps = receiver.script.get(self.path.split("?")[0], [200])
                step = steps.pop(0) if len(steps) > 1 else steps[0]
                if step == "sleep":
                    time.sleep(0.6)
                    step = 200
                if step == "hangup":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                status, extra = (step, {}) if isinstance(step, int) else step
                body = extra.pop("body", b"")
                self.send_response(status)
                for k, v in extra.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.handle_error = lambda request, address: None  # a client that timed out: a broken pipe
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def sleeps():
    return []


def post(url, sleeps, body=b'{"job_id": "j1"}', **kw):
    return post_json(url, body, {"X-Ourvidz-Job": "j1"}, timeout=kw.pop("timeout", 2.0), sleep=sleeps.append, **kw)


def test_the_body_and_headers_arrive_as_sent(receiver, sleeps):
    body = json.dumps({"job_id": "j1", "status": "completed", "assets": ["/o/a.png"]}).encode()
    d = post(receiver.url + "/cb?token=t", sleeps, body)
    assert d == Delivery(True, 200, 1, "HTTP 200 after 1 attempt")
    assert str(d) == "delivered: HTTP 200 after 1 attempt"
    (seen,) = receiver.seen
    assert seen["method"] == "POST" and seen["path"] == "/cb?token=t" and seen["body"] == body
    assert seen["headers"]["Content-Type"] == "application/json"
    assert seen["headers"]["User-Agent"] == "ourvidz"
    assert seen["headers"]["X-Ourvidz-Job"] == "j1"
    assert sleeps == []


def test_5xx_is_retried_with_exponential_backoff(receiver, sleeps):
    receiver.script["/cb"] = [500, 503, 200]
    d = post(receiver.url + "/cb", sleeps, backoff=0.5)
    assert d == Delivery(True, 200, 3, "HTTP 200 after 3 attempts")
    assert sleeps == [0.5, 1.0]
    assert [s["body"] for s in receiver.seen] == [b'{"job_id": "j1"}'] * 3


def test_5xx_every_time_gives_up_after_the_attempts(receiver, sleeps):
    receiver.script["/cb"] = [502]
    d = post(receiver.url + "/cb", sleeps, attempts=4, backoff=0.25)
    assert d == Delivery(False, 502, 4, "HTTP 502 after 4 attempts")
    assert str(d) == "not delivered: HTTP 502 after 4 attempts"
    assert sleeps == [0.25, 0.5, 1.0] and len(receiver.seen) == 4


def test_429_is_retried(receiver, sleeps):
    receiver.script["/cb"] = [429, 204]
    assert post(receiver.url + "/cb", sleeps) == Delivery(True, 204, 2, "HTTP 204 after 2 attempts")


@pytest.mark.parametrize("status,reason", [(400, "Bad Request"), (401, "Unauthorized"), (404, "Not Found")])
def test_4xx_is_not_retried(receiver, sleeps, status, reason):
    receiver.script["/cb"] = [(status, {"body": b'{"error": "no such job"}\n'})]
    d = post(receiver.url + "/cb", sleeps)
    assert d == Delivery(False, status, 1, f'HTTP {status} {reason}, not retried: {{"error": "no such job"}}\\n')
    assert len(receiver.seen) == 1 and sleeps == []


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirects_are_refused_not_followed(receiver, sleeps, status):
    receiver.script["/cb"] = [(status, {"Location": receiver.url + "/elsewhere?token=s3cret"})]
    d = post(receiver.url + "/cb", sleeps)
    assert d == Delivery(False, status, 1, f"HTTP {status} redirect to {receiver.url}/elsewhere?token=*** refused")
    assert [(s["method"], s["path"]) for s in receiver.seen] == [("POST", "/cb")]  # no GET, no second POST


def test_connection_refused_after_every_attempt(sleeps):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    d = post(f"http://127.0.0.1:{port}/cb", sleeps, attempts=3, backoff=0.1)
    assert d == Delivery(False, None, 3, "connection refused after 3 attempts")
    assert sleeps == [0.1, 0.2]


def test_a_slow_receiver_times_out(receiver, sleeps):
    receiver.script["/cb"] = ["sleep", 200]
    d = post(receiver.url + "/cb", sleeps, attempts=2, timeout=0.2)
    assert d == Delivery(True, 200, 2, "HTTP 200 after 2 attempts")
    receiver.script["/slow"] = ["sleep"]
    d = post(receiver.url + "/slow", sleeps, attempts=2, timeout=0.2)
    assert d == Delivery(False, None, 2, "timed out after 2 attempts")


def test_a_hang_up_is_retried(receiver, sleeps):
    receiver.script["/cb"] = ["hangup", 200]
    d = post(receiver.url + "/cb", sleeps)
    assert d.ok and d.attempts == 2 and d.detail == "HTTP 200 after 2 attempts"


def test_a_refused_url_is_a_failed_delivery_without_sending(sleeps):
    d = post("file:///etc/passwd", sleeps)
    assert d.ok is False and d.attempts == 0 and d.status is None
    assert "only http:// and https://" in d.detail


def test_a_bad_header_is_not_sent_again(receiver, sleeps):
    d = post_json(receiver.url + "/cb", b"{}", {"X-Bad": "a\r\nInjected: 1"}, sleep=sleeps.append)
    assert d.ok is False and d.attempts == 1 and d.detail.startswith("not sent: ")
    assert receiver.seen == []


@pytest.mark.parametrize("url", ["http://h/cb", "https://h:8443/cb?token=x", "HTTPS://h", "http://[::1]:80/"])
def test_check_callback_url_accepts_http_and_https(url):
    assert check_callback_url(url) == url


@pytest.mark.parametrize("url,problem", [
    ("file:///etc/passwd", "only http:// and https:// are allowed (got file scheme)"),
    ("ftp://u:hunter2@h/x", "only http:// and https:// are allowed (got ftp scheme)"),
    ("gopher://h/", "only http:// and https:// are allowed"),
    ("javascript:alert(1)", "only http:// and https://"),
    ("h/cb", "only http:// and https:// are allowed (got no scheme)"),
    ("http:///cb", "no host"),
    ("http://h:99999/", "Port out of range"),
    ("http://h/a b", "spaces or control characters"),
    ("http://h/\r\nX: 1", "spaces or control characters"),
    ("http://hé/", "not ASCII"),
    ("http://h/" + "a" * 3000, "longer than 2048 characters"),
    ("", "empty"),
])
def test_check_callback_url_refuses_the_rest_on_one_line(url, problem):
    with pytest.raises(BadInput) as exc:
        check_callback_url(url)
    assert problem in str(exc.value) and "\n" not in str(exc.value)
    assert "hunter2" not in str(exc.value)
