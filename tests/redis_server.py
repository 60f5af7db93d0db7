"""A real, throwaway redis-server for integration tests: loopback, free port, no persistence."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis

REDIS_SERVER = shutil.which("redis-server")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RedisServer:
    """One redis-server process in a temporary directory; `url` points at database 0."""

    def __init__(self, binary: str) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="dg-redis-")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._log = Path(self._dir.name) / "redis.log"
        options = {
            "port": str(self.port),
            "bind": "127.0.0.1",
            "save": "",  # no snapshots
            "appendonly": "no",
            "dir": self._dir.name,
            "logfile": str(self._log),
        }
        self._proc = subprocess.Popen(
            [binary, *(arg for name, value in options.items() for arg in (f"--{name}", value))],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Return once PING answers; raise with the server's log if it never does."""
        deadline = time.monotonic() + timeout
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.2)
        try:
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    break
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    time.sleep(0.05)
        finally:
            client.close()
        log = self._log.read_text() if self._log.exists() else "(no log)"
        self.stop()
        raise RuntimeError(f"redis-server on port {self.port} did not start:\n{log}")

    def flushall(self) -> None:
        """Empty every database."""
        with redis.Redis.from_url(self.url) as client:
            client.flushall()

    def stop(self) -> None:
        """Kill the server and remove its directory."""
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(10)
        self._dir.cleanup()
