"""`distill-guard serve` installs the SDK itself: Prometheus endpoint, quiet without a collector."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2_grpc

from authz import telemetry
from authz.procs import (
    Child,
    free_port,
    guard_command,
    http_request,
    stop_all,
    wait_grpc_serving,
    wait_tcp,
)
from tests.checkreq import check_request
from tests.fakes import ACME_KEY


def _env(**extra: str) -> dict[str, str]:
    """Our environment without settings or telemetry variables, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DISTILL_GUARD_", "OTEL_"))}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def _serve(tmp: Path, env: dict[str, str]) -> tuple[Child, str]:
    target = f"127.0.0.1:{free_port()}"
    log_path = tmp / "guard.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            guard_command(target),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=env,
        )
    child = Child("distill-guard", proc, log_path)
    return child, target


@pytest.fixture
def prometheus_guard(tmp_path: Path) -> Iterator[tuple[Child, str, int]]:
    """distill-guard serve with the Prometheus endpoint on a free port and no OTLP endpoint."""
    port = free_port()
    child, target = _serve(tmp_path, _env(**{telemetry.METRICS_LISTEN_ENV: f"127.0.0.1:{port}"}))
    try:
        wait_grpc_serving(child, target)
        wait_tcp(child, "127.0.0.1", port)
        yield child, target, port
    finally:
        stop_all([child])


def test_prometheus_endpoint_serves_decisions_and_latency(
    prometheus_guard: tuple[Child, str, int],
) -> None:
    """After one check, /metrics has the decision counter, the latency histogram, process data."""
    child, target, port = prometheus_guard
    with grpc.insecure_channel(target) as channel:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        stub.Check(check_request({"x-api-key": ACME_KEY}, body=b'{"model": "frontier-2"}'))
    res = http_request(f"http://127.0.0.1:{port}/metrics")
    assert res.status == 200
    text = res.body.decode()
    lines = set(text.splitlines())
    assert (
        'distill_guard_decisions_total{action="allow",reason="ok",tier="enterprise"} 1.0' in lines
    )
    assert "distill_guard_check_duration_seconds_count 1.0" in lines
    assert 'distill_guard_check_duration_seconds_bucket{le="+Inf"} 1.0' in lines
    for bound in ("0.00025", "0.2", "0.5", "1.0"):
        assert f'distill_guard_check_duration_seconds_bucket{{le="{bound}"}}' in text
    assert "process_resident_memory_bytes" in text
    assert ACME_KEY not in text
    # No collector configured: nothing tries to export, so nothing complains.
    stop_all([child])
    log = child.log_path.read_text()
    assert '"traces": "off", "metrics_otlp": false' in log
    assert '"logger": "opentelemetry' not in log and "Traceback" not in log


def test_a_busy_metrics_port_stops_serve_with_a_message(tmp_path: Path) -> None:
    """A metrics address that cannot be bound is a start-up error (exit 2), not a silent gap."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = _env(**{telemetry.METRICS_LISTEN_ENV: f"127.0.0.1:{port}"})
        argv = guard_command(f"127.0.0.1:{free_port()}")
        done = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=60, check=False
        )
    assert done.returncode == 2
    assert f"DISTILL_GUARD_METRICS_LISTEN: cannot listen on 127.0.0.1:{port}" in done.stderr
