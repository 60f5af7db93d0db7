"""Where events go once detected: the dedup gate, then every configured sink.

    detector -> gate (one worker of many reports an incident) -> sinks

Sinks: the audit trail (chained records on a chain of their own), the log
(one WARNING line `reportable event` per event, for log-based alerting) and
the webhook (authz.events.webhook). A sink that fails is logged and counted;
the others still get the event.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Sequence
from dataclasses import fields
from typing import Protocol

import redis
from opentelemetry import metrics
from redis.asyncio import Redis, RedisCluster

from authz.audit.chain import ChainHead, seal
from authz.audit.sinks import RedisStreamSink
from authz.detect.analyzer import ClusterReport
from authz.detect.settings import AnalysisSettings
from authz.detect.verdicts import Verdict
from authz.events.detector import EventDetector
from authz.events.event import Event
from authz.events.rules import KINDS, EventRules
from authz.events.webhook import WebhookSettings, WebhookSink
from authz.settings import Settings

log = logging.getLogger("authz.events")

INCIDENT_PREFIX = "dg:event:"

_meter = metrics.get_meter("distill_guard")
_emitted = _meter.create_counter(
    "distill_guard.events.emitted", description="Reportable events emitted, by kind and severity"
)
_sink_errors = _meter.create_counter(
    "distill_guard.events.sink_errors",
    description="Events a sink failed to take (audit stream down, ...), by sink",
)


def events_chain() -> str:
    """The default chain of event records: `events-<host>`."""
    return f"events-{socket.gethostname()}"


class EventSink(Protocol):
    """Somewhere events are written."""

    name: str

    async def emit(self, events: Sequence[Event], now: float) -> None:
        """Take new events, reported at record time `now`."""
        ...


class LogSink:
    """One JSON log line per event at WARNING, `reportable event`, with the event under `event`."""

    name = "log"

    async def emit(self, events: Sequence[Event], now: float) -> None:
        """Log each event."""
        for event in events:
            log.warning("reportable event", extra={"event": event.to_json()})


class StreamSink:
    """Event records on their own chain in the audit stream (what `audit verify` checks)."""

    name = "audit"

    def __init__(self, stream: RedisStreamSink, chain: str) -> None:
        self.stream = stream
        self.chain = chain
        self._head: ChainHead | None = None
        self._head_known = False

    async def emit(self, events: Sequence[Event], now: float) -> None:
        """Chain the events' records after this chain's last one and append them."""
        if not self._head_known:
            self._head = await self.stream.head(self.chain)  # a restarted worker continues
            self._head_known = True
        head = self._head
        lines = []
        for event in events:
            line, head = seal(event.record(now), head, self.chain)
            lines.append(line)
        await self.stream.write(lines)
        self._head = head


class RedisGate:
    """Lets one worker of several report an incident: SET NX on `dg:event:<incident>`.

    The key lives while the incident is open (its holder renews it each
    analysis), so a worker that restarts and sees the incident again as new
    does not report it twice.
    """

    def __init__(self, client: Redis | RedisCluster, prefix: str = INCIDENT_PREFIX) -> None:
        self.client = client
        self.prefix = prefix

    async def admit(
        self, events: Sequence[Event], open_incidents: Sequence[tuple[str, float]]
    ) -> list[Event]:
        """The events no other worker reported; renews every open incident's key."""
        left = dict(open_incidents)
        new = {e.incident for e in events}
        pipe = self.client.pipeline(transaction=False)
        for e in events:
            pipe.set(self.prefix + e.incident, e.id, nx=True, px=_ms(left.get(e.incident, 1.0)))
        for incident, seconds in open_incidents:
            if incident not in new:
                pipe.pexpire(self.prefix + incident, _ms(seconds))
        replies = await pipe.execute()
        return [e for e, won in zip(events, replies, strict=False) if won]


def _serve_maxlen() -> int:
    """The stream length `serve` trims the audit stream to by default: trim alike."""
    return next(int(f.default) for f in fields(Settings) if f.name == "audit_stream_maxlen")  # type: ignore[arg-type]  # a dataclass field's default is typed object


def _ms(seconds: float) -> int:
    return max(1000, int(seconds * 1000))


class Reporter:
    """Hands new events to every sink (see the module docstring)."""

    def __init__(self, sinks: Sequence[EventSink], rules: EventRules | None = None) -> None:
        self.sinks = list(sinks)
        if rules is not None:
            # Series at 0 from the start: Prometheus' increase() cannot see a series'
            # first value, so the first event of a kind would never alert otherwise.
            for kind in KINDS:
                section = getattr(rules, kind)
                if section.enabled:
                    _emitted.add(0, {"kind": kind, "severity": section.severity})

    async def report(self, events: Sequence[Event], now: float) -> None:
        """Emit the events to every sink; a failing sink does not stop the others."""
        if not events:
            return
        for event in events:
            _emitted.add(1, {"kind": event.kind, "severity": event.severity})
        for sink in self.sinks:
            try:
                await sink.emit(events, now)
            except (redis.RedisError, OSError) as exc:
                _sink_errors.add(len(events), {"sink": sink.name})
                log.error(
                    "reportable events not written",
                    extra={
                        "sink": sink.name,
                        "events": [e.id for e in events],
                        "problem": str(exc),
                    },
                )


class Events:
    """Event detection and reporting, as the analysis worker and replay run them."""

    def __init__(
        self, detector: EventDetector, reporter: Reporter, gate: RedisGate | None = None
    ) -> None:
        self.detector = detector
        self.reporter = reporter
        self.gate = gate

    async def after_analysis(
        self, now: float, clusters: Sequence[ClusterReport], verdicts: Sequence[Verdict]
    ) -> list[Event]:
        """Detect after one analysis at record time `now`, pass the gate, report; the events."""
        events = self.detector.after_analysis(now, clusters, verdicts)
        still_open = self.detector.open_incidents(now) if self.gate is not None else []
        if self.gate is not None and (events or still_open):
            try:
                events = await self.gate.admit(events, still_open)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                # Better twice (receivers drop repeats by event id) than never.
                log.warning("event gate unavailable; reporting without it (%s)", exc)
        await self.reporter.report(events, now)
        return events

    async def aclose(self) -> None:
        """Let the sinks finish what they hold (the webhook's queue)."""
        for sink in self.reporter.sinks:
            if isinstance(sink, WebhookSink):
                await sink.aclose()


def worker_events(
    rules: EventRules,
    analysis: AnalysisSettings,
    *,
    version: str,
    stream_client: Redis | RedisCluster,
    stream: str,
    gate_client: Redis | RedisCluster,
    chain: str | None = None,
    webhook: WebhookSettings | None = None,
) -> Events:
    """Event reporting as `distill-guard analyze` runs it: log, audit stream, webhook, gate.

    Call from a running loop (the webhook's task starts here).
    """
    sinks: list[EventSink] = [
        LogSink(),
        StreamSink(
            RedisStreamSink(stream_client, name="events", stream=stream, maxlen=_serve_maxlen()),
            chain or events_chain(),
        ),
    ]
    if webhook is not None:
        hook = WebhookSink(webhook)
        hook.start()
        sinks.append(hook)
    detector = EventDetector(rules, analysis, rules_version=version)
    return Events(detector, Reporter(sinks, rules), RedisGate(gate_client))
