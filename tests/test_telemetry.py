"""Traces and metrics through the real gRPC server: spans, parents, attributes, counters.

Spans and metrics go to the process-wide in-memory SDK of tests/otel.py; each
test finds its own data by decision id, trace id or a label of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Iterator

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from authz import telemetry
from authz.clock import ManualClock
from authz.errors import ConfigError
from authz.metering.breaker import BreakerRateStore
from authz.metering.memory import MemoryRateStore
from authz.metering.plan import Plan
from authz.metering.result import MeterResult
from tests.checkreq import check_request
from tests.fakes import (
    ACME_KEY,
    BOB_KEY,
    BOB_REVOKED,
    BrokenRegistry,
    SlowRegistry,
    StaticRules,
    demo_registry,
    facts,
    make_pipeline,
)
from tests.metering_support import T0, compiled, plan_for
from tests.otel import (
    counter_value,
    finished_spans,
    gauge_value,
    histogram_count,
    metric_reader,
    span_exporter,
)
from tests.serverthread import ServerThread, demo_settings

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
ENVOY_SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{ENVOY_SPAN_ID}-01"
ACME_HASH = hashlib.sha256(b"acme-research").hexdigest()[:16]
PHASES = {
    telemetry.IDENTIFY_SPAN,
    telemetry.JURISDICTION_SPAN,
    telemetry.COUNTERS_SPAN,
    telemetry.DETECT_SPAN,
}


@pytest.fixture(scope="module")
def stub() -> Iterator[external_auth_pb2_grpc.AuthorizationStub]:
    """A client of one real server, with the in-memory SDK installed before it starts."""
    span_exporter()
    metric_reader()
    server = ServerThread(demo_settings())
    try:
        with grpc.insecure_channel(server.target) as channel:
            yield external_auth_pb2_grpc.AuthorizationStub(channel)
    finally:
        server.close()


def _check(
    stub: external_auth_pb2_grpc.AuthorizationStub,
    headers: dict[str, str],
    *,
    body: bytes = b'{"model": "frontier-2"}',
    metadata: tuple[tuple[str, str], ...] = (),
    source: str = "79.192.3.4",
) -> tuple[external_auth_pb2.CheckResponse, ReadableSpan]:
    """One Check; returns the answer and the check span that recorded its decision."""
    resp = stub.Check(check_request(headers, body=body, source=source), metadata=metadata)
    decision_id = resp.dynamic_metadata.fields["decision_id"].string_value
    (span,) = [
        s
        for s in finished_spans(telemetry.CHECK_SPAN)
        if (s.attributes or {}).get(telemetry.DECISION_ID) == decision_id
    ]
    return resp, span


def _children(span: ReadableSpan) -> dict[str, ReadableSpan]:
    assert span.context is not None
    return {
        s.name: s
        for s in finished_spans()
        if s.parent is not None and s.parent.span_id == span.context.span_id
    }


def test_check_span_has_the_decision_and_phase_children(
    stub: external_auth_pb2_grpc.AuthorizationStub,
) -> None:
    """One SERVER span per Check, with the decision's attributes, and a child per phase."""
    resp, span = _check(stub, {"authorization": f"Bearer {ACME_KEY}", "x-request-id": "rq-7"})
    assert span.kind is SpanKind.SERVER
    attrs = dict(span.attributes or {})
    meta = resp.dynamic_metadata.fields
    assert attrs == {
        telemetry.ACTION: "allow",
        telemetry.REASON: "ok",
        telemetry.RULE: "tier:enterprise",
        telemetry.TIER: "enterprise",
        telemetry.COUNTRY: "DE",
        telemetry.RULES_VERSION: meta["rules_version"].string_value,
        telemetry.ACCOUNT_HASH: ACME_HASH,
        telemetry.DECISION_ID: meta["decision_id"].string_value,
        telemetry.REQUEST_ID: "rq-7",
    }
    assert span.status.status_code is StatusCode.UNSET
    children = _children(span)
    assert set(children) == PHASES
    assert span.context is not None
    for child in children.values():
        assert child.context is not None
        assert child.context.trace_id == span.context.trace_id
        assert child.kind is SpanKind.INTERNAL
        assert child.start_time is not None and span.start_time is not None
        assert child.end_time is not None and span.end_time is not None
        assert span.start_time <= child.start_time <= child.end_time <= span.end_time


def test_parent_is_the_trace_context_envoy_sends(
    stub: external_auth_pb2_grpc.AuthorizationStub,
) -> None:
    """The traceparent in the Check's gRPC metadata (Envoy's ext_authz span) is our parent."""
    _, span = _check(stub, {"x-api-key": BOB_KEY}, metadata=(("traceparent", TRACEPARENT),))
    assert span.context is not None and span.parent is not None
    assert f"{span.context.trace_id:032x}" == TRACE_ID
    assert f"{span.parent.span_id:016x}" == ENVOY_SPAN_ID
    assert span.parent.is_remote


def test_request_headers_are_the_fallback_and_metadata_wins(
    stub: external_auth_pb2_grpc.AuthorizationStub,
) -> None:
    """Without trace metadata the checked request's traceparent is used; with both, metadata."""
    _, span = _check(stub, {"x-api-key": BOB_KEY, "traceparent": TRACEPARENT})
    assert span.parent is not None and f"{span.parent.span_id:016x}" == ENVOY_SPAN_ID
    other = f"00-{'1' * 32}-{'2' * 16}-01"
    _, span = _check(
        stub,
        {"x-api-key": BOB_KEY, "traceparent": TRACEPARENT},
        metadata=(("traceparent", other),),
    )
    assert span.parent is not None and f"{span.parent.span_id:016x}" == "2" * 16


def test_without_trace_context_a_check_starts_a_trace(
    stub: external_auth_pb2_grpc.AuthorizationStub,
) -> None:
    """A Check that carries no (or a broken) trace context gets a root span of its own."""
    _, span = _check(stub, {"x-api-key": BOB_KEY}, metadata=(("traceparent", "00-bogus-01"),))
    assert span.parent is None
    assert span.context is not None and span.context.trace_id != int(TRACE_ID, 16)


def test_a_denial_is_noted_on_the_phase_that_made_it(
    stub: external_auth_pb2_grpc.AuthorizationStub,
) -> None:
    """The denying phase's span names reason and rule; later phases do not run."""
    _, span = _check(stub, {"x-api-key": ACME_KEY}, source="175.45.176.1")
    attrs = dict(span.attributes or {})
    assert attrs[telemetry.ACTION] == "deny"
    assert attrs[telemetry.REASON] == "country_denied"
    assert attrs[telemetry.RULE] == "jurisdiction:embargoed-ip"
    assert attrs[telemetry.COUNTRY] == "KP"
    children = _children(span)
    assert set(children) == {telemetry.IDENTIFY_SPAN, telemetry.JURISDICTION_SPAN}
    assert dict(children[telemetry.JURISDICTION_SPAN].attributes or {}) == {
        telemetry.REASON: "country_denied",
        telemetry.RULE: "jurisdiction:embargoed-ip",
    }
    assert not children[telemetry.IDENTIFY_SPAN].attributes

    _, span = _check(stub, {"x-api-key": "dg_nobody_knows_this_key"})
    attrs = dict(span.attributes or {})
    assert attrs[telemetry.REASON] == "key_unknown"
    assert telemetry.TIER not in attrs and telemetry.ACCOUNT_HASH not in attrs


def test_no_key_reaches_any_span(stub: external_auth_pb2_grpc.AuthorizationStub) -> None:
    """Whatever the outcome, no presented key appears in a span (names, attributes, status)."""
    span_exporter().clear()
    keys = [ACME_KEY, BOB_KEY, BOB_REVOKED, "dg_nobody_knows_this_key", "dg_bad key with spaces!"]
    for key in keys:
        _check(stub, {"authorization": f"Bearer {key}"})
        _check(stub, {"x-api-key": key}, metadata=(("traceparent", TRACEPARENT),))
    spans = finished_spans()
    assert len(spans) >= 2 * len(keys)
    for span in spans:
        text = span.to_json()
        for key in keys:
            assert key not in text
            assert key.removeprefix("dg_") not in text


def test_a_fault_marks_the_spans_as_errors_without_its_message() -> None:
    """A failing registry: the phase and check spans are errors, naming only the fault's type."""
    pipeline, _ = make_pipeline(registry=BrokenRegistry())
    span_exporter().clear()

    async def run() -> None:
        with telemetry.check_span(Context()):
            await pipeline.check(facts({"x-api-key": BOB_KEY}))

    asyncio.run(run())
    (check,) = finished_spans(telemetry.CHECK_SPAN)
    assert check.status.status_code is StatusCode.ERROR
    assert check.status.description == "dependency_failed"
    (identify,) = finished_spans(telemetry.IDENTIFY_SPAN)
    assert identify.status.status_code is StatusCode.ERROR
    assert identify.status.description == "DependencyFault"
    assert not identify.events  # no exception event: its message could quote anything
    assert "store unreachable" not in check.to_json() + identify.to_json()


def test_an_unsampled_trace_makes_no_spans_but_is_counted(
    stub: external_auth_pb2_grpc.AuthorizationStub,
) -> None:
    """Envoy's "not sampled" is followed: no span at all, and the decision still counts."""
    labels = {"action": "allow", "reason": "ok", "tier": "enterprise"}
    before = counter_value("distill_guard.decisions", **labels)
    span_exporter().clear()
    unsampled = f"00-{TRACE_ID}-{ENVOY_SPAN_ID}-00"
    stub.Check(
        check_request({"x-api-key": ACME_KEY}, body=b'{"model": "frontier-2"}'),
        metadata=(("traceparent", unsampled),),
    )
    assert finished_spans() == []
    assert counter_value("distill_guard.decisions", **labels) == before + 1


def test_a_cancelled_check_ends_its_span_as_deadline_exceeded() -> None:
    """Envoy giving up: the span still gets the recorded decision, as an error."""
    pipeline, sink = make_pipeline(registry=SlowRegistry(demo_registry(), delay=5.0))
    span_exporter().clear()

    async def checked() -> None:
        with telemetry.check_span(Context()):
            await pipeline.check(facts({"x-api-key": BOB_KEY}))

    async def run() -> None:
        task = asyncio.create_task(checked())
        await asyncio.sleep(0.05)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(run())
    (span,) = finished_spans(telemetry.CHECK_SPAN)
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "deadline_exceeded"
    assert (span.attributes or {})[telemetry.REASON] == "deadline_exceeded"
    assert sink.records[-1][1].decision_id == (span.attributes or {})[telemetry.DECISION_ID]


def test_decisions_are_counted_by_action_reason_and_tier(
    stub: external_auth_pb2_grpc.AuthorizationStub,
) -> None:
    """distill_guard.decisions counts each decision under its action, reason and tier."""
    allowed = {"action": "allow", "reason": "ok", "tier": "enterprise"}
    revoked = {"action": "deny", "reason": "key_revoked", "tier": "pro"}
    unknown = {"action": "deny", "reason": "key_unknown"}
    before = [counter_value("distill_guard.decisions", **labels) for labels in (allowed, revoked)]
    before.append(counter_value("distill_guard.decisions", **unknown))
    _check(stub, {"x-api-key": ACME_KEY})
    _check(stub, {"x-api-key": ACME_KEY})
    _check(stub, {"x-api-key": BOB_REVOKED})
    _check(stub, {"x-api-key": "dg_nobody_knows_this_key"})
    after = [counter_value("distill_guard.decisions", **labels) for labels in (allowed, revoked)]
    after.append(counter_value("distill_guard.decisions", **unknown))
    assert [a - b for a, b in zip(after, before, strict=True)] == [2, 1, 1]


def test_dry_run_counts_what_would_have_been_denied() -> None:
    """In dry-run mode the counter says allow/ok and names the would-be denial."""
    rules = StaticRules.of("mode: dry_run\ntiers: {pro: {models: ['small-*']}}\n")
    pipeline, _ = make_pipeline(rules=rules)
    labels = {
        "action": "allow",
        "reason": "ok",
        "tier": "pro",
        "would_deny": "model_not_allowed",
    }
    before = counter_value("distill_guard.decisions", **labels)
    asyncio.run(pipeline.check(facts({"x-api-key": BOB_KEY}, body=b'{"model": "big"}')))
    assert counter_value("distill_guard.decisions", **labels) == before + 1


def test_every_check_is_timed(stub: external_auth_pb2_grpc.AuthorizationStub) -> None:
    """distill_guard.check.duration records one value per Check, allowed or denied."""
    before = histogram_count("distill_guard.check.duration")
    for key in (ACME_KEY, BOB_REVOKED, "dg_nobody_knows_this_key"):
        _check(stub, {"x-api-key": key})
    assert histogram_count("distill_guard.check.duration") == before + 3


class _Switchable:
    """A RateStore that fails, answers, or waits at a gate, as the test says."""

    def __init__(self) -> None:
        self.mode = "fail"
        self.gate = asyncio.Event()
        self.inner = MemoryRateStore()

    async def hit(self, plan: Plan, now: float) -> MeterResult:
        if self.mode == "fail":
            raise ConnectionError("store down")
        if self.mode == "gate":
            await self.gate.wait()
        return await self.inner.hit(plan, now)

    async def aclose(self) -> None:
        """Nothing to release."""


def test_breaker_metrics_follow_the_store() -> None:
    """Failures and short circuits are counted; the state gauge goes 0 -> 1 -> 2 -> 0."""
    metric_reader()
    store = _Switchable()
    mono = ManualClock(0.0)
    breaker = BreakerRateStore(
        store, failures_to_open=2, cooldown=5.0, monotonic=mono.now, name="gauge-test"
    )
    plan = plan_for(compiled("account: {requests: {1m: 10}}\non_store_failure: fail_open"))
    state = "distill_guard.rate_store.circuit_state"
    label = {"store": "gauge-test"}

    async def scenario() -> None:
        assert gauge_value(state, **label) == 0
        await breaker.hit(plan, T0)
        await breaker.hit(plan, T0)
        assert gauge_value(state, **label) == 1
        await breaker.hit(plan, T0)  # open: not tried
        mono.advance(5.0)
        store.mode = "gate"
        trial = asyncio.create_task(breaker.hit(plan, T0))
        await asyncio.sleep(0)
        assert gauge_value(state, **label) == 2
        store.gate.set()
        await trial
        assert gauge_value(state, **label) == 0

    asyncio.run(scenario())
    failures = "distill_guard.rate_store.failures"
    assert counter_value(failures, store="gauge-test", kind="error") == 2
    assert counter_value("distill_guard.rate_store.short_circuits", store="gauge-test") == 1
    fallbacks = "distill_guard.rate_store.fallbacks"
    assert counter_value(fallbacks, store="gauge-test", policy="fail_open") == 3


def test_config_comes_from_the_standard_variables() -> None:
    """No endpoint, no export; OTEL_*_EXPORTER=none and OTEL_SDK_DISABLED switch parts off."""
    config = telemetry.Config.from_env
    assert config({}) == telemetry.Config()
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}
    assert config(endpoint) == telemetry.Config(traces_otlp=True, metrics_otlp=True)
    assert config({**endpoint, "OTEL_METRICS_EXPORTER": "none"}) == telemetry.Config(
        traces_otlp=True
    )
    traces_only = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4317"}
    assert config(traces_only) == telemetry.Config(traces_otlp=True)
    listen = {telemetry.METRICS_LISTEN_ENV: "0.0.0.0:9464"}
    assert config(listen) == telemetry.Config(metrics_listen="0.0.0.0:9464")
    assert config({**endpoint, **listen, "OTEL_SDK_DISABLED": "true"}) == telemetry.Config(
        disabled=True
    )


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        (":9464", ("0.0.0.0", 9464)),
        ("[::1]:0", ("::1", 0)),
    ],
)
def test_metrics_listen_address(listen: str, expected: tuple[str, int]) -> None:
    """DISTILL_GUARD_METRICS_LISTEN is HOST:PORT; an empty host means every interface."""
    assert telemetry.split_listen(listen) == expected


def test_metrics_listen_address_errors() -> None:
    """A malformed address is a ConfigError naming the variable."""
    with pytest.raises(ConfigError) as err:
        telemetry.split_listen("9464")
    assert str(err.value) == "DISTILL_GUARD_METRICS_LISTEN: '9464' is not HOST:PORT"
