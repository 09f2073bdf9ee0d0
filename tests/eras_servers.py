"""Real servers for the worker-era tests: redis-server (optionally with an ACL user that may not use
CLIENT commands, as managed Redis services refuse them), moto's S3 API server, a callback receiver
that verifies X-Callback-Signature, and an http server for reference images. No mocks."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image
from servers import RedisServer, free_port, wait_for  # noqa: F401 - the tests import them from here too

SECRET = "test-callback-secret-3b9f"
TOKEN = "test-service-key-77"


class S3Server:
    """moto's S3 API in server mode (a real HTTP endpoint), and a boto3 client on it."""

    def __init__(self, bucket="workspace-temp"):
        import boto3
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one INFO line per request otherwise
        self.port = free_port()
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.env = {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "testing",
                    "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1"}
        self.client = boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id="testing",
                                   aws_secret_access_key="testing", region_name="us-east-1")
        self.bucket = bucket
        self.client.create_bucket(Bucket=bucket)

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return sorted(o["Key"] for p in pages for o in p.get("Contents", []))

    def get(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def stop(self):
        self.server.stop()


class _Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        raw = self.rfile.read(int(self.headers["Content-Length"]))
        sig = self.headers.get("X-Callback-Signature", "")
        expected = "sha256=" + hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()
        entry = {"raw": raw, "headers": dict(self.headers), "signature_ok": hmac.compare_digest(sig, expected)}
        try:
            entry["body"] = json.loads(raw)
        except ValueError:
            entry["body"] = None
        self.server.received.append(entry)
        status = 200 if entry["signature_ok"] else 401  # as job-callback answers since 2026-04-07
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


class CallbackReceiver:
    def __init__(self):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
        self.httpd.received = []
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/functions/v1/job-callback"

    @property
    def received(self) -> list[dict]:
        return self.httpd.received

    def for_job(self, job_id: str) -> list[dict]:
        return [e for e in self.received if e["body"] and e["body"].get("job_id") == job_id]

    def stop(self):
        self.httpd.shutdown()


def png_bytes(size=(96, 80), color=(200, 40, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


class _Images(BaseHTTPRequestHandler):
    def do_GET(self):
        path = self.path.split("?")[0]
        body, ctype = self.server.files.get(path, (png_bytes(), "image/png"))
        if path.startswith("/slow"):
            time.sleep(3)
        if path.startswith("/missing"):
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class ImageServer:
    """Serves a reference PNG at every path (signed-URL query strings ignored); files overrides some."""

    def __init__(self):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Images)
        self.httpd.files = {}
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.httpd.server_port}"

    def stop(self):
        self.httpd.shutdown()
