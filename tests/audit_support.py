"""Helpers shared by the audit tests: known records, real decisions, chains and their checks."""

from __future__ import annotations

import asyncio
import time
from calendar import timegm
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import redis

from authz.audit.backfill import backfill
from authz.audit.chain import ChainHead, seal
from authz.audit.queue import AuditTrail
from authz.audit.record import canonical, to_dict
from authz.audit.roller import Roller
from authz.audit.stream import STREAM
from authz.audit.verify import ChainChecker, Entry, Problem, file_entries
from authz.clock import ManualClock
from authz.decision import Decision
from authz.facts import RequestFacts
from authz.gen.distill_guard.audit.v1.audit_pb2 import AuditRecord
from tests.fakes import BOB_KEY, facts, make_pipeline

# When the tests "run". Far in the future: Redis expires keys by its own clock (EXPIREAT),
# so rollups of records dated in the past could vanish before a test reads them.
NOW = timegm((2099, 11, 21, 12, 0, 0))

Records = list[tuple[RequestFacts, Decision]]


# --- records in the canonical JSON shape, and the known set the rollups and queries use --


def record(
    time: str,
    account: str = "",
    entity: str = "",
    *,
    country: str = "",
    asn: int = 0,
    org: str = "",
    network: str = "",
    reason: str = "ok",
    tokens: int = 0,
    signals: tuple[str, ...] = (),
    would_deny: str = "",
) -> dict[str, Any]:
    """An audit record in the canonical JSON shape (defaults and empty lists left out)."""
    denied = reason != "ok"
    rec: dict[str, Any] = {
        "schema": 1,
        "time": time,
        "account": account,
        "entity": entity,
        "country": country,
        "asn": asn,
        "as_org": org,
        "client_network": network,
        "client_ip": network.replace("0/24", "7") if network else "",
        "action": "deny" if denied else "allow",
        "status": 429 if reason == "rate_limited" else 403 if denied else 200,
        "reason": reason,
        "estimated_tokens": str(tokens) if tokens else "",
        "signals": list(signals),
        "would_deny": would_deny,
    }
    return {k: v for k, v in rec.items() if v not in ("", 0, [])}


# Spans 2099-11-18 .. 2099-11-21. Totals: 9 requests, 3 denied, 1,425 tokens.
KNOWN_RECORDS = [
    record("2099-11-20T10:05:00Z", "a1", "e1", country="US", asn=7922, org="COMCAST-7922",
           network="1.1.1.0/24", tokens=100),
    record("2099-11-20T10:20:00.250Z", "a1", "e1", country="US", asn=7922, org="COMCAST-7922",
           network="1.1.1.0/24", tokens=200, signals=("volume_spike_account",)),
    record("2099-11-20T10:40:00Z", "a1", "e1", country="DE", asn=16509, org="AMAZON-02",
           network="2.2.2.0/24", reason="rate_limited",
           signals=("volume_spike_account", "kyc-mismatch-unverified")),
    record("2099-11-20T11:10:00Z", "a2", "e1", country="US", asn=7922, org="COMCAST-7922",
           network="3.3.3.0/24", tokens=50),
    record("2099-11-20T11:15:00Z", "a2", "e1", country="US", asn=7922, org="COMCAST-7922",
           network="3.3.3.0/24", tokens=70),
    record("2099-11-20T11:30:00Z", "a3", "e2", country="IR", asn=58224, org="TCI",
           network="4.4.4.0/24", reason="country_denied"),
    record("2099-11-20T10:50:00Z", country="FR", asn=3215, org="Orange", network="5.5.5.0/24",
           reason="key_unknown"),
    record("2099-11-21T09:00:00Z", "a1", "e1", country="US", asn=7922, org="COMCAST-7922",
           network="1.1.1.0/24", tokens=1000, would_deny="rate_limited"),
    record("2099-11-18T23:30:00Z", "a2", "e1", country="DE", asn=16509, org="AMAZON-02",
           network="2.2.2.0/24", tokens=5),
]  # fmt: skip


def load_known(client: redis.Redis) -> None:
    """Roll the known set up (as a backfill) at NOW."""
    backfill(Roller(client, clock=ManualClock(NOW)), KNOWN_RECORDS)


def xadd_lines(client: Any, lines: Iterable[str]) -> list[str]:
    """Append lines to dg:audit as the Redis sink does (one `record` field each); their ids."""
    return [client.xadd(STREAM, {"record": line}).decode() for line in lines]


def xadd(client: Any, records: Iterable[dict[str, Any]]) -> None:
    """Append records to dg:audit as canonical JSON, as the Redis sink does."""
    xadd_lines(client, (canonical(rec) for rec in records))


# --- real decisions, chains, and their checks ----------------------------------------------


def decisions(n: int) -> Records:
    """`n` real decisions of a demo pipeline, to feed a trail."""
    pipeline, sink = make_pipeline()

    async def run() -> None:
        for _ in range(n):
            await pipeline.check(facts({"x-api-key": BOB_KEY}))

    asyncio.run(run())
    return sink.records


def write(trail: AuditTrail, records: Records) -> None:
    """Record decisions through a started trail, then close it (everything written)."""

    async def run() -> None:
        trail.start()
        for f, d in records:
            trail.record(f, d)
        await trail.close()

    asyncio.run(run())


def sealed(records: Iterable[AuditRecord], chain: str, head: ChainHead | None = None) -> list[str]:
    """Records chained as a sink's worker chains them: canonical JSON lines after `head`."""
    lines = []
    for rec in records:
        line, head = seal(to_dict(rec), head, chain)
        lines.append(line)
    return lines


def intact(entries: Iterable[Entry | Problem]) -> ChainChecker:
    """Check entries as `audit verify` would; they must form intact chains."""
    checker = ChainChecker()
    problem = checker.check(entries)
    assert problem is None, problem
    return checker


def intact_lines(lines: Sequence[str]) -> ChainChecker:
    """Check lines as `audit verify` checks a file; they must form intact chains."""
    return intact(file_entries(line.encode() for line in lines))


def intact_file(path: Path) -> ChainChecker:
    """Check a JSON lines file as `audit verify` would; it must be intact."""
    with open(path, "rb") as f:
        return intact(file_entries(f))


async def until(condition: Callable[[], bool], timeout: float = 5.0, poll: float = 0.01) -> None:
    """Wait, yielding to the event loop, until `condition` holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(poll)
