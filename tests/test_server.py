"""The real gRPC server on port 0: CheckRequests in, CheckResponses out, health, shutdown."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from google.rpc import code_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.checkreq import check_request
from tests.fakes import (
    ACME_KEY,
    BOB_KEY,
    BOB_REVOKED,
    DAVE_EXPIRED,
    DEMO_RULES,
    SlowRegistry,
)
from tests.serverthread import ServerThread, demo_settings, read_log_until


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    """One running server shared by the read-only tests of this module."""
    running = ServerThread(demo_settings())
    yield running
    running.close()


@pytest.fixture(scope="module")
def stub(server: ServerThread) -> Iterator[external_auth_pb2_grpc.AuthorizationStub]:
    """A sync Authorization client."""
    with grpc.insecure_channel(server.target) as channel:
        yield external_auth_pb2_grpc.AuthorizationStub(channel)


def _ok_headers(resp: external_auth_pb2.CheckResponse) -> dict[str, base_pb2.HeaderValueOption]:
    return {o.header.key: o for o in resp.ok_response.headers}


def test_allowed_response_mapping(stub: external_auth_pb2_grpc.AuthorizationStub) -> None:
    """An allowed check is an OkHttpResponse with overwriting headers and dynamic metadata."""
    resp = stub.Check(
        check_request(
            {"authorization": f"Bearer {ACME_KEY}", "x-distill-tier": "free", "x-distill-new": "1"},
            body=b'{"model": "frontier-2"}',
        )
    )
    assert resp.status.code == code_pb2.OK
    assert resp.WhichOneof("http_response") == "ok_response"
    headers = _ok_headers(resp)
    assert headers["x-distill-tier"].header.value == "enterprise"
    assert headers["x-distill-account"].header.value == "acme-research"
    overwrite = base_pb2.HeaderValueOption.HeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD
    for option in headers.values():
        assert option.append_action == overwrite
        assert option.HasField("append") and option.append.value is False
    # x-distill-tier is overwritten (Envoy removes after adding), x-distill-new removed.
    assert set(resp.ok_response.headers_to_remove) == {"x-distill-new", "authorization"}
    meta = resp.dynamic_metadata.fields
    assert meta["decision_id"].string_value == headers["x-distill-decision-id"].header.value
    assert meta["account"].string_value == "acme-research"
    assert meta["tier"].string_value == "enterprise"
    assert meta["reason"].string_value == "ok"
    added = {o.header.key: o.header.value for o in resp.ok_response.response_headers_to_add}
    assert added["x-distill-decision-id"] == meta["decision_id"].string_value


@pytest.mark.parametrize(
    ("headers", "status", "rpc_code", "reason"),
    [
        ({}, 401, code_pb2.UNAUTHENTICATED, "key_missing"),
        ({"x-api-key": "dg_unknown_key_00000000"}, 401, code_pb2.UNAUTHENTICATED, "key_unknown"),
        ({"x-api-key": BOB_REVOKED}, 403, code_pb2.PERMISSION_DENIED, "key_revoked"),
        ({"x-api-key": DAVE_EXPIRED}, 403, code_pb2.PERMISSION_DENIED, "key_expired"),
    ],
)
def test_denied_response_mapping(
    stub: external_auth_pb2_grpc.AuthorizationStub,
    headers: dict[str, str],
    status: int,
    rpc_code: int,
    reason: str,
) -> None:
    """Denials are DeniedHttpResponses with the status, a JSON body and the decision id."""
    resp = stub.Check(check_request(headers))
    assert resp.WhichOneof("http_response") == "denied_response"
    assert resp.status.code == rpc_code
    denied = resp.denied_response
    assert denied.status.code == status
    body = json.loads(denied.body)
    assert body["reason"] == reason and body["error"] in {"unauthenticated", "forbidden"}
    header_map = {o.header.key: o.header.value for o in denied.headers}
    assert header_map["content-type"] == "application/json"
    assert header_map["x-distill-decision-id"] == body["decision_id"]
    assert resp.dynamic_metadata.fields["reason"].string_value == reason


def test_header_map_form_is_read(stub: external_auth_pb2_grpc.AuthorizationStub) -> None:
    """Envoy's raw `header_map` form (encode_raw_headers) carries the key just as well."""
    req = check_request()
    req.attributes.request.http.ClearField("headers")
    req.attributes.request.http.header_map.headers.add(key="x-api-key", raw_value=BOB_KEY.encode())
    resp = stub.Check(req)
    assert resp.status.code == code_pb2.OK


def test_missing_attributes_are_a_clear_denial(
    stub: external_auth_pb2_grpc.AuthorizationStub,
) -> None:
    """An empty CheckRequest is answered with a 400 request_malformed, not a gRPC error."""
    resp = stub.Check(external_auth_pb2.CheckRequest())
    assert resp.denied_response.status.code == 400
    assert json.loads(resp.denied_response.body)["reason"] == "request_malformed"


def test_pipe_source_is_denied(stub: external_auth_pb2_grpc.AuthorizationStub) -> None:
    """A pipe source address cannot be located and is denied with its own reason."""
    req = check_request({"x-api-key": BOB_KEY})
    req.attributes.source.address.ClearField("socket_address")
    req.attributes.source.address.pipe.path = "/run/envoy.sock"
    resp = stub.Check(req)
    assert json.loads(resp.denied_response.body)["reason"] == "source_address_invalid"


def test_health_is_serving(server: ServerThread) -> None:
    """Once loaded, both the server and the Authorization service report SERVING."""
    with grpc.insecure_channel(server.target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", "envoy.service.auth.v3.Authorization"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=name))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_decisions_are_logged_without_the_key(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """Every decision becomes an audit record (stdout and a JSON lines file here) naming the
    key id; the key itself is in no record and no log line."""
    audit = tmp_path / "audit.jsonl"
    chain = "decision-log-test"  # other servers of this module may write to stdout too
    running = ServerThread(demo_settings(audit=f"stdout,jsonl:{audit}", audit_chain=chain))
    try:
        with grpc.insecure_channel(running.target) as channel:
            stub = external_auth_pb2_grpc.AuthorizationStub(channel)
            with caplog.at_level(logging.DEBUG):
                stub.Check(check_request({"x-api-key": BOB_KEY}))
                stub.Check(check_request({"authorization": f"Bearer {BOB_REVOKED}"}))
    finally:
        running.close()  # drains the audit queue
    stdout = capfd.readouterr().out
    for text in (stdout, audit.read_text()):
        records = [r for r in map(json.loads, text.splitlines()) if r["chain"] == chain]
        assert [(r["key_id"], r["reason"]) for r in records] == [
            ("k_bob_1", "ok"),
            ("k_bob_old", "key_revoked"),
        ]
        assert BOB_KEY not in text and BOB_REVOKED not in text
    assert all(BOB_KEY not in str(vars(r)) for r in caplog.records)


def test_graceful_shutdown_finishes_in_flight_checks() -> None:
    """On stop, health flips to NOT_SERVING and a check already running still gets its answer."""

    def slow(app):  # type: ignore[no-untyped-def]
        app.pipeline._registry = SlowRegistry(app.registry, delay=0.5)

    running = ServerThread(demo_settings(check_budget=5.0), customize=slow)
    try:
        with grpc.insecure_channel(running.target) as channel:
            stub = external_auth_pb2_grpc.AuthorizationStub(channel)
            in_flight = stub.Check.future(check_request({"x-api-key": BOB_KEY}), timeout=10)
            time.sleep(0.1)
            stopping = running.submit(running.server.stop())
            time.sleep(0.05)
            statuses = running.call(
                running.server.health.servicer.Check(
                    health_pb2.HealthCheckRequest(service=""),
                    None,  # type: ignore[arg-type]
                )
            )
            assert statuses.status == health_pb2.HealthCheckResponse.NOT_SERVING
            assert in_flight.result().status.code == code_pb2.OK
            stopping.result(10)
    finally:
        running.loop.call_soon_threadsafe(running.loop.stop)


def test_deadline_from_envoy_bounds_the_check() -> None:
    """A check slower than Envoy's deadline is answered 503 deadline_exceeded in time."""

    def slow(app):  # type: ignore[no-untyped-def]
        app.pipeline._registry = SlowRegistry(app.registry, delay=2.0)

    running = ServerThread(demo_settings(check_budget=5.0), customize=slow)
    try:
        with grpc.insecure_channel(running.target) as channel:
            stub = external_auth_pb2_grpc.AuthorizationStub(channel)
            # A gRPC deadline of 1 s against a 2 s lookup: an answer at all came in time.
            resp = stub.Check(check_request({"x-api-key": BOB_KEY}), timeout=1.0)
        assert json.loads(resp.denied_response.body)["reason"] == "deadline_exceeded"
        assert resp.denied_response.status.code == 503
    finally:
        running.close()


def test_bad_rules_file_refuses_to_start(tmp_path: Path) -> None:
    """A server never starts on broken rules: the error names file, path and problem."""
    rules = tmp_path / "rules.yaml"
    rules.write_text("tiers:\n  free:\n    colour: red\n")
    proc = subprocess.run(
        [sys.executable, "-m", "authz", "serve", "--rules", str(rules), "--listen", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    assert f"{rules}:3: tiers.free.colour: unknown key" in proc.stderr


def test_sigterm_stops_the_process_cleanly() -> None:
    """`distill-guard serve` logs JSON, and exits 0 after SIGTERM with a `stopped` line."""
    env = {
        **os.environ,
        "DISTILL_GUARD_RULES": str(DEMO_RULES),
        "DISTILL_GUARD_LISTEN": "127.0.0.1:0",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "authz", "serve", "--grace", "1"],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stderr is not None
    try:
        # Without --geoip the demo rules' country conditions cannot match: said at start.
        warning = read_log_until(
            proc.stderr, "jurisdiction rules use IP countries but no --geoip database is configured"
        )
        assert warning["level"] == "warning"
        assert read_log_until(proc.stderr, "serving")["port"] > 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        messages = [json.loads(line)["msg"] for line in proc.stderr if line.strip()]
        assert messages[-2:] == ["shutting down", "stopped"]
    finally:
        proc.kill()
        proc.wait()


def test_sigterm_while_waiting_for_redis_stops_at_once(tmp_path: Path) -> None:
    """A server still waiting for an unreachable Redis at start-up exits on SIGTERM."""
    from tests.redis_server import free_port

    proc = subprocess.Popen(
        [sys.executable, "-m", "authz", "serve", "--rules", str(DEMO_RULES),
         "--listen", "127.0.0.1:0", "--store", f"redis://127.0.0.1:{free_port()}/0",
         "--grace", "0.5", "--audit", "none"],
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    try:
        read_log_until(proc.stderr, "store not reachable yet")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        proc.kill()
        proc.wait()
