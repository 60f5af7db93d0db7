"""Replay: the traffic format, Envoy's view of a record, determinism, agreement with the
live gRPC server, the Redis store, rule comparison and bad input."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

from authz import governance
from authz.clock import ManualClock
from authz.decision import Decision
from authz.errors import ConfigError
from authz.geobuild import demo_database
from authz.replay.cli import render_summary
from authz.replay.run import Summary, replay
from authz.replay.traffic import (
    BadLine,
    TrafficError,
    TrafficRecord,
    as_envoy_sees_it,
    normalize_path,
    parse_line,
    read_traffic,
)
from authz.settings import Settings
from tests.fakes import ACME_KEY, BOB_KEY, BOB_REVOKED, CAROL_KEY, DEMO_ACCOUNTS, DEMO_RULES
from tests.serverthread import ServerThread, demo_settings

T0 = 1_790_000_000.0


def _body(model: str, text: str = "Explain how tides work.") -> str:
    return json.dumps(
        {"model": model, "max_tokens": 256, "messages": [{"role": "user", "content": text}]}
    )


def sample_traffic() -> list[dict[str, Any]]:
    """A sequence that visits most outcomes of the demo rules, in time order."""
    lines: list[dict[str, Any]] = []
    t = T0

    def add(key: str | None, ip: str, body: str | None, **extra: Any) -> None:
        nonlocal t
        t += extra.pop("gap", 7.0)
        headers = {"content-type": "application/json", "user-agent": "sim/1.0"}
        if key is not None:
            headers["x-api-key"] = key
        headers.update(extra.pop("headers", {}))
        line = {"ts": t, "source_ip": ip, "method": "POST", "path": "/v1/messages"}
        line.update(headers=headers, **extra)
        if body is not None:
            line["body"] = body
        lines.append(line)

    for i in range(12):  # carol (free): 3 per minute, then 429
        add(CAROL_KEY, "79.192.3.4", _body("small-1"), gap=2.0 + i % 3)
    for i in range(6):
        add(BOB_KEY, f"86.128.0.{i + 1}", _body("frontier-1"))
        add(ACME_KEY, "73.1.2.3", _body("frontier-9"))
    add(CAROL_KEY, "52.1.2.3", _body("small-1"))  # hosting network, unverified
    add(CAROL_KEY, "153.128.0.9", _body("small-1"))  # JP: outside the free regions
    add(BOB_KEY, "2.176.1.1", _body("frontier-1"))  # embargoed country
    add(BOB_KEY, "79.192.3.4", _body("frontier-1"), headers={"x-forwarded-for": "2.176.1.1"})
    add(BOB_REVOKED, "79.192.3.4", _body("frontier-1"))
    add("dg_nobody_000000000000000", "79.192.3.4", _body("frontier-1"))
    add(None, "79.192.3.4", _body("frontier-1"))
    add(BOB_KEY, "79.192.3.4", '{"model": ')  # cut JSON
    add(BOB_KEY, "79.192.3.4", "\ud800 not utf-8")
    add(CAROL_KEY, "79.192.3.4", _body("frontier-1"))  # model not in the free tier
    add(BOB_KEY, "79.192.3.4", None, path="/v1/models", method="GET")
    add(
        BOB_KEY,
        "79.192.3.4",
        _body("frontier-1", "x" * 5000),  # longer than the 2 KiB buffer below: cut
        headers={"x-distill-reasoning": "full", "x_distill_tier": "enterprise"},
    )
    add(ACME_KEY, "73.1.2.3", _body("frontier-9"), path="/v1//./messages")
    return lines


def _encode(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def settings(**overrides: Any) -> Settings:
    geo = demo_database()
    values: dict[str, Any] = {
        "rules": DEMO_RULES,
        "accounts": DEMO_ACCOUNTS,
        "geoip": geo,
        "asn": geo,
        "max_body_bytes": 2048,
    }
    values.update(overrides)
    return Settings(**values)


def run_replay(data: bytes, conf: Settings | None = None, **kw: Any) -> tuple[str, Summary]:
    out = io.StringIO()
    summary = asyncio.run(replay(conf or settings(), io.BytesIO(data), out, **kw))
    return out.getvalue(), summary


# --- the traffic format ------------------------------------------------------------------


def test_a_line_parses_with_either_time_form_and_ignores_unknown_fields() -> None:
    a = parse_line(
        '{"ts": 1790000000.5, "source_ip": "1.2.3.4", "path": "/v1/messages", "x": 1,'
        ' "headers": {"X-Api-Key": "k"}, "body": "{}"}',
        3,
    )
    b = parse_line('{"ts": "2026-09-21T14:13:20.5Z", "source_ip": "1.2.3.4", "path": "/"}', 4)
    assert a == TrafficRecord(
        3, 1790000000.5, "1.2.3.4", "POST", "/v1/messages", {"x-api-key": "k"}, "{}"
    )
    assert b.ts == 1790000000.5 and b.method == "POST" and b.headers == {} and b.body is None
    assert parse_line(a.to_json(), 3) == a


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"source_ip": "1.2.3.4", "path": "/"}', "missing 'ts'"),
        ('{"ts": true, "source_ip": "1.2.3.4", "path": "/"}', "'ts' must be epoch seconds"),
        ('{"ts": "yesterday", "source_ip": "1.2.3.4", "path": "/"}', "is not an RFC 3339 time"),
        ('{"ts": "2026-09-21T14:13:20", "source_ip": "1.2.3.4", "path": "/"}', "has no time zone"),
        ('{"ts": -5, "source_ip": "1.2.3.4", "path": "/"}', "out of range"),
        ('{"ts": 1, "path": "/"}', "missing 'source_ip'"),
        ('{"ts": 1, "source_ip": "1.2.3.999", "path": "/"}', "is not an IP address"),
        ('{"ts": 1, "source_ip": "1.2.3.4"}', "missing 'path'"),
        ('{"ts": 1, "source_ip": "1.2.3.4", "path": "v1"}', "does not start with '/'"),
        ('{"ts": 1, "source_ip": "1.2.3.4", "path": "/", "headers": []}', "must be an object"),
        ('{"ts": 1, "source_ip": "1.2.3.4", "path": "/", "headers": {"a": 1}}', "string value"),
        ('{"ts": 1, "source_ip": "1.2.3.4", "path": "/", "body": {}}', "'body' must be a string"),
        ("[" * 100_000, "nested too deeply"),
    ],
)
def test_a_bad_line_names_its_problem(text: str, problem: str) -> None:
    with pytest.raises(TrafficError, match=problem):
        parse_line(text, 1)


def test_reading_reports_bad_lines_by_number_and_skips_blank_ones() -> None:
    data = b'{"ts": 1, "source_ip": "1.2.3.4", "path": "/"}\n\nnope\n\xff\xfe\n'
    items = list(read_traffic(io.BytesIO(data)))
    assert isinstance(items[0], TrafficRecord) and items[0].line == 1
    assert [(b.line, b.problem[:8]) for b in items[1:] if isinstance(b, BadLine)] == [
        (3, "not JSON"),
        (4, "not JSON"),
    ]


def test_envoy_view_appends_the_peer_drops_underscores_and_cuts_the_body() -> None:
    record = TrafficRecord(
        1,
        T0,
        "79.192.3.4",
        "POST",
        "/v1//a/./b/../messages?x=1",
        {"x-forwarded-for": "2.176.1.1", "x_tier": "x", "x-api-key": "k"},
        "é" * 10,
    )
    facts = as_envoy_sees_it(record, max_body_bytes=8, request_id="r-1")
    assert facts.headers["x-forwarded-for"] == "2.176.1.1,79.192.3.4"
    assert "x_tier" not in facts.headers
    assert facts.path == "/v1/a/messages?x=1"
    assert facts.body == ("é" * 4).encode() and facts.body_partial
    assert facts.headers["content-length"] == "20"
    assert facts.headers["x-envoy-auth-partial-body"] == "true"
    assert facts.request_id == facts.headers["x-request-id"] == "r-1"
    assert str(facts.client_ip) == "79.192.3.4"
    bare = as_envoy_sees_it(
        TrafficRecord(1, T0, "79.192.3.4", "GET", "/", {}), max_body_bytes=8, request_id="r"
    )
    assert bare.headers["x-forwarded-for"] == "79.192.3.4" and bare.body is None


@pytest.mark.parametrize(
    ("path", "normal"),
    [("/a/b/../c", "/a/c"), ("/../a", "/a"), ("//a//b/", "/a/b/"), ("/a/.", "/a/"), ("/", "/")],
)
def test_paths_are_normalised_like_envoy(path: str, normal: str) -> None:
    assert normalize_path(path) == normal


# --- replaying ---------------------------------------------------------------------------


def test_replay_is_deterministic_and_covers_the_outcomes() -> None:
    data = _encode(sample_traffic())
    first, summary = run_replay(data)
    second, _ = run_replay(data)
    assert first == second
    rows = [json.loads(line) for line in first.splitlines()]
    assert len(rows) == summary.requests == len(sample_traffic())
    assert [r["i"] for r in rows] == list(range(1, len(rows) + 1))
    reasons = {r["reason"] for r in rows}
    assert {
        "ok",
        "rate_limited",
        "country_denied",
        "key_revoked",
        "key_unknown",
        "key_missing",
        "body_malformed",
        "model_not_allowed",
    } <= reasons
    assert summary.by_reason["rate_limited"] >= 1
    ok = next(r for r in rows if r["account"] == "bob-dev" and r["action"] == "allow")
    assert ok["headers"][governance.REASONING] == ok["exposure"] == "summary"
    assert ok["headers"][governance.DECISION_ID] == f"replay-{ok['i']:09d}"
    assert ok["signals"]["country"] == "GB" and ok["signals"]["asn"] == 2856
    assert ok["restricted"] is False
    # A forged X-Forwarded-For does not move the client (source 79.192.3.4 is DE).
    forged_at = next(n for n, x in enumerate(sample_traffic()) if "x-forwarded-for" in x["headers"])
    forged = rows[forged_at]
    assert forged["reason"] == "ok" and forged["signals"]["country"] == "DE"
    # The forged governance header is never passed on: ours overwrite it.
    last_bob = rows[-2]
    assert last_bob["headers"][governance.REASONING] == "summary"
    assert last_bob["headers"][governance.TIER] == "pro"
    assert summary.by_tier["free"] >= 12 and summary.by_action["deny"] >= 10


def test_bad_lines_are_counted_with_their_numbers_and_the_rest_replays() -> None:
    lines = [json.dumps(line) for line in sample_traffic()[:3]]
    data = "\n".join(
        [lines[0], "{oops", lines[1], '{"ts": 1, "source_ip": "x", "path": "/"}', lines[2]]
    )
    out, summary = run_replay(data.encode() + b"\n\xff\n")
    assert summary.requests == 3 and summary.bad_lines == 3
    assert [b.line for b in summary.bad_examples] == [2, 4, 6]
    assert [json.loads(r)["i"] for r in out.splitlines()] == [1, 3, 5]
    text = render_summary(summary, 1.0)
    assert "skipped 3 bad lines" in text and "line 4: 'source_ip' 'x' is not an IP address" in text


def test_time_going_back_is_counted() -> None:
    lines = sample_traffic()[:3]
    lines[1]["ts"] = T0 - 100
    _, summary = run_replay(_encode(lines))
    assert summary.time_went_back == 1


class _Recorder:
    def __init__(self) -> None:
        self.decisions: list[Decision] = []

    def record(self, facts: Any, decision: Decision) -> None:
        self.decisions.append(decision)


def _envoy_check_request(line: dict[str, Any], max_body: int) -> external_auth_pb2.CheckRequest:
    """What Envoy (envoy/sidecar.yaml) sends for one traffic line, built independently."""
    req = external_auth_pb2.CheckRequest()
    req.attributes.source.address.socket_address.address = line["source_ip"]
    req.attributes.source.address.socket_address.port_value = 50000
    http = req.attributes.request.http
    http.id = "1"
    http.method = line.get("method", "POST")
    path = line["path"].replace("//", "/").replace("/./", "/")
    http.path = path
    http.host = "api.example"
    headers = {k: v for k, v in line["headers"].items() if "_" not in k}
    xff = headers.get("x-forwarded-for")
    headers["x-forwarded-for"] = f"{xff},{line['source_ip']}" if xff else line["source_ip"]
    headers.update({":method": http.method, ":path": path, "x-request-id": "rid"})
    body = line.get("body")
    if body is not None:
        raw = body.encode("utf-8", errors="surrogatepass")
        headers["content-length"] = str(len(raw))
        if len(raw) > max_body:
            headers["x-envoy-auth-partial-body"] = "true"
        http.raw_body = raw[:max_body]
        http.size = len(raw[:max_body])
    http.headers.update(headers)
    return req


def _comparable(d: Decision) -> tuple[Any, ...]:
    def drop_id(headers: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
        return tuple(h for h in headers if h[0] != governance.DECISION_ID)

    return (
        d.action,
        d.reason,
        d.rule,
        d.model,
        str(d.client_ip),
        d.location,
        d.flags,
        d.counters,
        d.estimated_tokens,
        drop_id(d.upstream_headers),
        d.remove_headers,
        drop_id(d.response_headers),
    )


def test_replay_agrees_with_the_live_grpc_server() -> None:
    lines = sample_traffic()
    clock = ManualClock(T0)
    live = _Recorder()

    def use_recorder(app: Any) -> None:
        app.pipeline._sink = live

    server = ServerThread(demo_settings(max_body_bytes=2048), use_recorder, clock=clock)
    try:
        with grpc.insecure_channel(server.target) as channel:
            stub = external_auth_pb2_grpc.AuthorizationStub(channel)
            statuses = []
            for line in lines:
                clock.set(line["ts"])
                resp = stub.Check(_envoy_check_request(line, 2048), timeout=5)
                statuses.append(resp.status.code)
    finally:
        server.close()
    replayed = _Recorder()
    out = io.StringIO()

    async def run() -> None:
        from authz.replay.run import Replayer

        r = Replayer(settings())
        r.app.pipeline._sink = replayed
        for n, line in enumerate(lines, 1):
            record = parse_line(json.dumps(line), n)
            out.write(json.dumps(r.row(record, await r.decide(record))) + "\n")
        await r.close()

    asyncio.run(run())
    assert len(live.decisions) == len(replayed.decisions) == len(lines)
    for n, (a, b) in enumerate(zip(live.decisions, replayed.decisions, strict=True), 1):
        assert _comparable(a) == _comparable(b), f"line {n}"
    rows = [json.loads(r) for r in out.getvalue().splitlines()]
    assert [r["status"] == 200 for r in rows] == [code == 0 for code in statuses]


@pytest.mark.redis
def test_replay_on_redis_matches_memory_and_refuses_a_used_store(redis_url: str) -> None:
    data = _encode(sample_traffic())
    on_memory, _ = run_replay(data)
    on_redis, _ = run_replay(data, settings(store=redis_url))
    assert on_redis == on_memory
    with pytest.raises(ConfigError, match=r"already holds \d+ keys"):
        run_replay(data, settings(store=redis_url))
    again, _ = run_replay(data, settings(store=redis_url), allow_used_store=True)
    assert again != on_memory  # the counters carried over: carol is limited sooner


def test_compare_reports_what_a_rules_change_does(tmp_path: Path) -> None:
    stricter = DEMO_RULES.read_text().replace(
        "      ip_country: [embargoed]\n", "      ip_country: [embargoed, GB]\n", 1
    )
    new_rules = tmp_path / "rules.yaml"
    new_rules.write_text(stricter)
    data = _encode(sample_traffic())
    out, summary = run_replay(data, settings(rules=new_rules), compare_rules=DEMO_RULES)
    rows = [json.loads(line) for line in out.splitlines()]
    changed = [r for r in rows if "was" in r]
    assert summary.changed == len(changed) == 6  # bob's six requests from GB
    assert {(r["was"]["action"], r["action"], r["reason"]) for r in changed} == {
        ("allow", "deny", "country_denied")
    }
    assert summary.transitions == {("allow summary", "deny country_denied"): 6}
    report = summary.to_json()["compare"]
    assert report["changed"] == 6 and report["changed_by_tier"] == {"pro": 6}
    assert "allow summary -> deny country_denied: 6" in render_summary(summary, 1.0)


def test_cli_writes_decisions_and_a_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from authz.cli import main

    traffic = tmp_path / "traffic.jsonl"
    traffic.write_bytes(_encode(sample_traffic()) + b"garbage\n")
    out, summary_file = tmp_path / "decisions.jsonl", tmp_path / "summary.json"
    args = ["replay", str(traffic), "--out", str(out), "--rules", str(DEMO_RULES)]
    args += ["--accounts", str(DEMO_ACCOUNTS), "--geoip", "demo", "--summary", str(summary_file)]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert f"replayed {len(sample_traffic())} requests" in err and "skipped 1 bad lines" in err
    summary = json.loads(summary_file.read_text())
    assert summary["requests"] == len(out.read_text().splitlines()) == len(sample_traffic())
    assert summary["skipped_examples"][0]["line"] == len(sample_traffic()) + 1
    assert main(["replay", str(traffic), "--out", str(out), "--rules", "/nonexistent"]) == 2
    assert "/nonexistent" in capsys.readouterr().err
    assert (
        main(
            ["replay", str(tmp_path / "none.jsonl"), "--out", str(out), "--rules", str(DEMO_RULES)]
        )
        == 2
    )


def test_cli_writes_a_chained_audit_trail_in_traffic_time(tmp_path: Path) -> None:
    from authz.audit.verify import ChainChecker, file_entries
    from authz.cli import main

    traffic = tmp_path / "traffic.jsonl"
    traffic.write_bytes(_encode(sample_traffic()))
    out, audit = tmp_path / "decisions.jsonl", tmp_path / "audit.jsonl"
    args = ["replay", str(traffic), "--out", str(out), "--rules", str(DEMO_RULES), "--quiet"]
    args += ["--accounts", str(DEMO_ACCOUNTS), "--geoip", "demo", "--audit-out", str(audit)]
    args += ["--audit-request-content", "--audit-request-content-bytes", "16"]
    assert main(args) == 0
    first = audit.read_bytes()
    assert main(args) == 0
    assert audit.read_bytes() == first  # deterministic, like the decisions
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    records = [json.loads(line) for line in first.splitlines()]
    assert len(records) == len(rows) == len(sample_traffic())
    assert [r["decision_id"] for r in records] == [f"replay-{r['i']:09d}" for r in rows]
    assert [r["reason"] for r in records] == [r["reason"] for r in rows]
    assert {r["chain"] for r in records} == {"replay"}
    # Timed by the traffic, not by the machine running the replay.
    assert records[0]["time"].startswith(
        time.strftime("%Y-%m-%dT%H:%M", time.gmtime(sample_traffic()[0]["ts"]))
    )
    # Request content is kept without credentials, the body cut at 16 bytes.
    kept = next(r for r in records if r.get("content", {}).get("body"))
    assert base64.b64decode(kept["content"]["body"]) == sample_traffic()[0]["body"].encode()[:16]
    names = {h["name"] for r in records for h in r.get("content", {}).get("headers", [])}
    assert not names & {"authorization", "x-api-key"}
    checker = ChainChecker()
    with open(audit, "rb") as f:
        assert checker.check(file_entries(f)) is None
    assert checker.records == len(rows)
