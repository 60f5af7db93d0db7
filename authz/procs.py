"""Start, supervise and probe the child processes of the demo, the benchmark and the Envoy tests.

Each child runs in its own process group with its output in a log file, and
dies with us (Linux); readiness is polled (TCP, gRPC health, Envoy's /ready)
and a child that exits while we wait fails fast with its log tail.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from authz.geobuild import demo_database

DEMO_DIR = Path(__file__).resolve().parent / "demo"


def _die_with_parent() -> list[str]:
    """A command prefix asking Linux to SIGTERM the child if we die (no orphans on kill -9).

    util-linux's `setpriv` sets the parent-death signal and execs the command. A
    `preexec_fn` doing the same would make Python fork and run its after-fork
    hooks in the child, and gRPC's hook aborts a child forked while gRPC threads
    are busy (the tests run servers in process); without one, the child is
    spawned with no Python code in it. The signal is armed once `setpriv` runs,
    a few milliseconds after the spawn; a parent killed within them leaves the
    child running.
    """
    if not sys.platform.startswith("linux"):
        return []
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", "--"] if setpriv else []


def child_env() -> dict[str, str]:
    """Our environment minus DISTILL_GUARD_* settings (the demo passes its own flags)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISTILL_GUARD_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class Child:
    """A child process with its output in a log file."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    @classmethod
    def spawn(
        cls, name: str, argv: list[str], logdir: Path, *, stdout_name: str | None = None
    ) -> Child:
        """Start `argv` in its own process group; stderr (and stdout) go to `<name>.log`."""
        log_path = logdir / f"{name}.log"
        with open(log_path, "ab") as err:
            out = open(logdir / stdout_name, "ab") if stdout_name else err  # noqa: SIM115 (closed below)
            try:
                proc = subprocess.Popen(
                    _die_with_parent() + argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    env=child_env(),
                    process_group=0,
                )
            finally:
                if out is not err:
                    out.close()
        return cls(name, proc, log_path)

    def tail(self, lines: int = 15) -> str:
        """The last lines of the child's log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def stop_all(children: list[Child], timeout: float = 5.0) -> None:
    """SIGTERM every child (last started first), wait, then SIGKILL what is left."""
    for child in reversed(children):
        if child.proc.poll() is None:
            child.proc.terminate()
    deadline = time.monotonic() + timeout
    for child in reversed(children):
        try:
            child.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.proc.kill()
            child.proc.wait()


def wait_until(child: Child, what: str, probe: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll `probe` until it is true; fail early, with the log tail, if the child exits."""
    deadline = time.monotonic() + timeout
    while True:
        if child.proc.poll() is not None:
            raise RuntimeError(
                f"{child.name} exited ({child.proc.returncode}) before {what}:\n{child.tail()}"
            )
        try:
            if probe():
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{child.name}: no {what} after {timeout:.0f}s:\n{child.tail()}")
        time.sleep(0.05)


def wait_tcp(child: Child, host: str, port: int) -> None:
    """Wait until the child accepts TCP connections."""

    def probe() -> bool:
        with socket.create_connection((host, port), timeout=0.5):
            return True

    wait_until(child, f"listener on {host}:{port}", probe)


def grpc_serving(target: str) -> bool:
    """Whether a gRPC server reports SERVING on grpc.health.v1 (overall health)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=0.5
            )
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def wait_grpc_serving(child: Child, target: str) -> None:
    """Wait until the child's gRPC health says SERVING."""
    wait_until(child, f"gRPC health SERVING on {target}", lambda: grpc_serving(target))


def wait_envoy_ready(child: Child, admin_port: int) -> None:
    """Wait until Envoy's admin /ready answers 200 (listeners are up)."""
    url = f"http://127.0.0.1:{admin_port}/ready"
    wait_until(child, f"ready on {url}", lambda: http_request(url, timeout=0.5).status == 200)


@dataclass(frozen=True, slots=True)
class HttpResult:
    """Status, lower-case headers and body of one HTTP exchange."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body)


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy


def http_request(
    url: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = 5.0,
) -> HttpResult:
    """One HTTP request; error statuses are results, not exceptions."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            return HttpResult(resp.status, _lower(resp.headers.items()), resp.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return HttpResult(exc.code, _lower(exc.headers.items()), exc.read())


def _lower(items: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in items}


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_in_use(port: int) -> bool:
    """Whether 127.0.0.1:port cannot be bound."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def authz_command(command: str, listen: str, *extra: str) -> list[str]:
    """`python -m authz COMMAND --listen LISTEN ...` with this interpreter."""
    return [sys.executable, "-m", "authz", command, "--listen", listen, *extra]


def guard_command(listen: str, *extra: str) -> list[str]:
    """`distill-guard serve` with the demo rules, accounts, GeoIP database and memory store."""
    rules, accounts = str(DEMO_DIR / "rules.yaml"), str(DEMO_DIR / "accounts.jsonl")
    geo = str(demo_database())  # one file serves as the country and the ASN database
    files: tuple[str, ...] = ("--rules", rules, "--accounts", accounts, "--store", "memory://")
    files += ("--grace", "1", "--geoip", geo, "--asn", geo)
    return authz_command("serve", listen, *files, *extra)
