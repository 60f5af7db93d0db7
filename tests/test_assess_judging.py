"""How the probes judge answers, against a fake deployment that lets every request through.

The fake is a plain HTTP server answering 200 to everything and echoing
nothing, the way a model server without ext_authz in front of it would: the
credential probes must fail, and the probes that need to see what reached the
model server must say `unverifiable`, never pass.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from authz.assess import probes


class _AllowAll(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep test output clean


@pytest.fixture
def allow_all() -> Iterator[str]:
    """URL of a server that answers 200 to every POST."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _AllowAll)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_an_open_model_server_fails_the_credential_probes(allow_all: str) -> None:
    """No key and a made-up key reach the model server: both fail, and say so."""
    target = probes.Target(url=allow_all, key="dg_test_key_000000000000", model="m")
    found = {f.check.id: f for f in probes.run_probes(target)}
    assert found["DG-ID-101"].status == "fail"
    assert "the request reached the model server" in found["DG-ID-101"].evidence
    assert found["DG-ID-102"].status == "fail"
    assert found["DG-ID-105"].status == "fail"  # a broken body served


def test_probes_that_cannot_see_upstream_are_unverifiable(allow_all: str) -> None:
    """Without an echo of the governance headers, forged headers and elicitation are unknown."""
    target = probes.Target(
        url=allow_all,
        key="dg_test_key_000000000000",
        unverified_key="dg_test_free_00000000000",
        model="m",
    )
    found = {f.check.id: f for f in probes.run_probes(target)}
    assert found["DG-OG-101"].status == "unverifiable"
    assert found["DG-OG-102"].status == "unverifiable"
    assert found["DG-ID-103"].status == "unverifiable"  # no revoked key given
    assert found["DG-RL-101"].status == "unverifiable"  # no burst key given


def test_burst_without_a_known_limit_is_bounded(allow_all: str) -> None:
    """With no 429 and no known limit, the burst stops at --burst-max and fails."""
    target = probes.Target(
        url=allow_all, key="dg_test_key_000000000000", burst_key="dg_b_0000000000000", model="m"
    )
    target.burst_max = 7
    finding = probes.probe_burst(target)
    assert finding.status == "fail"
    assert len(target.exchanges) == 7
    assert finding.evidence[-1] == "no 429 within 7 requests"


def test_keys_never_appear_in_what_is_recorded(allow_all: str) -> None:
    """Requests name keys by a digest prefix only."""
    key = "dg_test_key_000000000000"
    target = probes.Target(url=allow_all, key=key, model="m", revoked_key="dg_rev_00000000000000")
    probes.run_probes(target)
    recorded = " ".join(e.request for e in target.exchanges)
    assert key not in recorded
    assert probes.key_label(key) in recorded
