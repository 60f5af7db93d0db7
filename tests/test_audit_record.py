"""The audit record: its fields from real pipeline decisions, and its canonical JSON."""

from __future__ import annotations

import asyncio
import dataclasses
import json

from opentelemetry.sdk.trace import TracerProvider

from authz.audit.queue import AuditTrail
from authz.audit.record import (
    build_record,
    client_network,
    from_json,
    matched_rules,
    to_dict,
    to_json,
)
from authz.clock import ManualClock
from authz.decision import Decision
from authz.facts import RequestFacts, parse_ip
from authz.location import AddressKind, Location
from tests.fakes import (
    BOB_KEY,
    BOB_REVOKED,
    CAROL_KEY,
    DEMO_RULES,
    StaticGeo,
    StaticRules,
    facts,
    make_pipeline,
)

BODY = b'{"model": "small-1", "max_tokens": 100}'
GEO = StaticGeo({"79.192.3.4": Location(AddressKind.PUBLIC, "DE", 3320, "Deutsche Telekom AG")})


def decide(request: RequestFacts, **kw: object) -> tuple[RequestFacts, Decision]:
    """One check through a demo pipeline; the facts and decision its sink received."""
    pipeline, sink = make_pipeline(geo=GEO, **kw)  # type: ignore[arg-type]
    asyncio.run(pipeline.check(request))
    return sink.records[-1]


def test_record_of_an_allowed_request() -> None:
    """Who, from where, what and the decision are all in the record; the path loses its query."""
    request = facts(
        {"x-api-key": BOB_KEY, "content-length": str(len(BODY))},
        body=BODY,
        path="/v1/messages?beta=true&token=secret",
    )
    f, d = decide(request)
    r = build_record(f, d, trace_id="")
    assert r.schema == 1
    assert r.time.ToMicroseconds() == round(d.time * 1_000_000)  # the check's start
    assert (r.decision_id, r.request_id) == (d.decision_id, "req-1")
    assert (r.key_id, r.account, r.entity, r.tier) == ("k_bob_1", "bob-dev", "bob-dev", "pro")
    assert (r.kyc, r.kyc_country) == ("verified", "DE")
    assert (r.client_ip, r.client_network) == ("79.192.3.4", "79.192.3.0/24")
    assert (r.country, r.address_kind, r.asn, r.as_org) == (
        "DE",
        "public",
        3320,
        "Deutsche Telekom AG",
    )
    assert (r.method, r.path, r.model) == ("POST", "/v1/messages", "small-1")
    assert r.request_bytes == len(BODY)
    assert r.estimated_tokens == d.estimated_tokens > 0
    assert (r.action, r.status, r.reason, r.rule) == ("allow", 200, "ok", "tier:pro")
    assert list(r.matched_rules) == ["tier:pro"]
    assert r.rules_version == d.rules_version
    counters = {c.name: (c.limit, c.remaining) for c in r.counters}
    assert counters["account-requests-1m"] == (60, 59)
    assert len(counters) == len(d.counters)
    assert (r.sequence, r.prev_hash, r.hash, r.chain) == (0, "", "", "")  # chained by a sink


def test_record_of_a_denial_names_the_key_id_never_the_key() -> None:
    """A revoked key's denial carries its id, status and reason; the key is nowhere in it."""
    f, d = decide(facts({"authorization": f"Bearer {BOB_REVOKED}"}))
    r = build_record(f, d, trace_id="")
    assert (r.action, r.status, r.reason, r.key_id) == ("deny", 403, "key_revoked", "k_bob_old")
    assert BOB_REVOKED not in to_json(r)


def test_signals_flags_and_matched_rules() -> None:
    """A jurisdiction flag rule is a signal and a matched rule (`jurisdiction:<id>`)."""
    # carol (unverified, declared FR) calls from a US address: the demo flags the mismatch.
    f, d = decide(facts({"x-api-key": CAROL_KEY}, source="8.8.8.8"))
    r = build_record(f, d, trace_id="")
    assert list(r.signals) == ["kyc-mismatch-unverified"]
    assert list(r.matched_rules) == ["tier:free", "jurisdiction:kyc-mismatch-unverified"]


def test_matched_rules_qualify_every_kind_of_rule() -> None:
    """Volume signals name their tier's limit, shadow rules their jurisdiction rule; the
    pipeline's own signals are not rules, and nothing is listed twice."""
    _, d = decide(facts({"x-api-key": BOB_KEY}))
    d = dataclasses.replace(
        d,
        flags=("xff_invalid", "volume_spike_account", "meter_degraded", "watch-vpn"),
        shadow_denies=("embargo-strict", "watch-vpn"),
    )
    assert matched_rules(d) == [
        "tier:pro",
        "tier:pro:limits:volume_spike_account",
        "jurisdiction:watch-vpn",
        "jurisdiction:embargo-strict",
    ]


def test_dry_run_records_what_would_have_been_denied() -> None:
    """In dry-run mode the record says allow (status 200) and names the real reason."""
    rules = StaticRules.of(DEMO_RULES.read_text().replace("mode: enforce", "mode: dry_run"))
    f, d = decide(facts({"x-api-key": BOB_REVOKED}), rules=rules)
    r = build_record(f, d, trace_id="")
    assert (r.action, r.status, r.reason, r.would_deny) == ("allow", 200, "ok", "key_revoked")


def test_client_address_after_trusted_hops_and_its_ipv6_network() -> None:
    """The record's address is the one the rules used (X-Forwarded-For behind a trusted
    hop), pooled by /48 for IPv6."""
    # Envoy (use_remote_address) appends its own view of the peer to X-Forwarded-For.
    xff = "2001:db8:1234:5678::1,127.0.0.1"
    request = facts({"x-api-key": BOB_KEY, "x-forwarded-for": xff}, source="127.0.0.1")
    f, d = decide(request)
    r = build_record(f, d, trace_id="")
    assert (r.client_ip, r.client_network) == ("2001:db8:1234:5678::1", "2001:db8:1234::/48")
    ip = parse_ip("10.1.2.3")
    assert ip is not None and client_network(ip) == "10.1.2.0/24"


def test_unlocatable_source_leaves_the_address_empty() -> None:
    """A source that is not an IP (a pipe) gives an empty client_ip, not garbage to pool on."""
    f, d = decide(facts({"x-api-key": BOB_KEY}, source="pipe:/run/envoy.sock"))
    r = build_record(f, d, trace_id="")
    assert (r.reason, r.client_ip, r.client_network) == ("source_address_invalid", "", "")


def test_canonical_json_round_trip() -> None:
    """to_json is sorted, compact proto3 JSON with snake_case names; from_json reads it back."""
    f, d = decide(facts({"x-api-key": BOB_KEY}, body=BODY), clock=ManualClock(1_790_000_000.5))
    r = build_record(f, d, trace_id="0af7651916cd43dd8448eb211c80319c")
    text = to_json(r)
    fields = json.loads(text)
    assert text == json.dumps(fields, sort_keys=True, separators=(",", ":"))
    assert {"decision_id", "key_id", "client_network", "estimated_tokens", "rules_version"} <= set(
        fields
    )
    assert fields["time"] == "2026-09-21T14:13:20.500Z"
    assert fields["estimated_tokens"] == str(r.estimated_tokens)  # 64-bit ints are strings
    assert from_json(text) == r
    assert to_json(from_json(text)) == text
    assert to_dict(r) == fields


def test_from_json_ignores_fields_of_a_newer_schema() -> None:
    """A reader on this schema still reads a record that has gained fields."""
    text = json.dumps({"schema": 2, "decision_id": "d1", "new_field": {"x": 1}})
    assert from_json(text).decision_id == "d1"


def test_queue_captures_the_current_trace_id() -> None:
    """Recording inside a span puts its W3C trace id into the record; outside, it is empty."""
    trail = AuditTrail([], chain="t")
    trail.workers = [object()]  # type: ignore[list-item]  # any worker: the queue is on
    _, d = decide(facts({"x-api-key": BOB_KEY}))
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("check") as span:
        trail.record(facts(), d)
        trace_id = format(span.get_span_context().trace_id, "032x")
    trail.record(facts(), d)
    queued = list(trail._queue)
    assert [p.trace_id for p in queued] == [trace_id, ""]
