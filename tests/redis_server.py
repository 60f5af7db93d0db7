"""A real, throwaway redis-server for integration tests: loopback, free port, no persistence."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis

REDIS_SERVER = shutil.which("redis-server")
REDIS_CLI = shutil.which("redis-cli")


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
        self._binary = binary
        self._proc = self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        options = {
            "port": str(self.port),
            "bind": "127.0.0.1",
            "save": "",  # no snapshots
            "appendonly": "no",
            "dir": self._dir.name,
            "logfile": str(self._log),
        }
        return subprocess.Popen(
            [
                self._binary,
                *(arg for name, value in options.items() for arg in (f"--{name}", value)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def kill(self) -> None:
        """Kill the server (SIGKILL) and keep its port and directory for `restart`."""
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(10)

    def restart(self) -> None:
        """Start a fresh server (empty: no persistence) on the same port."""
        self.kill()
        self._proc = self._spawn()
        self.wait_ready()

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open, nothing answers."""
        self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Undo `pause`."""
        self._proc.send_signal(signal.SIGCONT)

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


class RedisClusterServers:
    """A real Redis Cluster of three masters (no replicas) on free loopback ports.

    Each node gets its own cluster bus port; `url` is a `redis+cluster://` URL of the
    first node (the client discovers the others).
    """

    def __init__(self, binary: str, cli: str, masters: int = 3) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="dg-cluster-")
        self._cli = cli
        used: set[int] = set()
        self.ports = [_fresh_port(used) for _ in range(masters)]
        self._procs: list[subprocess.Popen[bytes]] = []
        for port in self.ports:
            options = {
                "port": str(port),
                "bind": "127.0.0.1",
                "cluster-enabled": "yes",
                "cluster-config-file": f"nodes-{port}.conf",
                "cluster-port": str(_fresh_port(used)),
                "save": "",
                "appendonly": "no",
                "dir": self._dir.name,
                "logfile": str(Path(self._dir.name) / f"redis-{port}.log"),
            }
            self._procs.append(
                subprocess.Popen(
                    [binary, *(arg for k, v in options.items() for arg in (f"--{k}", v))],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        self.url = f"redis+cluster://127.0.0.1:{self.ports[0]}"

    def create(self, timeout: float = 30.0) -> None:
        """Join the nodes into one cluster and wait until every node says it is ok."""
        deadline = time.monotonic() + timeout
        for port in self.ports:
            self._wait(port, lambda c: bool(c.ping()), deadline)
        subprocess.run(
            [
                self._cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in self.ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=max(1.0, deadline - time.monotonic()),
        )
        for port in self.ports:
            self._wait(port, _cluster_ok(len(self.ports)), deadline)

    def _wait(self, port: int, ready: Callable[[redis.Redis], bool], deadline: float) -> None:
        client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.2)
        try:
            while time.monotonic() < deadline:
                try:
                    if ready(client):
                        return
                except redis.ConnectionError:
                    pass
                time.sleep(0.05)
        finally:
            client.close()
        self.stop()
        raise RuntimeError(f"redis cluster node on port {port} not ready")

    def flushall(self) -> None:
        """Empty every master."""
        for port in self.ports:
            with redis.Redis(host="127.0.0.1", port=port) as client:
                client.flushall()

    def stop(self) -> None:
        """Kill every node and remove the directory."""
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        self._dir.cleanup()


def _fresh_port(used: set[int]) -> int:
    while True:
        port = free_port()
        if port not in used and port + 10000 not in used:
            used.add(port)
            return port


def _cluster_ok(nodes: int) -> Callable[[redis.Redis], bool]:
    def ready(client: redis.Redis) -> bool:
        info = client.execute_command("CLUSTER", "INFO")  # type: ignore[no-untyped-call]
        text = info.decode() if isinstance(info, bytes) else str(info)
        return "cluster_state:ok" in text and f"cluster_known_nodes:{nodes}" in text

    return ready
