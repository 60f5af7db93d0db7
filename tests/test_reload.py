"""Hot reload: ConfigMap-style symlink swaps, bad edits keeping the last good rules."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authz.errors import ConfigError
from authz.reload import WatchedFile
from authz.rules import Rules, load_rules
from tests.checkreq import check_request
from tests.fakes import BOB_KEY, DEMO_ACCOUNTS
from tests.otel import counter_value, metric_reader
from tests.serverthread import ServerThread, demo_settings, read_log_until

OPEN = "version: open\ntiers: {pro: {}, free: {}, enterprise: {}}\n"
CLOSED = "version: closed\ntiers: {pro: {paths: ['/v2/*']}, free: {}, enterprise: {}}\n"


def configmap(tmp_path: Path, text: str) -> Path:
    """A directory laid out like a mounted ConfigMap: file -> ..data/file, ..data -> revision."""
    mount = tmp_path / "mount"
    mount.mkdir()
    swap(mount, text, "rev1")
    (mount / "rules.yaml").symlink_to("..data/rules.yaml")
    return mount / "rules.yaml"


def swap(mount: Path, text: str, revision: str) -> None:
    """Publish a new revision the way the kubelet does: atomic rename of the ..data link."""
    rev = mount / revision
    rev.mkdir()
    (rev / "rules.yaml").write_text(text)
    tmp_link = mount / "..data_tmp"
    tmp_link.symlink_to(revision)
    os.replace(tmp_link, mount / "..data")


def first_denial_reason(stub: external_auth_pb2_grpc.AuthorizationStub) -> str:
    """Check Bob's key until it is denied (within 5 s); the denial's reason."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        resp = stub.Check(check_request({"x-api-key": BOB_KEY}))
        if resp.HasField("denied_response"):
            return str(json.loads(resp.denied_response.body)["reason"])
        time.sleep(0.02)
    return "still allowed after 5 s"


def test_symlink_swap_is_picked_up(tmp_path: Path) -> None:
    """Swapping the ConfigMap's ..data link reloads the rules though the file name is unchanged."""
    path = configmap(tmp_path, OPEN)
    watched: WatchedFile[Rules] = WatchedFile(path, load_rules, kind="rules")
    assert watched.current().version.startswith("open@")
    assert watched.poll() is False
    swap(path.parent, CLOSED, "rev2")
    assert watched.poll() is True
    assert watched.current().version.startswith("closed@") and watched.reloads == 1


def test_bad_edit_keeps_last_good_rules(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A broken edit is logged and counted (a real metric) with file, path and problem.

    The old rules keep serving.
    """
    metric_reader()
    path = tmp_path / "rules.yaml"
    path.write_text(OPEN)
    failed_before = counter_value("distill_guard.reload.failures", kind="rules")
    watched: WatchedFile[Rules] = WatchedFile(path, load_rules, kind="rules")
    before = watched.current()
    time.sleep(0.01)
    path.write_text("tiers:\n  pro: {pathz: []}\n")
    with caplog.at_level(logging.ERROR, logger="distill_guard.reload"):
        assert watched.poll() is False
    assert watched.current() is before
    assert watched.failures == 1
    assert counter_value("distill_guard.reload.failures", kind="rules") == failed_before + 1
    assert watched.last_error == f"{path}:2: tiers.pro.pathz: unknown key"
    assert caplog.records[-1].error == watched.last_error
    path.write_text(CLOSED)
    assert watched.poll() is True and watched.last_error is None


def test_deleted_file_keeps_last_good(tmp_path: Path) -> None:
    """A rules file that disappears leaves the last good rules in place."""
    path = tmp_path / "rules.yaml"
    path.write_text(OPEN)
    watched: WatchedFile[Rules] = WatchedFile(path, load_rules, kind="rules")
    path.unlink()
    assert watched.poll() is False and watched.current().version.startswith("open@")


def test_first_load_must_succeed(tmp_path: Path) -> None:
    """With no last good value, a broken file is an error at start."""
    path = tmp_path / "rules.yaml"
    path.write_text("tiers: {}\n")
    with pytest.raises(ConfigError, match="define at least one tier"):
        WatchedFile(path, load_rules, kind="rules")


def test_running_server_applies_edits(tmp_path: Path) -> None:
    """A rules edit reaches a running server without a restart, within the reload interval."""
    path = configmap(tmp_path, OPEN)
    running = ServerThread(demo_settings(rules=path, accounts=DEMO_ACCOUNTS, reload_interval=0.05))
    try:
        with grpc.insecure_channel(running.target) as channel:
            stub = external_auth_pb2_grpc.AuthorizationStub(channel)
            assert stub.Check(check_request({"x-api-key": BOB_KEY})).HasField("ok_response")
            swap(path.parent, CLOSED, "rev2")
            assert first_denial_reason(stub) == "path_not_allowed"
    finally:
        running.close()


def test_accounts_file_reload_revokes(tmp_path: Path) -> None:
    """Marking a key revoked in the accounts file takes effect on the running server."""
    accounts = tmp_path / "accounts.jsonl"
    lines = DEMO_ACCOUNTS.read_text()
    accounts.write_text(lines)
    running = ServerThread(demo_settings(accounts=accounts, reload_interval=0.05))
    try:
        with grpc.insecure_channel(running.target) as channel:
            stub = external_auth_pb2_grpc.AuthorizationStub(channel)
            assert stub.Check(check_request({"x-api-key": BOB_KEY})).HasField("ok_response")
            accounts.write_text(
                lines.replace(
                    '"id": "k_bob_1", "secret"', '"id": "k_bob_1", "revoked": true, "secret"'
                )
            )
            assert first_denial_reason(stub) == "key_revoked"
    finally:
        running.close()


def test_bad_reload_keeps_health_serving(tmp_path: Path) -> None:
    """A rejected rules edit leaves the server SERVING on the old rules."""
    path = tmp_path / "rules.yaml"
    path.write_text(OPEN)
    running = ServerThread(demo_settings(rules=path, reload_interval=0.05))
    try:
        path.write_text("tiers: {pro: {colour: red}}\n")
        deadline = time.monotonic() + 5
        while running.app.rules.failures == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert running.app.rules.failures >= 1  # a reader may also catch the half-written file
        with grpc.insecure_channel(running.target) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            stub = external_auth_pb2_grpc.AuthorizationStub(channel)
            assert stub.Check(check_request({"x-api-key": BOB_KEY})).HasField("ok_response")
    finally:
        running.close()


def test_sighup_reloads_at_once(tmp_path: Path) -> None:
    """SIGHUP re-reads the rules immediately, whatever the polling interval."""
    path = tmp_path / "rules.yaml"
    path.write_text(OPEN)
    proc = subprocess.Popen(
        [sys.executable, "-m", "authz", "serve", "--rules", str(path), "--listen", "127.0.0.1:0",
         "--reload-interval", "3600", "--grace", "0.5"],
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    try:
        read_log_until(proc.stderr, "serving")
        path.write_text(CLOSED)
        proc.send_signal(signal.SIGHUP)
        messages = [json.loads(proc.stderr.readline())["msg"] for _ in range(2)]
        assert messages == ["reload requested", "reloaded rules"]
    finally:
        proc.terminate()
        proc.wait(10)
