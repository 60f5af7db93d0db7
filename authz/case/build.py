"""Assemble a case: the passes over the source, and the case JSON (docs/case.md).

    pass 1 (cluster subjects only)  which accounts carry the cluster in the period
    pass 2                          the chain check of every record, the tallies of the
                                    case's records, and the reportable events
    pass 3                          other accounts' traffic on the case's indicators

Each pass streams the source, one record at a time; what stays in memory are the
tallies, which grow with what the case touches (authz.case.collect).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from authz import __version__
from authz.audit.record import is_event, parse_fields
from authz.audit.window import rfc3339
from authz.case.collect import Collector, usable
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
MAX_PLACES = 20  # places of unusable records listed


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


Match = Callable[[Mapping[str, Any]], bool]


def _matcher(subject: Subject, members: set[str]) -> Match:
    if subject.kind == "cluster":
        return lambda f: f.get("account") in members
    key = "account" if subject.kind == "account" else "entity"
    return lambda f: f.get(key) == subject.id


@dataclass(slots=True)
class _Tallies:
    """What pass 2 gathers besides the collector's tallies."""

    evidence: Evidence = field(default_factory=Evidence)
    events: list[dict[str, Any]] = field(default_factory=list)
    outside: int = 0  # the subject's records outside the period
    unusable: int = 0  # the subject's records with fields of the wrong shape
    places: list[str] = field(default_factory=list)  # where the first of those are


def _tally(source: Source, belongs: Match, period: Period, collector: Collector) -> _Tallies:
    """Pass 2: check every record's chain, tally the case's records, keep the events."""
    t = _Tallies()
    for where, raw in source.records():
        t.evidence.feed(where, raw)
        fields = parse_fields(raw)
        when = record_time(fields) if fields is not None else None
        if fields is None or when is None:
            continue
        if is_event(fields):
            if period.holds(when) and len(t.events) < MAX_EVENTS:
                t.events.append({**fields["event"], "record_time": fields["time"], "where": where})
        elif not belongs(fields):
            continue
        elif not period.holds(when):
            t.outside += 1
        elif not usable(fields):
            t.unusable += 1
            if len(t.places) < MAX_PLACES:
                t.places.append(where)
        else:
            t.evidence.note(fields)
            collector.add(fields, when)
    return t


def _context(source: Source, belongs: Match, period: Period, sections: dict[str, Any]) -> None:
    """Pass 3: other accounts' traffic on the case's indicator values, into the sections."""
    context = Context(sections)
    for _, raw in source.records():
        fields = parse_fields(raw)
        when = record_time(fields) if fields is not None else None
        if fields is None or when is None or is_event(fields) or belongs(fields):
            continue
        if period.holds(when):
            context.add(fields, when)
    context.apply(sections)


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
    collector = Collector(unredacted=unredacted)
    t = _tally(source, belongs, period, collector)
    if not collector.accounts:
        message = _nothing_found(subject, period, t.outside)
        if (problem := t.evidence.summary()["problem"]) is not None:
            message += f"; and the chain check found {problem['kind']}: {problem['message']}"
        raise CaseError(message)
    sections = collector.sections()
    _context(source, belongs, period, sections)
    accounts = [row["account"] for row in sections["accounts"]]
    chain = t.evidence.summary()
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
                "records": t.evidence.read,
                "subject_records_outside_period": t.outside,
                "unusable_records": t.unusable,
                "unusable_places": t.places,
            },
            **sections,
            "verdicts": None if redis is None else _verdict_rows(verdicts(redis, accounts)),
            "events": _events(t.events, subject, set(accounts)),
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
