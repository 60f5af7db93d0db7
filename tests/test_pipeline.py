"""The decision pipeline over first-party fakes: identity, tiers, bodies, faults, dry run."""

from __future__ import annotations

import asyncio
import json

import pytest

from authz.accounts import KeyRecord, Kyc
from authz.clock import ManualClock
from authz.governance import DRY_RUN_DENY, GOVERNANCE_PREFIX
from authz.keys import KeyHasher
from authz.reasons import Reason
from authz.registry import MemoryRegistry
from tests.fakes import (
    ACME_KEY,
    BOB_KEY,
    BOB_REVOKED,
    CAROL_KEY,
    DAVE_EXPIRED,
    DAVE_KEY,
    BrokenRegistry,
    SlowRegistry,
    StaticRules,
    account,
    demo_registry,
    facts,
    make_pipeline,
)


def decide(headers: dict[str, str], **kw: object):  # type: ignore[no-untyped-def]
    """Run one check through a demo pipeline."""
    pipeline, _ = make_pipeline()
    return asyncio.run(pipeline.check(facts(headers, **kw)))  # type: ignore[arg-type]


def test_allowed_request_carries_identity_headers() -> None:
    """A valid key is allowed, and the upstream learns account, entity, tier and model."""
    d = decide({"authorization": f"Bearer {ACME_KEY}"}, body=b'{"model": "frontier-2"}')
    assert d.allowed and d.reason is Reason.OK and d.status == 200
    headers = dict(d.upstream_headers)
    assert headers["x-distill-account"] == "acme-research"
    assert headers["x-distill-entity"] == "acme"
    assert headers["x-distill-tier"] == "enterprise"
    assert headers["x-distill-kyc"] == "verified"
    assert headers["x-distill-model"] == "frontier-2"
    assert headers["x-distill-reasoning"] == "full"
    assert headers["x-distill-decision-id"] == d.decision_id
    assert ("x-distill-decision-id", d.decision_id) in d.response_headers
    assert all(k.startswith(GOVERNANCE_PREFIX) for k in headers)


@pytest.mark.parametrize(
    ("headers", "body", "reason", "status"),
    [
        ({}, None, Reason.KEY_MISSING, 401),
        ({"x-api-key": "dg_not_a_known_key_000"}, None, Reason.KEY_UNKNOWN, 401),
        ({"x-api-key": "x"}, None, Reason.KEY_MALFORMED, 401),
        ({"authorization": "Basic abc"}, None, Reason.KEY_MALFORMED, 401),
        ({"x-api-key": BOB_REVOKED}, None, Reason.KEY_REVOKED, 403),
        ({"x-api-key": DAVE_EXPIRED}, None, Reason.KEY_EXPIRED, 403),
        ({"x-api-key": DAVE_KEY}, None, Reason.VERIFICATION_REQUIRED, 403),
        ({"x-api-key": CAROL_KEY}, b'{"model": "frontier-2"}', Reason.MODEL_NOT_ALLOWED, 403),
        ({"x-api-key": CAROL_KEY, "content-length": "9"}, None, Reason.MODEL_UNREADABLE, 403),
        ({"x-api-key": BOB_KEY}, b'{"model": "a b"}', Reason.BODY_MALFORMED, 400),
        ({"x-api-key": BOB_KEY}, b"\xff\x00", Reason.BODY_MALFORMED, 400),
    ],
)
def test_denials(headers: dict[str, str], body: bytes | None, reason: Reason, status: int) -> None:
    """Each way of failing identity or tier rules has its own reason and status."""
    d = decide(headers, body=body)
    assert not d.allowed
    assert d.reason is reason and d.status == status
    assert d.detail
    assert d.upstream_headers == ()
    body_json = json.loads(d.deny_body())
    assert body_json == {
        "error": reason.error,
        "reason": reason.value,
        "decision_id": d.decision_id,
    }


def test_path_not_allowed_for_tier() -> None:
    """A tier's path list is enforced, ignoring the query string."""
    assert decide({"x-api-key": CAROL_KEY}, path="/v1/models?x=1").allowed
    d = decide({"x-api-key": CAROL_KEY}, path="/v1/embeddings")
    assert d.reason is Reason.PATH_NOT_ALLOWED


def test_partial_body_model_is_authorised_and_forwarded() -> None:
    """A body Envoy cut short is judged on the model before the cut, which goes upstream."""
    d = decide({"x-api-key": CAROL_KEY}, body=b'{"model": "small-1", "messages": [', partial=True)
    assert d.allowed and dict(d.upstream_headers)["x-distill-model"] == "small-1"
    d = decide({"x-api-key": CAROL_KEY}, body=b'{"messages": [{"x": "', partial=True)
    assert d.reason is Reason.MODEL_UNREADABLE


def test_client_governance_headers_are_overwritten_or_removed() -> None:
    """Forged governance headers we set are overwritten; the rest and the key are removed.

    Envoy applies removals after additions, so a name we set must not be removed.
    """
    d = decide(
        {"x-api-key": BOB_KEY, "x-distill-tier": "enterprise", "x-distill-watermark": "none"},
    )
    assert d.allowed
    assert set(d.remove_headers) == {"x-distill-watermark", "x-api-key"}
    assert dict(d.upstream_headers)["x-distill-tier"] == "pro"


def test_forward_key_keeps_the_key_header() -> None:
    """With identity.forward_key the key header is not removed."""
    rules = StaticRules.of(
        "identity: {forward_key: true}\ntiers: {pro: {}, enterprise: {}, free: {}}\n"
    )
    pipeline, _ = make_pipeline(rules=rules)
    d = asyncio.run(pipeline.check(facts({"x-api-key": BOB_KEY})))
    assert d.allowed and "x-api-key" not in d.remove_headers


def test_unknown_tier_is_forbidden() -> None:
    """An account whose tier the rules do not define is refused, naming the tier."""
    rules = StaticRules.of("tiers: {free: {allow_unverified: true}}\n")
    pipeline, _ = make_pipeline(rules=rules)
    d = asyncio.run(pipeline.check(facts({"x-api-key": BOB_KEY})))
    assert d.reason is Reason.TIER_UNKNOWN and "'pro'" in d.detail


def test_malformed_and_sourceless_requests_are_denied() -> None:
    """Facts marked malformed, or without an IP source, are denied before identity."""
    pipeline, _ = make_pipeline()
    d = asyncio.run(pipeline.check(facts({"x-api-key": BOB_KEY}, source="pipe:/tmp/envoy.sock")))
    assert d.reason is Reason.SOURCE_ADDRESS_INVALID and d.status == 403
    assert d.caller is None


def test_registry_fault_fails_closed() -> None:
    """A store fault during identity becomes a 503 dependency_failed denial."""
    pipeline, sink = make_pipeline(registry=BrokenRegistry())
    d = asyncio.run(pipeline.check(facts({"x-api-key": BOB_KEY})))
    assert d.reason is Reason.DEPENDENCY_FAILED and d.status == 503
    assert sink.records[-1][1] is d


def test_budget_exhausted_fails_closed() -> None:
    """A check slower than its budget is denied 503 deadline_exceeded, and recorded."""
    pipeline, sink = make_pipeline(registry=SlowRegistry(demo_registry(), delay=1.0))
    d = asyncio.run(pipeline.check(facts({"x-api-key": BOB_KEY}), budget=0.02))
    assert d.reason is Reason.DEADLINE_EXCEEDED and d.status == 503
    assert [r[1].reason for r in sink.records] == [Reason.DEADLINE_EXCEEDED]


def test_cancelled_check_is_recorded() -> None:
    """When Envoy gives up (the task is cancelled), the decision is still recorded."""
    pipeline, sink = make_pipeline(registry=SlowRegistry(demo_registry(), delay=1.0))

    async def run() -> None:
        task = asyncio.create_task(pipeline.check(facts({"x-api-key": BOB_KEY})))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run())
    assert [r[1].reason for r in sink.records] == [Reason.DEADLINE_EXCEEDED]
    assert sink.records[0][1].detail == "cancelled by the caller"


def test_expiry_follows_the_injected_clock() -> None:
    """A key with an expiry is valid before it and expired from that instant on."""
    hasher = KeyHasher()
    key = "dg_clock_test_key_0001"
    record = KeyRecord("k1", hasher.digest(key), account(), expires=1000.0)
    clock = ManualClock(999.0)
    pipeline, _ = make_pipeline(registry=MemoryRegistry([record]), clock=clock)
    assert asyncio.run(pipeline.check(facts({"x-api-key": key}))).allowed
    clock.set(1000.0)
    assert asyncio.run(pipeline.check(facts({"x-api-key": key}))).reason is Reason.KEY_EXPIRED


def test_dry_run_allows_but_records_the_real_decision() -> None:
    """In dry-run mode a would-be denial is allowed, recorded and flagged upstream."""
    rules = StaticRules.of("mode: dry_run\ntiers: {pro: {models: ['small-*']}}\n")
    pipeline, sink = make_pipeline(rules=rules)
    d = asyncio.run(pipeline.check(facts({"x-api-key": BOB_KEY}, body=b'{"model": "big"}')))
    assert d.allowed and d.would_deny is Reason.MODEL_NOT_ALLOWED
    upstream = dict(d.upstream_headers)
    assert upstream[DRY_RUN_DENY] == "model_not_allowed"
    # The model server still learns who is calling, and never sees the key.
    assert upstream["x-distill-account"] == "bob-dev" and upstream["x-distill-tier"] == "pro"
    assert "x-api-key" in d.remove_headers
    assert sink.records[-1][1].would_deny is Reason.MODEL_NOT_ALLOWED
    unknown = asyncio.run(pipeline.check(facts({"x-api-key": "dg_unknown_key_00000000"})))
    assert unknown.allowed and unknown.would_deny is Reason.KEY_UNKNOWN
    assert dict(unknown.upstream_headers)["x-distill-reasoning"] == "none"
    assert "x-api-key" in unknown.remove_headers


def test_every_decision_is_recorded_once() -> None:
    """The record phase sees each decision exactly once, allowed or denied."""
    pipeline, sink = make_pipeline()
    for headers in ({"x-api-key": BOB_KEY}, {}, {"x-api-key": BOB_REVOKED}):
        asyncio.run(pipeline.check(facts(headers)))
    assert [r[1].reason for r in sink.records] == [
        Reason.OK,
        Reason.KEY_MISSING,
        Reason.KEY_REVOKED,
    ]
    assert len({r[1].decision_id for r in sink.records}) == 3


def test_unverified_allowed_on_open_tier() -> None:
    """An unverified account may use a tier that allows unverified accounts."""
    d = decide({"x-api-key": CAROL_KEY}, body=b'{"model": "small-1"}')
    assert d.allowed and d.caller is not None and d.caller.account.kyc is Kyc.UNVERIFIED


def test_cut_bodies_are_charged_by_size_and_must_name_a_model() -> None:
    """A body Envoy cut short is charged at least its full size in tokens; a tier with
    model limits refuses one whose model is not before the cut."""
    rules = StaticRules.of(
        "tiers:\n  pro:\n    limits:\n"
        "      account: {requests: {1m: 100}, tokens: {1d: 1000000}}\n"
        "      models: {'frontier-*': {account: {requests: {1m: 5}}}}\n"
    )
    pipeline, _ = make_pipeline(rules=rules)
    size = "400000"
    cut = facts(
        {"x-api-key": BOB_KEY, "content-length": size},
        body=b'{"model": "small-1", "max_tokens": 1, "messages": [{"content": "' + b"x" * 1000,
        partial=True,
    )
    d = asyncio.run(pipeline.check(cut))
    assert d.allowed and d.estimated_tokens >= 400000 // 4
    no_model = facts(
        {"x-api-key": BOB_KEY, "content-length": size},
        body=b'{"messages": [{"content": "' + b"x" * 1000,
        partial=True,
    )
    d = asyncio.run(pipeline.check(no_model))
    assert d.reason is Reason.MODEL_UNREADABLE
