"""Assemble a case: the passes over the source, and the case JSON (docs/case.md).

    pass 1 (cluster subjects only)  which accounts carry the cluster in the period
    pass 2                          the chain check of every record, the tallies of the
                                    case's records, and the reportable events
    pass 3                          other accounts' traffic on the case's indicators

Each pass streams the source; nothing holds more than a record at a time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any

from authz import __version__
from authz.audit.record import parse_fields
from authz.audit.window import rfc3339
from authz.case.collect import Collector
from authz.case.evidence import Evidence
from authz.case.indicators import Context
from authz.case.redact import masking_version
from authz.case.source import (
    CaseError,
    Period,
    Source,
    Subject,
    record_time,
    verdict_members,
    verdicts,
)

FORMAT = "distill-guard-case/1"
MAX_EVENTS = 10_000  # reportable events are once per incident: few, but bounded anyway


def _members(source: Source, cluster: str, period: Period) -> set[str]:
    """Accounts whose records in the period carry the cluster."""
    found = set()
    needle = cluster.encode()
    for _, raw in source.records():
        if raw is None or needle not in raw:
            continue  # the canonical JSON holds the id as is: most records need no parsing
        fields = parse_fields(raw)
        if fields is None or (fields.get("detection") or {}).get("cluster") != cluster:
            continue
        when = record_time(fields)
        if when is not None and period.holds(when) and fields.get("account"):
            found.add(str(fields["account"]))
    return found


def _matcher(subject: Subject, members: set[str]) -> Callable[[Mapping[str, Any]], bool]:
    if subject.kind == "cluster":
        return lambda f: f.get("account") in members
    field = "account" if subject.kind == "account" else "entity"
    return lambda f: f.get(field) == subject.id


def build_case(
    source: Source,
    subject: Subject,
    period: Period,
    *,
    unredacted: bool = False,
    sharing: str = "TLP:AMBER",
    generated: str | None = None,
    redis: Any = None,
) -> dict[str, Any]:
    """The case JSON of a subject over a period; CaseError when the source holds none of it.

    `redis`, a client of the Redis holding the stream, adds the accounts' current
    verdicts (and, for a cluster, the accounts whose verdict names it).
    """
    from_verdicts: list[str] = []
    members: set[str] = set()
    if subject.kind == "cluster":
        members = _members(source, subject.id, period)
        if redis is not None:
            from_verdicts = verdict_members(redis, subject.id)
            members.update(from_verdicts)
    belongs = _matcher(subject, members)
    evidence, collector = Evidence(), Collector(unredacted=unredacted)
    events: list[dict[str, Any]] = []
    outside = 0
    for where, raw in source.records():
        evidence.feed(where, raw)
        fields = parse_fields(raw)
        when = record_time(fields) if fields is not None else None
        if fields is None or when is None:
            continue
        if "event" in fields:
            if period.holds(when) and len(events) < MAX_EVENTS:
                events.append({**fields["event"], "record_time": fields["time"], "where": where})
            continue
        if not belongs(fields):
            continue
        if not period.holds(when):
            outside += 1
            continue
        evidence.note(fields)
        collector.add(fields, when)
    if not collector.accounts:
        message = _nothing_found(subject, period, outside)
        if (problem := evidence.summary()["problem"]) is not None:
            message += f"; and the chain check found {problem['kind']}: {problem['message']}"
        raise CaseError(message)
    sections = collector.sections()
    context = Context(sections)
    for _, raw in source.records():
        fields = parse_fields(raw)
        when = record_time(fields) if fields is not None else None
        if fields is None or when is None or "event" in fields or belongs(fields):
            continue
        if period.holds(when):
            context.add(fields, when)
    context.apply(sections)
    accounts = [row["account"] for row in sections["accounts"]]
    chain = evidence.summary()
    case: dict[str, Any] = {
        "format": FORMAT,
        "producer": f"distill-guard {__version__}",
        "case_id": _case_id(subject, period, chain),
    }
    if generated is not None:
        case["generated"] = generated
    case.update(
        {
            "sharing": sharing,
            "redacted": not unredacted,
            "masking": masking_version(),
            "subject": {"kind": subject.kind, "id": subject.id, "from_verdicts": from_verdicts},
            "period": {
                "since": None if period.since is None else rfc3339(period.since),
                "until": None if period.until is None else rfc3339(period.until),
                "first_record": collector.span.first_at,
                "last_record": collector.span.last_at,
            },
            "source": {
                "kind": source.kind,
                "names": source.names,
                "verify": source.verify,
                "records": evidence.read,
                "subject_records_outside_period": outside,
            },
            **sections,
            "verdicts": None if redis is None else _verdict_rows(verdicts(redis, accounts)),
            "events": _events(events, subject, set(accounts)),
            "chain": chain,
        }
    )
    return case


def _nothing_found(subject: Subject, period: Period, outside: int) -> str:
    span = ""
    if period.since is not None or period.until is not None:
        since = "the start" if period.since is None else rfc3339(period.since)
        until = "the end" if period.until is None else rfc3339(period.until)
        span = f" between {since} and {until}"
    more = f" ({outside:,} of its records lie outside the period)" if outside else ""
    return f"no records of {subject.kind} {subject.id}{span} in the source{more}"


def _case_id(subject: Subject, period: Period, chain: Mapping[str, Any]) -> str:
    """`case-` and 12 hex digits over the subject, the period and the case records' chain heads."""
    heads = [(c["name"], c["last_sequence"], c["last_hash"]) for c in chain["case"]["chains"]]
    text = json.dumps([subject.kind, subject.id, period.since, period.until, heads])
    return "case-" + hashlib.sha256(text.encode()).hexdigest()[:12]


def _verdict_rows(found: Mapping[str, Mapping[str, str]]) -> list[dict[str, Any]]:
    rows = []
    for account, v in sorted(found.items()):
        until = v.get("until", "")
        with contextlib.suppress(ValueError):  # otherwise shown as stored
            until = rfc3339(float(until))
        rows.append(
            {
                "account": account,
                "action": v.get("action", ""),
                "cluster": v.get("cluster", ""),
                "score": v.get("score", ""),
                "until": until,
                "reasons": [r for r in v.get("reasons", "").split(",") if r],
            }
        )
    return rows


def _events(
    events: list[dict[str, Any]], subject: Subject, accounts: set[str]
) -> list[dict[str, Any]]:
    """The reportable events that name the case's cluster or any of its accounts."""
    return [
        e
        for e in events
        if (subject.kind == "cluster" and e.get("cluster") == subject.id)
        or accounts.intersection(e.get("accounts") or ())
    ]
