"""The reportable event: one incident, as a plain value and as its JSON.

The JSON is the proto3 JSON mapping of `ReportableEvent`
(protos/distill_guard/audit/v1/audit.proto), the same text in the audit
record that carries it, in the webhook's body and in the log line. Its id is
derived from the incident key and the incident's first sighting, so a replay
of the same traffic gives the same ids, and a receiver can drop repeats.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format

from authz.audit.record import SCHEMA
from authz.gen.distill_guard.audit.v1.audit_pb2 import AuditRecord, ReportableEvent

# What one event lists at most; the counts beside them hold the full numbers.
MAX_ACCOUNTS = 50
MAX_PLACES = 20
MAX_EVIDENCE = 10


def event_id(incident: str, first_seen: float) -> str:
    """The event's id: a digest of its incident key and first sighting (microseconds)."""
    text = f"{incident}|{round(first_seen * 1_000_000)}"
    return "ev-" + hashlib.sha256(text.encode()).hexdigest()[:24]


@dataclass(frozen=True, slots=True)
class Event:
    """One reportable incident as it stood when it was reported."""

    kind: str
    severity: str
    incident: str
    first_seen: float  # record time, epoch seconds
    last_seen: float
    requests: int
    accounts: tuple[str, ...]  # all of them, sorted; the JSON keeps MAX_ACCOUNTS
    networks: tuple[str, ...] = ()
    asns: tuple[int, ...] = ()
    countries: tuple[str, ...] = ()
    cluster: str = ""
    score: float = 0.0
    reasons: tuple[str, ...] = ()
    rule: str = ""
    evidence: tuple[str, ...] = ()  # decision ids
    rules_version: str = ""

    @property
    def id(self) -> str:
        """The deterministic event id (see `event_id`)."""
        return event_id(self.incident, self.first_seen)

    def message(self) -> ReportableEvent:
        """The event as its proto message."""
        msg = ReportableEvent(
            id=self.id,
            kind=self.kind,
            severity=self.severity,
            incident=self.incident,
            requests=self.requests,
            account_count=len(self.accounts),
            accounts=self.accounts[:MAX_ACCOUNTS],
            networks=self.networks[:MAX_PLACES],
            asns=self.asns[:MAX_PLACES],
            countries=self.countries[:MAX_PLACES],
            cluster=self.cluster,
            score=round(self.score, 4),
            reasons=self.reasons,
            rule=self.rule,
            evidence=self.evidence[:MAX_EVIDENCE],
            rules_version=self.rules_version,
        )
        msg.first_seen.FromMicroseconds(round(self.first_seen * 1_000_000))
        msg.last_seen.FromMicroseconds(round(self.last_seen * 1_000_000))
        return msg

    def to_json(self) -> dict[str, Any]:
        """The event's proto3 JSON mapping (what the webhook and the log receive)."""
        fields: dict[str, Any] = json_format.MessageToDict(
            self.message(), preserving_proto_field_name=True
        )
        return fields

    def line(self) -> str:
        """`to_json` on one line, keys sorted: the webhook's body, a line of --events-out."""
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))

    def record(self, now: float) -> dict[str, Any]:
        """The unchained audit record that carries the event, timed `now` (record time)."""
        record = AuditRecord(schema=SCHEMA)
        record.time.FromMicroseconds(round(now * 1_000_000))
        record.event.CopyFrom(self.message())
        fields: dict[str, Any] = json_format.MessageToDict(record, preserving_proto_field_name=True)
        return fields
