"""Replay: traffic through the server's own pipeline, on a clock read from the traffic.

Each record becomes the RequestFacts the gRPC edge would build
(`traffic.as_envoy_sees_it`), the clock is set to the record's `ts`, and the
pipeline `authz.app.build_app` wires for `serve` decides. Decision ids are
numbered from the traffic's line numbers, so the same inputs give the same
bytes out. With `compare`, a second pipeline on the old rules decides the same
requests (on a private memory store) and changed decisions are counted.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from authz import governance
from authz.app import App, build_app, content_policy
from authz.audit.chain import ChainHead, seal
from authz.audit.record import ContentPolicy, build_record, to_dict
from authz.clock import ManualClock
from authz.decision import Decision
from authz.detect.rules import Risk
from authz.detect.verdicts import AnyVerdict
from authz.errors import ConfigError
from authz.events.detector import EventDetector, sighting_of
from authz.events.event import Event
from authz.events.report import Events, EventSink, Reporter
from authz.facts import RequestFacts
from authz.metering import MemoryRateStore
from authz.replay.traffic import BadLine, TrafficRecord, as_envoy_sees_it, read_traffic
from authz.settings import Settings

# Reasoning exposure, least to most.
EXPOSURE_RANK = {"none": 0, "summary": 1, "full": 2}
# Bad lines kept with their problem for the summary (all are counted).
KEEP_BAD_LINES = 20


@dataclass
class Summary:
    """What a replay saw: counts by action, reason and tier; skipped lines; changes."""

    requests: int = 0
    by_action: Counter[str] = field(default_factory=Counter)
    by_reason: Counter[str] = field(default_factory=Counter)
    by_tier: Counter[str] = field(default_factory=Counter)
    by_tier_action: Counter[tuple[str, str]] = field(default_factory=Counter)
    bad_lines: int = 0
    bad_examples: list[BadLine] = field(default_factory=list)
    time_went_back: int = 0
    verdicts: int = 0  # written by the off-path analysis (when it ran)
    # Reportable events by kind; None when none were looked for (no `events` section,
    # or no off-path analysis).
    events: Counter[str] | None = None
    first_ts: float | None = None
    last_ts: float | None = None
    compared: bool = False
    changed: int = 0
    transitions: Counter[tuple[str, str]] = field(default_factory=Counter)
    changed_by_tier: Counter[str] = field(default_factory=Counter)
    change_examples: dict[tuple[str, str], list[int]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The summary as a JSON object."""
        out: dict[str, Any] = {
            "requests": self.requests,
            "by_action": dict(sorted(self.by_action.items())),
            "by_reason": dict(self.by_reason.most_common()),
            "by_tier": {
                tier: {
                    "requests": n,
                    **{
                        action: self.by_tier_action[tier, action]
                        for action in sorted(self.by_action)
                        if self.by_tier_action[tier, action]
                    },
                }
                for tier, n in sorted(self.by_tier.items())
            },
            "skipped_lines": self.bad_lines,
            "skipped_examples": [{"line": b.line, "problem": b.problem} for b in self.bad_examples],
            "time_went_back": self.time_went_back,
            "verdicts": self.verdicts,
            "events": None if self.events is None else dict(sorted(self.events.items())),
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
        }
        if self.compared:
            out["compare"] = {
                "changed": self.changed,
                "transitions": [
                    {"old": old, "new": new, "requests": n, "lines": self.change_examples[old, new]}
                    for (old, new), n in self.transitions.most_common()
                ],
                "changed_by_tier": dict(sorted(self.changed_by_tier.items())),
            }
        return out


def outcome(row: dict[str, Any]) -> str:
    """A decision in one word pair, for comparing: `allow full`, `deny rate_limited`."""
    if row["action"] == "allow":
        return f"allow {row['exposure'] or '-'}" + (" restricted" if row["restricted"] else "")
    return f"deny {row['reason']}"


class OffPath:
    """The off-path analysis, advanced in the traffic's time.

    Live, audit records reach `distill-guard analyze` through the stream and its
    verdicts come back a little later. Here each decision's record is handed to
    the same Analyzer `lag` seconds (of traffic time) after the decision, the
    analysis runs every `interval` seconds of traffic time, and its verdicts are
    written to the replay's store, where the next checks read them. With the
    rules' `events` section, reportable events are detected beside it and go to
    `event_sinks` (the audit file's events chain, --events-out).
    """

    def __init__(
        self,
        app: App,
        *,
        lag: float,
        interval: float,
        event_sinks: Sequence[EventSink] = (),
    ) -> None:
        from authz.detect.analyzer import Analyzer

        self.app = app
        rules = app.rules.current()
        self.analyzer = Analyzer(rules.detection.analysis)
        self.lag = lag
        self.interval = interval
        self._due: deque[tuple[float, dict[str, Any]]] = deque()
        self._next_run: float | None = None
        self.verdicts_written = 0
        self.records_skipped = 0
        self.events: Events | None = None
        self.events_by_kind: Counter[str] = Counter()
        if rules.events is not None:
            detector = EventDetector(
                rules.events, rules.detection.analysis, rules_version=rules.version
            )
            self.events = Events(detector, Reporter(event_sinks))

    def record(self, decision: Decision, record: dict[str, Any]) -> None:
        """Queue a decision's audit record (the caller hands on only those of a known caller)."""
        self._due.append((decision.time + self.lag, record))

    async def advance(self, now: float) -> None:
        """Deliver the records due by `now` and run every analysis due by then."""
        from authz.detect.analyzer import RecordError, parse_record

        if self._next_run is None:
            self._next_run = now + self.interval
        while self._due and self._due[0][0] <= now:
            due, record = self._due.popleft()
            while self._next_run <= due:  # an analysis that ran before this record arrived
                await self._run(self._next_run)
            try:
                obs = parse_record(record)
            except RecordError:
                self.records_skipped += 1
                continue
            self.analyzer.add(obs)
            if self.events is not None:
                self.events.detector.note(obs, sighting_of(record))
        while self._next_run <= now:
            await self._run(self._next_run)

    async def _run(self, at: float) -> None:
        verdicts = self.analyzer.analyze(at)
        self._next_run = at + self.interval
        if self.events is not None:
            reported = await self.events.after_analysis(at, self.analyzer.clusters, verdicts)
            self.events_by_kind.update(e.kind for e in reported)
        written: list[AnyVerdict] = [
            *verdicts,
            *self.analyzer.network_verdicts,
            *self.analyzer.template_verdicts,
        ]
        if not written:
            return
        rates = self.app.rates
        if isinstance(rates, MemoryRateStore):
            for v in written:
                rates.put_verdict(v.key, v.view())
        elif self.app.redis is not None:
            from authz.detect.verdicts import RedisVerdictSink

            await RedisVerdictSink(self.app.redis).put(written, now=at)
        self.verdicts_written += len(verdicts)  # on accounts (not networks or template bands)


class AuditFile:
    """The audit trail of a replay: chained records in a JSON lines file, in traffic time.

    The records are the server's (`build_record`, sealed by `seal`), on the chain
    `chain`; `distill-guard audit verify`, `audit`, `case` and the off-path
    analysis read them as they read a server's.
    """

    name = "audit-out"

    def __init__(self, out: IO[str], *, chain: str = "replay") -> None:
        self._out = out
        self._chain = chain
        self.events_chain = f"events-{chain}"  # reportable events run on a chain of their own
        self._heads: dict[str, ChainHead] = {}

    def write(self, record: dict[str, Any], *, chain: str | None = None) -> None:
        """Chain one record after the last of its chain (the decisions' by default); write it."""
        name = chain or self._chain
        line, self._heads[name] = seal(record, self._heads.get(name), name)
        self._out.write(line)
        self._out.write("\n")

    async def emit(self, events: Sequence[Event], now: float) -> None:
        """Write reportable events as records of the events chain (an EventSink)."""
        for event in events:
            self.write(event.record(now), chain=self.events_chain)


class EventsFile:
    """`--events-out`: each reportable event's JSON on a line of its own (an EventSink)."""

    name = "events-out"

    def __init__(self, out: IO[str]) -> None:
        self._out = out

    async def emit(self, events: Sequence[Event], now: float) -> None:
        """Write the events."""
        for event in events:
            self._out.write(event.line())
            self._out.write("\n")


class _Recorded:
    """The replay's decision sink: its audit file and the off-path analysis."""

    def __init__(self) -> None:
        self.offpath: OffPath | None = None
        self.audit: AuditFile | None = None
        self.content: ContentPolicy | None = None

    def record(self, facts: RequestFacts, decision: Decision) -> None:
        """Build the decision's audit record when something reads it, and hand it on."""
        # The analysis takes only decisions made for a known caller.
        offpath = self.offpath if decision.caller is not None else None
        if self.audit is None and offpath is None:
            return  # nothing reads this decision's record: do not build it
        record = to_dict(build_record(facts, decision, trace_id="", content=self.content))
        if self.audit is not None:
            self.audit.write(record)
        if offpath is not None:
            offpath.record(decision, record)


class Replayer:
    """Decides traffic records one by one with the server's pipeline."""

    def __init__(
        self,
        settings: Settings,
        *,
        rates_private: bool = False,
        analysis_lag: float | None = None,
        analysis_interval: float = 60.0,
        audit: AuditFile | None = None,
        events_out: EventsFile | None = None,
    ) -> None:
        self.clock = ManualClock()
        self._line = 0
        sink = _Recorded()
        sink.audit = audit
        self.app: App = build_app(
            settings,
            clock=self.clock,
            sink=sink,
            rates=MemoryRateStore() if rates_private else None,
            ids=self._decision_id,
        )
        self._max_body = settings.max_body_bytes
        if audit is not None:  # request content as the server keeps it (its settings)
            rules = self.app.rules
            sink.content = content_policy(settings, key_headers=lambda: rules.current().key_headers)
        current = self.app.rules.current()
        self.offpath: OffPath | None = None
        # Reportable events need the off-path run even when detection is off, as live
        # `analyze` reports them whatever `detection.enabled` says (docs/events.md).
        if analysis_lag is not None and (current.detection.enabled or current.events is not None):
            event_sinks = [s for s in (audit, events_out) if s is not None]
            self.offpath = sink.offpath = OffPath(
                self.app, lag=analysis_lag, interval=analysis_interval, event_sinks=event_sinks
            )

    def _decision_id(self) -> str:
        return f"replay-{self._line:09d}"

    async def ready(self, *, allow_used_store: bool) -> None:
        """Check the store answers and, unless allowed, that it holds no counters yet.

        Replaying into a store that holds live or earlier counters would both
        change the replay's answers and spend real customers' quotas.
        """
        redis = self.app.redis
        if redis is None:
            return
        try:
            size = int(await redis.dbsize())
        except Exception as exc:
            raise ConfigError("--store", "", f"cannot reach the store: {exc}") from None
        if size and not allow_used_store:
            raise ConfigError(
                "--store",
                "",
                f"the store already holds {size} keys; replay needs an empty database "
                "(it would count into live quotas). Pass --reuse-store to replay anyway.",
            )

    async def decide(self, record: TrafficRecord) -> Decision:
        """The decision for one record, at the record's time."""
        self._line = record.line
        self.clock.set(record.ts)
        if self.offpath is not None:
            await self.offpath.advance(record.ts)
        facts = as_envoy_sees_it(
            record, max_body_bytes=self._max_body, request_id=f"replay-{record.line}"
        )
        return await self.app.pipeline.check(facts)

    def row(self, record: TrafficRecord, decision: Decision) -> dict[str, Any]:
        """The output line for one decision."""
        account = decision.caller.account if decision.caller is not None else None
        headers = dict(decision.upstream_headers)
        exposure = headers.get(governance.REASONING) if decision.allowed else None
        tier = self.app.rules.current().tiers.get(account.tier) if account else None
        a = decision.assessment
        restricted = bool(
            exposure is not None
            and tier is not None
            and (
                EXPOSURE_RANK.get(exposure, 0) < EXPOSURE_RANK.get(tier.reasoning, 0)
                or (a is not None and a.applied >= Risk.RESTRICT)
            )
        )
        location = decision.location
        features, sighted = decision.features, decision.sighted
        detection: dict[str, Any] = {}
        if features is not None:
            detection = {
                "template": features.template_id,
                "elicitation": round(features.elicitation.score, 4),
                "client": features.client,
            }
        if sighted is not None:
            detection["pools"] = dict(sighted.observed)
            if sighted.timing is not None:
                cv = sighted.timing.cv
                detection["gaps"] = sighted.timing.gaps
                detection["cv"] = None if cv is None else round(cv, 4)
        if a is not None:
            detection.update(
                risk=a.risk.label,
                applied=a.applied.label,
                score=a.score,
                detectors=list(a.fired),
            )
            if a.cluster:
                detection["cluster"] = a.cluster
        return {
            "i": record.line,
            "ts": record.ts,
            "account": account.account if account else None,
            "entity": account.entity if account else None,
            "tier": account.tier if account else None,
            "model": decision.model,
            "action": decision.action.value,
            "status": decision.status,
            "reason": decision.reason.value,
            "rule": decision.rule,
            "exposure": exposure,
            "restricted": restricted,
            "headers": headers,
            "signals": {
                "country": location.country if location else None,
                "asn": location.asn if location else None,
                "flags": list(decision.flags),
                "shadow": list(decision.shadow_denies),
                "would_deny": decision.would_deny.value if decision.would_deny else None,
                "tokens": decision.estimated_tokens,
                **detection,
            },
        }

    async def close(self) -> None:
        """Release the stores."""
        await self.app.close()


Progress = Callable[[int, int], None]  # (bytes read, requests decided)


async def replay(
    settings: Settings,
    traffic: IO[bytes],
    out: IO[str],
    *,
    compare_rules: Path | None = None,
    allow_used_store: bool = False,
    progress: Progress | None = None,
    analysis_lag: float | None = None,
    analysis_interval: float = 60.0,
    audit: AuditFile | None = None,
    events_out: EventsFile | None = None,
) -> Summary:
    """Replay a traffic stream into `out`, one JSON line per request; the summary.

    With `analysis_lag` (seconds) the off-path analysis runs in traffic time (OffPath);
    with `audit`, the new rules' decisions are also written as a chained audit trail,
    and reportable events (rules `events`) on their own chain there and to `events_out`.
    """
    summary = Summary(compared=compare_rules is not None)
    new = Replayer(
        settings,
        analysis_lag=analysis_lag,
        analysis_interval=analysis_interval,
        audit=audit,
        events_out=events_out,
    )
    # The old rules decide on a private memory store, so the two never share counters.
    old = None
    if compare_rules is not None:
        old = Replayer(
            dataclasses.replace(settings, rules=compare_rules),
            rates_private=True,
            analysis_lag=analysis_lag,
            analysis_interval=analysis_interval,
        )
    try:
        await new.ready(allow_used_store=allow_used_store)
        for item in read_traffic(traffic):
            if isinstance(item, BadLine):
                summary.bad_lines += 1
                if len(summary.bad_examples) < KEEP_BAD_LINES:
                    summary.bad_examples.append(item)
                continue
            row = new.row(item, await new.decide(item))
            if old is not None:
                was = old.row(item, await old.decide(item))
                if outcome(was) != outcome(row):
                    row["was"] = {k: was[k] for k in _COMPARED}
                    _count_change(summary, row, was)
            _count(summary, row)
            out.write(_ROWS.encode(row) + "\n")
            if progress is not None and summary.requests % 1024 == 0:
                progress(traffic.tell() if traffic.seekable() else 0, summary.requests)
    finally:
        await new.close()
        if old is not None:
            await old.close()
    if new.offpath is not None:
        summary.verdicts = new.offpath.verdicts_written
        if new.offpath.events is not None:
            summary.events = new.offpath.events_by_kind
    return summary


_COMPARED = ("action", "status", "reason", "rule", "exposure", "restricted")
# The decisions lines' encoder, made once: json.dumps with options builds one per call.
_ROWS = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def _count(summary: Summary, row: dict[str, Any]) -> None:
    summary.requests += 1
    ts = row["ts"]
    if summary.last_ts is not None and ts < summary.last_ts:
        summary.time_went_back += 1
    if summary.first_ts is None:
        summary.first_ts = ts
    summary.last_ts = ts if summary.last_ts is None else max(ts, summary.last_ts)
    summary.by_action[row["action"]] += 1
    summary.by_reason[row["reason"]] += 1
    tier = row["tier"] or "(no tier)"
    summary.by_tier[tier] += 1
    summary.by_tier_action[tier, row["action"]] += 1


def _count_change(summary: Summary, row: dict[str, Any], was: dict[str, Any]) -> None:
    key = (outcome(was), outcome(row))
    summary.changed += 1
    summary.transitions[key] += 1
    summary.changed_by_tier[row["tier"] or "(no tier)"] += 1
    lines = summary.change_examples.setdefault(key, [])
    if len(lines) < 5:
        lines.append(row["i"])


def read_only(traffic: IO[bytes], out: IO[str], *, max_body_bytes: int) -> int:
    """Everything replay does except deciding: the baseline its speed is measured against.

    Reads and parses each line, builds Envoy's view of it and writes a line of the
    same shape; returns the number of requests.
    """
    requests = 0
    for item in read_traffic(traffic):
        if isinstance(item, BadLine):
            continue
        facts = as_envoy_sees_it(item, max_body_bytes=max_body_bytes, request_id="baseline")
        row = {
            "i": item.line,
            "ts": item.ts,
            "account": None,
            "entity": None,
            "tier": None,
            "model": None,
            "action": "allow",
            "status": 200,
            "reason": "ok",
            "rule": None,
            "exposure": None,
            "restricted": False,
            "headers": {"x-request-id": facts.request_id},
            "signals": {},
        }
        out.write(_ROWS.encode(row) + "\n")
        requests += 1
    return requests
