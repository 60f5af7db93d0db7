"""`distill-guard health`: the probe containers and Kubernetes run."""

from __future__ import annotations

import pytest

from authz.cli import main
from tests.serverthread import ServerThread, demo_settings


def test_serving_server_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    """Against a loaded server the probe prints SERVING and exits 0, for both service names."""
    running = ServerThread(demo_settings())
    try:
        assert main(["health", "--target", running.target]) == 0
        assert capsys.readouterr().out == f"{running.target}: SERVING\n"
        service = "envoy.service.auth.v3.Authorization"
        assert main(["health", "--target", running.target, "--service", service]) == 0
    finally:
        running.close()


def test_not_serving_and_unreachable(capsys: pytest.CaptureFixture[str]) -> None:
    """A server shutting down answers NOT_SERVING (exit 1); no server at all is exit 2."""
    running = ServerThread(demo_settings())
    try:
        running.call(running.server.health.set(False))
        assert main(["health", "--target", running.target]) == 1
        assert capsys.readouterr().err == f"{running.target}: NOT_SERVING\n"
    finally:
        running.close()
    assert main(["health", "--target", running.target, "--timeout", "0.5"]) == 2
    assert "UNAVAILABLE" in capsys.readouterr().err
