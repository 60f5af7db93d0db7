"""Request content in audit records (opt-in, no secrets) and `audit export` to replay traffic."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
from pathlib import Path
from typing import Any

import pytest

from authz.accounts import load_accounts_file
from authz.app import build_app, open_audit
from authz.audit.chain import seal
from authz.audit.export import ExportSummary, export, stand_in_key
from authz.audit.record import (
    ContentPolicy,
    build_record,
    from_json,
    to_dict,
    to_json,
)
from authz.audit_cli import register
from authz.clock import ManualClock
from authz.errors import ConfigError
from authz.facts import RequestFacts, parse_ip
from authz.gen.distill_guard.audit.v1.audit_pb2 import AuditRecord
from authz.geobuild import demo_database
from authz.keys import KeyHasher, check_key_shape
from authz.replay.run import replay
from authz.replay.traffic import parse_line
from authz.rules import load_rules
from authz.settings import Settings
from tests.audit_support import intact_file, intact_lines
from tests.fakes import (
    BOB_KEY,
    BOB_REVOKED,
    CAROL_KEY,
    DAVE_EXPIRED,
    DEMO_ACCOUNTS,
    DEMO_RULES,
    StaticRules,
    facts,
    make_pipeline,
)

BODY = b'{"model": "small-1", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}'
T0 = 1_790_000_000.0
DEMO_KEY_HEADERS = load_rules(DEMO_RULES).key_headers


def policy(max_body_bytes: int = 65_536) -> ContentPolicy:
    """Content kept as `serve --audit-request-content` keeps it, over the demo rules."""
    return ContentPolicy(max_body_bytes, key_headers=lambda: DEMO_KEY_HEADERS)


def _settings(**overrides: Any) -> Settings:
    """Settings over the demo rules, accounts and GeoIP database (as replay uses them)."""
    geo = demo_database()
    values: dict[str, Any] = {
        "rules": DEMO_RULES,
        "accounts": DEMO_ACCOUNTS,
        "geoip": geo,
        "asn": geo,
        "max_body_bytes": 4096,
    }
    values.update(overrides)
    return Settings(**values)


def record_of(request: RequestFacts, content: ContentPolicy | None) -> AuditRecord:
    """The record of one check of `request` by a demo pipeline."""
    pipeline, sink = make_pipeline()
    asyncio.run(pipeline.check(request))
    f, d = sink.records[-1]
    return build_record(f, d, trace_id="", content=content)


def headers_of(record: dict[str, Any]) -> dict[str, str]:
    """The kept headers of a record's content, by name."""
    return {h["name"]: h["value"] for h in record["content"].get("headers", [])}


def envoy_facts(
    headers: dict[str, str],
    *,
    body: bytes | None = None,
    source: str = "79.192.3.4",
    xff: str = "",
    rid: str = "rid-1",
) -> RequestFacts:
    """Facts as the edge builds them behind envoy/sidecar.yaml: pseudo headers, x-request-id,
    Envoy's own headers, and the peer appended to X-Forwarded-For (loopback: the host)."""
    appended = "10.0.0.5" if source.startswith("127.") else source
    full = {
        ":authority": "api.example",
        ":method": "POST",
        ":path": "/v1/messages?beta=1",
        ":scheme": "http",
        **headers,
        "x-forwarded-for": f"{xff},{appended}" if xff else appended,
        "x-request-id": rid,
        "x-envoy-expected-rq-timeout-ms": "15000",
    }
    if body is not None:
        full["content-length"] = str(len(body))
    return RequestFacts(
        method="POST",
        path="/v1/messages?beta=1",
        host="api.example",
        headers=full,
        client_ip=parse_ip(source),
        source=source,
        body=body,
        request_id=rid,
        protocol="HTTP/1.1",
    )


# --- request content in the record ---------------------------------------------------------


def test_content_is_recorded_only_when_enabled() -> None:
    """Without a content policy the record has no content (and the trail none); with one, it
    has the source, the raw path with its query, the kept headers and the body."""
    request = envoy_facts({"x-api-key": BOB_KEY, "content-type": "application/json"}, body=BODY)
    assert "content" not in to_dict(record_of(request, None))
    assert open_audit(_settings(audit="none")).content is None
    assert open_audit(_settings(audit="none", audit_request_content=True)).content is not None
    content = to_dict(record_of(request, policy()))["content"]
    assert content["source"] == "79.192.3.4"
    assert content["raw_path"] == "/v1/messages?beta=1"
    assert headers_of({"content": content}) == {
        "host": "api.example",
        "content-type": "application/json",
        "content-length": str(len(BODY)),
    }
    assert [h["name"] for h in content["headers"]] == ["host", "content-type", "content-length"]
    assert from_json(json.dumps({"decision_id": "d", "content": content})).content.body == BODY
    assert content["body_size"] == str(len(BODY)) and "body_cut" not in content


def test_no_key_or_cookie_is_ever_in_the_record() -> None:
    """Key headers (the rules' and the defaults), cookies and proxy credentials are dropped:
    none of the secrets appears anywhere in the serialized record."""
    secrets = {
        "authorization": f"Bearer {BOB_REVOKED}",
        "x-api-key": BOB_KEY,
        "cookie": "session=c00kie-s3cret-value",
        "set-cookie": "id=set-c00kie-s3cret",
        "proxy-authorization": "Basic cHJveHktczNjcmV0",
    }
    text = to_json(record_of(envoy_facts({**secrets, "accept": "*/*"}, body=BODY), policy()))
    for value in secrets.values():
        assert value.split()[-1] not in text
    assert BOB_REVOKED not in text and BOB_KEY not in text and "c00kie" not in text
    record = json.loads(text)
    assert set(headers_of(record)) == {"host", "accept", "content-length"}


def test_key_headers_are_those_of_the_rules_in_force(tmp_path: Path) -> None:
    """A key header the rules add on a reload is dropped from the records built after it:
    the server's audit trail asks the rules it serves, not a copy."""
    path = tmp_path / "rules.yaml"
    text = DEMO_RULES.read_text()
    path.write_text(text)
    app = build_app(_settings(rules=path, audit="none", audit_request_content=True))
    assert app.audit is not None and app.audit.content is not None
    content = app.audit.content
    assert set(content.key_headers()) == {"authorization", "x-api-key"}
    path.write_text(text.replace("[authorization, x-api-key]", "[x-goog-api-key, x-api-key]"))
    app.rules.poll(force=True)
    assert set(content.key_headers()) == {"x-goog-api-key", "x-api-key"}

    rules = app.rules.current()
    pipeline, sink = make_pipeline(rules=StaticRules(rules))
    asyncio.run(pipeline.check(envoy_facts({"x-goog-api-key": BOB_KEY, "accept": "*/*"})))
    f, d = sink.records[-1]
    assert d.reason.value == "ok"
    rec = build_record(f, d, trace_id="", content=content)
    assert BOB_KEY not in to_json(rec)
    assert [h.name for h in rec.content.headers] == ["host", "accept"]


@pytest.mark.parametrize(
    ("source", "xff", "kept"),
    [
        ("79.192.3.4", "", None),  # only Envoy's entry: no header left
        ("79.192.3.4", "90.1.2.3, 10.9.8.7", "90.1.2.3, 10.9.8.7"),  # the client's proxies stay
        ("127.0.0.1", "2.176.1.1", "2.176.1.1"),  # loopback peer: Envoy wrote the host's address
    ],
)
def test_envoys_forwarded_for_entry_is_dropped(source: str, xff: str, kept: str | None) -> None:
    """The entry Envoy appended for the peer is not kept (it is `source`, and replay adds it
    back); the entries before it are."""
    record = to_dict(record_of(envoy_facts({}, source=source, xff=xff), policy()))
    assert headers_of(record).get("x-forwarded-for") == kept
    assert record["content"]["source"] == source


def test_hop_headers_are_dropped() -> None:
    """Pseudo headers, x-request-id and Envoy's x-envoy-* headers are not request content."""
    names = set(headers_of(to_dict(record_of(envoy_facts({"accept": "*/*"}), policy()))))
    assert names == {"host", "accept"}


def test_body_is_cut_at_the_cap() -> None:
    """The body keeps at most the configured bytes; body_cut and the full size say so."""
    rec = record_of(envoy_facts({}, body=BODY), policy(max_body_bytes=10))
    assert rec.content.body == BODY[:10]
    assert rec.content.body_cut and rec.content.body_size == len(BODY)
    empty = record_of(envoy_facts({}, body=BODY), policy(max_body_bytes=0))
    assert empty.content.body == b"" and empty.content.body_cut
    assert empty.content.body_size == len(BODY)


def test_a_body_envoy_cut_is_marked_cut() -> None:
    """A partial body from Envoy is cut too, and its size is the Content-Length."""
    request = facts({"content-length": "5000"}, body=BODY, partial=True)
    rec = record_of(request, policy())
    assert rec.content.body == BODY and rec.content.body_cut and rec.content.body_size == 5000


def test_non_utf8_body_survives_exactly_and_the_chain_verifies() -> None:
    """A body that is not UTF-8 is kept byte for byte (base64 in JSON); records with content
    seal and verify like any other."""
    raw = b'\xff\xfe{"model": "small-1"}\x80'
    rec = record_of(envoy_facts({"x-api-key": BOB_KEY}, body=raw), policy())
    lines = []
    head = None
    for i in range(3):
        rec.decision_id = f"d{i}"
        line, head = seal(to_dict(rec), head, "c")
        lines.append(line)
    intact_lines(lines)
    assert from_json(lines[0]).content.body == raw
    assert BOB_KEY not in "".join(lines)


def test_settings_validate_the_cap() -> None:
    """A negative cap is refused at start-up, naming the flag."""
    with pytest.raises(ConfigError) as exc:
        open_audit(_settings(audit="none", audit_request_content_bytes=-1))
    assert str(exc.value) == "--audit-request-content-bytes: must be at least 0 (got -1)"


# --- export ----------------------------------------------------------------------------------


def _body(model: str) -> bytes:
    """A request body naming `model`."""
    return json.dumps({"model": model, "max_tokens": 64}).encode()


# (headers, body, source, client XFF): what each client sent, in order, one second apart.
REQUESTS: list[tuple[dict[str, str], bytes | None, str, str]] = [
    ({"x-api-key": BOB_KEY}, _body("small-1"), "79.192.3.4", ""),
    ({"authorization": f"Bearer {BOB_KEY}"}, _body("frontier-2"), "79.192.3.4", ""),
    ({"x-api-key": BOB_REVOKED}, _body("small-1"), "79.192.3.4", ""),
    ({}, _body("small-1"), "79.192.3.4", ""),
    ({"x-api-key": BOB_KEY}, _body("small-1"), "127.0.0.1", "2.176.1.1"),
    ({"x-api-key": DAVE_EXPIRED}, _body("small-1"), "79.192.3.4", ""),
    ({"x-api-key": CAROL_KEY}, _body("frontier-2"), "127.0.0.1", "90.1.2.3"),
    *[({"x-api-key": CAROL_KEY}, _body("small-1"), "127.0.0.1", "90.1.2.3")] * 4,
    ({"x-api-key": BOB_KEY}, b'\xff{"model": "small-1"}', "79.192.3.4", ""),
]


async def _record_live(path: Path, *, content: bool = True) -> list[tuple[str, str]]:
    """Decide REQUESTS with the server's own wiring, audit to a JSON-lines file."""
    clock = ManualClock(T0)
    app = build_app(
        _settings(audit=f"jsonl:{path}", audit_chain="g0", audit_request_content=content),
        clock=clock,
    )
    app.start_background()
    outcomes = []
    try:
        for i, (headers, body, source, xff) in enumerate(REQUESTS):
            clock.set(T0 + i)
            request = envoy_facts(
                {"content-type": "application/json", **headers},
                body=body,
                source=source,
                xff=xff,
                rid=f"rid-{i}",
            )
            d = await app.pipeline.check(request)
            outcomes.append((d.action.value, d.reason.value))
    finally:
        await app.close()
    return outcomes


def _export(*paths: Path, **kw: Any) -> tuple[str, str, ExportSummary]:
    """Export audit files in memory: the traffic text, the accounts text, the summary."""
    traffic, accounts = io.StringIO(), io.StringIO()
    sources = [(str(p), io.BytesIO(p.read_bytes())) for p in paths]
    summary = export(sources, traffic, accounts, **kw)
    return traffic.getvalue(), accounts.getvalue(), summary


def test_stand_in_keys_are_valid_and_deterministic() -> None:
    """The stand-in of a key id is a well-formed key, the same every time, and differs by id."""
    key = stand_in_key("k_bob_1")
    check_key_shape(key)
    assert key.startswith("dg_export_") and len(key) == len("dg_export_") + 32
    assert key == stand_in_key("k_bob_1") != stand_in_key("k_bob_2")


def test_export_round_trip_replays_to_the_same_decisions(tmp_path: Path) -> None:
    """Decisions recorded with content, exported, and replayed with the exported accounts and
    the same rules come out the same, request by request; the chain verifies."""
    audit = tmp_path / "audit.jsonl"
    live = asyncio.run(_record_live(audit))
    assert ("deny", "rate_limited") in live and ("deny", "key_revoked") in live
    assert ("deny", "country_denied") in live and ("deny", "key_expired") in live
    assert ("deny", "body_malformed") in live
    intact_file(audit)
    for secret in (BOB_KEY, BOB_REVOKED, CAROL_KEY, DAVE_EXPIRED):
        assert secret not in audit.read_text()

    traffic, accounts, summary = _export(audit)
    lines = traffic.splitlines()
    assert len(lines) == len(REQUESTS) == summary.exported
    parsed = [parse_line(line, i) for i, line in enumerate(lines, start=1)]
    assert [p.ts for p in parsed] == [T0 + i for i in range(len(REQUESTS))]
    assert parsed[4].headers["x-forwarded-for"] == "2.176.1.1"  # Envoy's entry left out
    assert parsed[1].headers["x-api-key"] == stand_in_key("k_bob_1")
    assert "x-api-key" not in parsed[3].headers and summary.without_key == 1
    assert summary.bodies_not_utf8 == 1
    raw = REQUESTS[-1][1]  # not UTF-8: its bytes travel as \udcXX escapes (docs/replay.md)
    assert parsed[-1].body is not None and raw is not None
    assert parsed[-1].body.encode("utf-8", "surrogateescape") == raw
    assert lines[-1].isascii()

    accounts_file = tmp_path / "accounts.jsonl"
    accounts_file.write_text(accounts)
    entries = {e.account: e for e in load_accounts_file(accounts_file)}
    assert set(entries) == {"bob-dev", "dave-pending", "carol-trial"}
    bob_keys = {k.id: k for k in entries["bob-dev"].keys}
    assert bob_keys["k_bob_old"].revoked and not bob_keys["k_bob_1"].revoked
    assert bob_keys["k_bob_1"].sha256 == KeyHasher(None).digest(stand_in_key("k_bob_1"))
    assert entries["carol-trial"].model_dump(include={"tier", "kyc", "country"}) == {
        "tier": "free",
        "kyc": "unverified",
        "country": "FR",
    }
    assert entries["dave-pending"].keys[0].expires is not None

    out = io.StringIO()
    conf = _settings(accounts=accounts_file)
    asyncio.run(replay(conf, io.BytesIO(traffic.encode()), out))
    replayed = [(row["action"], row["reason"]) for row in map(json.loads, out.getvalue().split())]
    assert replayed == live


def test_unknown_keys_export_without_a_key_and_replay_as_key_missing(tmp_path: Path) -> None:
    """The key of an unknown-key request was never known: it exports without a key header."""
    audit = tmp_path / "audit.jsonl"
    clock = ManualClock(T0)
    app = build_app(_settings(audit=f"jsonl:{audit}", audit_request_content=True), clock=clock)

    async def run() -> None:
        app.start_background()
        await app.pipeline.check(envoy_facts({"x-api-key": "dg_nobody_knows_this_key_1"}))
        await app.close()

    asyncio.run(run())
    assert json.loads(audit.read_text())["reason"] == "key_unknown"
    traffic, accounts, summary = _export(audit)
    assert "x-api-key" not in parse_line(traffic, 1).headers
    assert accounts == "" and summary.without_key == 1
    assert "dg_nobody_knows_this_key_1" not in audit.read_text()


def test_export_counts_what_it_cannot_use(tmp_path: Path) -> None:
    """Records without content are counted, not errors; lines that are not records are
    reported with file:line and skipped; records of several files come out sorted by time;
    a record read twice is exported once; --since/--until leave records out."""
    with_content = tmp_path / "a.jsonl"
    without = tmp_path / "b.jsonl"
    asyncio.run(_record_live(with_content))
    asyncio.run(_record_live(without, content=False))
    good = with_content.read_text().splitlines()
    mixed = tmp_path / "c.jsonl"
    mixed.write_text("\n".join([good[5], "not json", '{"foo": 1}', "[1]", good[0], ""]) + "\n")
    traffic, _, summary = _export(mixed, without, with_content)
    assert summary.no_content == len(REQUESTS)
    assert summary.duplicates == 2 and summary.exported == len(REQUESTS)
    assert summary.bad_lines == 3
    assert summary.problems[:3] == [
        f"{mixed}:2: not an audit record (not a JSON object)",
        f"{mixed}:3: not an audit record (no decision_id or time)",
        f"{mixed}:4: not an audit record (not a JSON object)",
    ]
    ts = [json.loads(line)["ts"] for line in traffic.splitlines()]
    assert ts == sorted(ts)
    report = summary.render("t.jsonl", "a.jsonl")
    assert (
        f"{len(REQUESTS)} records have no request content: enable --audit-request-content" in report
    )
    _, _, window = _export(with_content, since=T0 + 2, until=T0 + 4)
    assert window.exported == 2 and window.outside_window == len(REQUESTS) - 2


def main(argv: list[str]) -> int:
    """`distill-guard` with only the audit commands (the rest of the CLI is not needed here)."""
    parser = argparse.ArgumentParser(prog="distill-guard")
    register(parser.add_subparsers(dest="command", required=True))
    ns = parser.parse_args(argv)
    return int(ns.func(ns))


def test_export_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`distill-guard audit export` writes both files and a summary on stderr."""
    audit = tmp_path / "audit.jsonl"
    asyncio.run(_record_live(audit))
    out, accounts = tmp_path / "traffic.jsonl", tmp_path / "accounts.jsonl"
    argv = ["audit", "export", str(audit), "--out", str(out), "--accounts-out", str(accounts)]
    assert main([*argv, "--since", "2026-09-21T00:00:00Z"]) == 0
    err = capsys.readouterr().err
    assert err.startswith(f"exported {len(REQUESTS)} of {len(REQUESTS)} records (")
    assert len(out.read_text().splitlines()) == len(REQUESTS)
    assert len(load_accounts_file(accounts)) == 3
    assert main([*argv, "--since", "yesterday-ish"]) == 2
