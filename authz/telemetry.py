"""Traces and metrics: the names library code records under, and the SDK set-up for `serve`.

Everything above `setup` uses the OpenTelemetry API only, so the pipeline, the
server, replay and the tests record into whatever SDK the process installed
(none: the API's no-ops). `setup` installs the SDK once, at the entry point,
from the standard OTEL_* variables plus DISTILL_GUARD_METRICS_LISTEN; it
imports the SDK and exporters itself, so they load only where they are used.
The names here are a public interface (docs/observability.md): dashboards,
alerts and trace queries depend on them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics, propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, StatusCode

from authz import __version__
from authz.decision import Decision
from authz.errors import ConfigError
from authz.reasons import Reason

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger("distill_guard.telemetry")

SCOPE = "distill_guard"
SERVICE_NAME = "distill-guard"
METRICS_LISTEN_ENV = "DISTILL_GUARD_METRICS_LISTEN"

tracer = trace.get_tracer(SCOPE, __version__)
meter = metrics.get_meter(SCOPE)

# --- spans ---------------------------------------------------------------------------

CHECK_SPAN = "distill_guard.check"
IDENTIFY_SPAN = "distill_guard.identify"
JURISDICTION_SPAN = "distill_guard.jurisdiction"
COUNTERS_SPAN = "distill_guard.counters"
DETECT_SPAN = "distill_guard.detect"

ACTION = "distill_guard.action"
REASON = "distill_guard.reason"
RULE = "distill_guard.rule"
WOULD_DENY = "distill_guard.would_deny"
TIER = "distill_guard.tier"
COUNTRY = "distill_guard.country"
RULES_VERSION = "distill_guard.rules_version"
ACCOUNT_HASH = "distill_guard.account_hash"
DECISION_ID = "distill_guard.decision_id"
REQUEST_ID = "distill_guard.request_id"
FLAGS = "distill_guard.flags"
SHADOW_DENIES = "distill_guard.shadow_denies"

# Our own faults under the fail-closed policy mark the span as an error; a denial
# of the caller is a correct answer, not an error.
_FAULTS = frozenset({Reason.DEPENDENCY_FAILED, Reason.DEADLINE_EXCEEDED, Reason.INTERNAL_ERROR})

# --- metrics -------------------------------------------------------------------------

# Sub-millisecond to a second, with the check budget (0.2s) and Envoy's timeout
# (0.5s) as bucket bounds, so "answered within budget" is one bucket read.
DURATION_BUCKETS = (
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.2,
    0.5,
    1.0,
)

decisions = meter.create_counter(
    "distill_guard.decisions",
    unit="{decision}",
    description="Decisions recorded, by action, reason and tier (would_deny in dry-run mode)",
)
check_duration = meter.create_histogram(
    "distill_guard.check.duration",
    unit="s",
    description="Time from a CheckRequest's arrival to its answer (or cancellation)",
    explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
)


def account_hash(account: str) -> str:
    """The account's pseudonym in spans: the first 16 hex digits of its SHA-256.

    Not a secret (anyone who guesses an account id can compute it); it keeps
    customer names out of the tracing backend while grouping one account's traces.
    """
    return hashlib.sha256(account.encode("utf-8")).hexdigest()[:16]


def parent_context(*carriers: Iterable[tuple[str, str | bytes]] | Mapping[str, str]) -> Context:
    """The trace context of the first carrier that has one (empty context when none does).

    The server passes the Check call's gRPC metadata first (where Envoy's tracer
    puts its ext_authz span) and the checked request's HTTP headers second.
    """
    for carrier in carriers:
        items = carrier.items() if isinstance(carrier, Mapping) else carrier
        text = {k.lower(): v for k, v in items if isinstance(v, str)}
        ctx = propagate.extract(text)
        if trace.get_current_span(ctx).get_span_context().is_valid:
            return ctx
    return Context()


def decision_attributes(decision: Decision, *, request_id: str = "") -> dict[str, Any]:
    """The check span's attributes for a decision (no key, no raw account)."""
    attrs: dict[str, Any] = {
        ACTION: decision.action.value,
        REASON: decision.reason.value,
        DECISION_ID: decision.decision_id,
        RULES_VERSION: decision.rules_version,
    }
    if request_id:
        attrs[REQUEST_ID] = request_id
    if decision.rule is not None:
        attrs[RULE] = decision.rule
    if decision.would_deny is not None:
        attrs[WOULD_DENY] = decision.would_deny.value
    if decision.caller is not None:
        attrs[TIER] = decision.caller.account.tier
        attrs[ACCOUNT_HASH] = account_hash(decision.caller.account.account)
    if decision.location is not None:
        attrs[COUNTRY] = decision.location.country or decision.location.kind.value
    if decision.flags:
        attrs[FLAGS] = list(decision.flags)
    if decision.shadow_denies:
        attrs[SHADOW_DENIES] = list(decision.shadow_denies)
    return attrs


def observe_decision(decision: Decision, *, request_id: str = "") -> None:
    """Count a recorded decision and describe it on the current (check) span."""
    labels = {"action": decision.action.value, "reason": decision.reason.value}
    if decision.caller is not None:
        labels["tier"] = decision.caller.account.tier
    if decision.would_deny is not None:
        labels["would_deny"] = decision.would_deny.value
    decisions.add(1, labels)
    span = trace.get_current_span()
    if not span.is_recording():
        return
    span.set_attributes(decision_attributes(decision, request_id=request_id))
    reason = decision.would_deny or decision.reason
    if reason in _FAULTS:
        span.set_status(StatusCode.ERROR, reason.value)


def check_span(parent: Context) -> AbstractContextManager[Span]:
    """The SERVER span of one Check, current while the pipeline runs.

    The pipeline never raises (a cancellation is recorded as a deadline_exceeded
    decision first), so exceptions need no handling here; their messages are
    never recorded, as they may quote anything.
    """
    return tracer.start_as_current_span(
        CHECK_SPAN,
        context=parent,
        kind=SpanKind.SERVER,
        record_exception=False,
        set_status_on_exception=False,
    )


def recording() -> bool:
    """Whether the current span records (an SDK is installed and the trace is sampled)."""
    return trace.get_current_span().is_recording()


@contextmanager
def phase_span(name: str) -> Iterator[Span]:
    """A child span for one pipeline phase; a fault marks it with the exception's type only."""
    with tracer.start_as_current_span(
        name, record_exception=False, set_status_on_exception=False
    ) as span:
        try:
            yield span
        except Exception as exc:
            span.set_status(StatusCode.ERROR, type(exc).__name__)
            raise


# --- SDK set-up (the entry point only) ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Config:
    """What `setup` installs, read from the environment."""

    disabled: bool = False
    traces_otlp: bool = False
    metrics_otlp: bool = False
    metrics_listen: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Config:
        """Decide from OTEL_* and DISTILL_GUARD_METRICS_LISTEN; no endpoint means no export."""
        if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
            return cls(disabled=True)
        return cls(
            traces_otlp=_otlp_wanted(environ, "TRACES"),
            metrics_otlp=_otlp_wanted(environ, "METRICS"),
            metrics_listen=environ.get(METRICS_LISTEN_ENV, "").strip() or None,
        )


def _otlp_wanted(environ: Mapping[str, str], signal: str) -> bool:
    exporters = environ.get(f"OTEL_{signal}_EXPORTER", "otlp").strip().lower()
    if exporters == "none":
        return False
    if exporters != "otlp":
        log.warning(
            "only the otlp exporter is supported; using otlp",
            extra={"variable": f"OTEL_{signal}_EXPORTER", "value": exporters},
        )
    endpoint = environ.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT") or environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    return bool(endpoint and endpoint.strip())


def split_listen(listen: str) -> tuple[str, int]:
    """HOST:PORT (or [V6]:PORT) as a host and a port; raises ConfigError when malformed."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ConfigError(METRICS_LISTEN_ENV, "", f"{listen!r} is not HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


@dataclass
class Telemetry:
    """The SDK parts `setup` installed; `shutdown` flushes and stops them."""

    tracer_provider: TracerProvider | None = None
    meter_provider: MeterProvider | None = None
    metrics_server: WSGIServer | None = None

    @property
    def metrics_port(self) -> int | None:
        """The Prometheus endpoint's bound port (useful with port 0)."""
        return self.metrics_server.server_port if self.metrics_server is not None else None

    def shutdown(self) -> None:
        """Export what is buffered, then stop exporters and the Prometheus endpoint."""
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()
        if self.meter_provider is not None:
            self.meter_provider.shutdown()
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
            self.metrics_server.server_close()


def setup(*, metrics_listen: str | None = None) -> Telemetry:
    """Install the SDK for this process: OTLP traces and metrics, and the Prometheus endpoint.

    Exporters read their own OTEL_* variables (endpoint, headers, TLS, batching);
    the sampler comes from OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG
    (default parentbased_always_on: Envoy's sampling decision is followed).
    `metrics_listen` is the --metrics-listen setting (its variable is read here too, for
    processes that set up telemetry without the serve command's settings).
    Raises ConfigError when the Prometheus endpoint cannot listen.
    """
    config = Config.from_env(os.environ)
    if metrics_listen is not None and not config.disabled:
        config = dataclasses.replace(config, metrics_listen=metrics_listen)
    if config.disabled:
        log.info("telemetry disabled (OTEL_SDK_DISABLED)")
        return Telemetry()
    installed = Telemetry()
    resource = _resource()
    if config.traces_otlp or config.metrics_otlp:
        _check_otlp_protos()
    if config.traces_otlp:
        installed.tracer_provider = _tracer_provider(resource)
        trace.set_tracer_provider(installed.tracer_provider)
    readers: list[Any] = []
    if config.metrics_otlp:
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
    if config.metrics_listen is not None:
        reader, installed.metrics_server = _prometheus(config.metrics_listen)
        readers.append(reader)
    if readers:
        from opentelemetry.sdk.metrics import MeterProvider

        installed.meter_provider = MeterProvider(metric_readers=readers, resource=resource)
        metrics.set_meter_provider(installed.meter_provider)
    # Quiet when nothing is exported: the "serving" line stays the first thing said.
    exporting = installed.tracer_provider is not None or installed.meter_provider is not None
    log.log(
        logging.INFO if exporting else logging.DEBUG,
        "telemetry",
        extra={
            "service_name": resource.attributes.get("service.name"),
            "traces": "otlp" if config.traces_otlp else "off",
            "metrics_otlp": config.metrics_otlp,
            "metrics_port": installed.metrics_port,
        },
    )
    return installed


def _check_otlp_protos() -> None:
    """Fail at start, with the remedy, when the OTLP exporter cannot load its protos.

    xds-protos ships an old copy of opentelemetry-proto's modules under the same
    file names; when pip installs it last, the exporter finds the old messages.
    """
    try:
        importlib.import_module("opentelemetry.exporter.otlp.proto.common.trace_encoder")
    except ImportError as exc:
        from importlib.metadata import PackageNotFoundError, version

        try:
            pin = "==" + version("opentelemetry-proto")
        except PackageNotFoundError:
            pin = ""
        raise ConfigError(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "",
            f"the OTLP exporter cannot load ({exc}); xds-protos' copy of opentelemetry-proto "
            "was installed over the real one: pip install --force-reinstall --no-deps "
            f"opentelemetry-proto{pin}",
        ) from exc


def _resource() -> Resource:
    from opentelemetry.sdk.resources import Resource

    # Reads OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME; without either
    # naming the service, it is distill-guard.
    resource = Resource.create({"service.version": __version__})
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": SERVICE_NAME}))
    return resource


def _tracer_provider(resource: Resource) -> TracerProvider:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


def _prometheus(listen: str) -> tuple[Any, WSGIServer]:
    """A Prometheus reader on its own registry (with process metrics), served over HTTP."""
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from prometheus_client import (
        CollectorRegistry,
        GCCollector,
        PlatformCollector,
        ProcessCollector,
        start_http_server,
    )

    # A registry of our own, not prometheus_client's global one: nothing else in
    # the process can add to (or collide with) what this endpoint serves.
    host, port = split_listen(listen)
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    # One instrumentation scope (distill_guard) for all: its labels would be noise.
    reader = PrometheusMetricReader(registry=registry, scope_info_enabled=False)
    try:
        server, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise ConfigError(METRICS_LISTEN_ENV, "", f"cannot listen on {listen}: {exc}") from exc
    return reader, server
