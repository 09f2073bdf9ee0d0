"""Real servers the tests start on loopback, and waiting for them: one copy for every test file."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, timeout: float, what: str, interval: float = 0.1):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class RedisServer:
    """A real redis-server on a free loopback port (aof: append-only file, for restart tests)."""

    def __init__(self, folder: Path, aof: bool = False):
        folder.mkdir(parents=True, exist_ok=True)
        server = shutil.which("redis-server")
        if server is None:
            pytest.fail("redis-server is not installed (bash scripts/setup.sh --tests, or apt-get install redis-server)")
        self.cmd = [server, "--port", str(free_port()), "--bind", "127.0.0.1", "--dir", str(folder), "--save", ""]
        self.cmd += ["--appendonly", "yes", "--appendfsync", "always"] if aof else ["--appendonly", "no"]
        self.port, self.folder, self.proc = int(self.cmd[2]), folder, None
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.start()
        self.r = redis.Redis.from_url(self.url)

    def start(self) -> None:
        self.proc = subprocess.Popen(self.cmd, stdout=open(self.folder / "redis.log", "ab"), stderr=subprocess.STDOUT)

        def up():
            try:
                return redis.Redis.from_url(self.url).ping()
            except redis.RedisError:
                assert self.proc.poll() is None, (self.folder / "redis.log").read_text()[-2000:]
                return False

        wait_for(up, 15, "redis-server to answer")

    def stop(self, kill: bool = False) -> None:
        self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        self.proc.wait(15)

    def client(self):
        from ourvidz.worker import store

        return store.connect(self.url)

    def user_without_client_commands(self, name="managed", password="pw-managed") -> str:
        """An ACL user like a managed service's: everything but CLIENT (and INFO) refused."""
        self.r.execute_command("ACL", "SETUSER", name, "on", f">{password}", "~*", "&*", "+@all", "-client", "-info")
        return f"redis://{name}:{password}@127.0.0.1:{self.port}/0"
