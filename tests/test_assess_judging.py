"""How the probes judge answers, against scripted fake deployments (unit tests of the judging).

The fakes are plain HTTP servers that answer every request alike: 200 with
nothing echoed, the way a model server without ext_authz in front of it would
(the credential probes must fail, and the probes that need to see what reached
the model server must say `unverifiable`, never pass); a 503 outage, a 401 or
a 429 (never a pass for elicitation); and one that hangs up after a few
answers (the probes done so far keep their findings).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from authz.assess import probes
from authz.cli import main


class _Scripted(BaseHTTPRequestHandler):
    """Answers every POST with the server's status and JSON body, until its answers run out."""

    protocol_version = "HTTP/1.1"
    server: _ScriptedServer

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        if self.server.answers == 0:
            self.close_connection = True  # hang up without a word, as a dying target does
            return
        self.server.answers -= 1
        body = json.dumps(self.server.body).encode()
        self.send_response(self.server.status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep test output clean


class _ScriptedServer(ThreadingHTTPServer):
    def __init__(self, status: int, body: dict[str, object], answers: int) -> None:
        super().__init__(("127.0.0.1", 0), _Scripted)
        self.status, self.body, self.answers = status, body, answers


Serve = Callable[..., str]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """Starts scripted servers (status, JSON body, how many answers) and returns their URLs."""
    started: list[_ScriptedServer] = []

    def start(status: int, body: dict[str, object], answers: int = -1) -> str:
        server = _ScriptedServer(status, body, answers)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in started:
        server.shutdown()
        server.server_close()


@pytest.fixture
def allow_all(serve: Serve) -> str:
    """URL of a server that answers 200 to every POST."""
    return serve(200, {"ok": True})


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


def test_a_server_error_is_never_a_pass(serve: Serve) -> None:
    """An all-503 target: credential probes fail, elicitation is unverifiable with the reason."""
    url = serve(503, {"error": "unavailable", "reason": "dependency_failed"})
    target = probes.Target(
        url=url,
        key="dg_test_key_000000000000",
        unverified_key="dg_test_free_00000000000",
        model="m",
    )
    found = {f.check.id: f for f in probes.run_probes(target)}
    assert found["DG-ID-101"].status == "fail"
    assert "a server error, not a clear answer" in found["DG-ID-101"].evidence
    assert found["DG-ID-102"].status == "fail"
    elicit = found["DG-OG-102"]
    assert elicit.status == "unverifiable"
    assert elicit.evidence[0].endswith("-> HTTP 503 dependency_failed")


def test_elicitation_passes_only_on_a_control_refusal(serve: Serve) -> None:
    """A 429 is no evidence for the elicitation control; a 403 extraction_denied is."""
    for status, reason, expected in (
        (429, "rate_limited", "unverifiable"),
        (401, "key_unknown", "unverifiable"),
        (403, "extraction_denied", "pass"),
        (403, "verification_required", "pass"),
    ):
        url = serve(status, {"reason": reason})
        target = probes.Target(url=url, key="k", unverified_key="dg_test_free_0000000", model="m")
        assert probes.probe_elicitation(target).status == expected, reason


def test_a_refused_test_key_stops_before_probing(
    serve: Serve, capsys: pytest.CaptureFixture[str]
) -> None:
    """--key answered 401 is exit 2 with the answer, and no report."""
    url = serve(401, {"error": "unauthenticated", "reason": "key_unknown"})
    assert main(["assess", "--target", url, "--key", "dg_wrong_key_0000000000"]) == 2
    out = capsys.readouterr()
    assert "--key is refused: HTTP 401 key_unknown" in out.err
    assert out.out == ""


def test_a_target_lost_mid_run_keeps_the_probes_done(serve: Serve) -> None:
    """Probes done before the target hangs up keep their findings; the rest are unverifiable."""
    url = serve(401, {"reason": "key_missing"}, answers=2)
    target = probes.Target(url=url, key="dg_test_key_000000000000", model="m")
    found = probes.run_probes(target)
    assert [f.status for f in found[:2]] == ["pass", "pass"]  # no key, made-up key: 401
    assert {f.status for f in found[2:]} == {"unverifiable"}
    assert target.lost is not None and "stopped answering" in target.lost
    assert found[-1].evidence[0].startswith("not run: the target stopped answering")


def test_a_target_lost_mid_run_is_said_in_the_summary(
    serve: Serve, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command still reports (no exit 2) and its summary says the probes were cut short."""
    url = serve(200, {"ok": True}, answers=3)
    status = main(["assess", "--target", url, "--key", "dg_test_key_000000000000", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert status == 1  # the open model server fails the credential probes first
    assert "cut short: the target stopped answering" in report["parts"]["live probes"]
