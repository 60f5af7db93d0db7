"""Audit queries answered from the rollups alone: `audit usage`, `audit who`, `audit account`.

No query reads a record: each reads one key (or a few) per bucket of the
window (authz.audit.window), so it costs the same over ten thousand records as
over ten million. authz.audit.render prints the results; authz.audit.query_cli
is the command line.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from authz.audit.client import Client
from authz.audit.rollup_keys import (
    ASN_ORG_KEY,
    DIMENSIONS,
    account_key,
    bucket_start,
    country_key,
    dim_key,
    total_key,
)
from authz.audit.window import QueryError, Window, rfc3339
from authz.redistext import text

TMP_PREFIX = "{dg:audit}:tmp"  # same slot as the rollups (Cluster)
# The breakdowns of an account's activity, by the prefix of their fields in its hash.
_COUNTER_FIELDS = {
    "cc:": "countries",
    "net:": "networks",
    "asn:": "asns",
    "reason:": "reasons",
    "sig:": "signals",
    "wd:": "would_deny",
}
_BREAKDOWNS = tuple(_COUNTER_FIELDS.values())


# --- results ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Totals:
    """Requests, allowed, denied and tokens summed over a window."""

    requests: int = 0
    allowed: int = 0
    denied: int = 0
    tokens: int = 0


@dataclass(frozen=True, slots=True)
class UsageRow:
    """One key of `usage`: an account, entity, country or ASN."""

    key: str
    requests: int
    allowed: int
    denied: int
    tokens: int
    share: float  # of all requests in the window
    org: str = ""  # AS organisation, for --by asn


@dataclass(frozen=True, slots=True)
class Usage:
    """The answer of `usage --by DIM`: the top keys and the window's totals."""

    by: str
    window: Window
    rows: list[UsageRow]
    keys: int  # distinct keys in the window (rows may show fewer: --top)
    totals: Totals


@dataclass(frozen=True, slots=True)
class WhoRow:
    """One account seen from the country (with its entity)."""

    account: str
    entity: str
    requests: int
    allowed: int
    denied: int
    tokens: int
    signaled: int  # requests that raised at least one signal


@dataclass(frozen=True, slots=True)
class EntityRow:
    """One entity seen from the country, over all its accounts there."""

    entity: str
    accounts: int
    requests: int
    allowed: int
    denied: int
    tokens: int
    signaled: int


@dataclass(frozen=True, slots=True)
class Who:
    """The answer of `who --country CC`."""

    country: str
    window: Window
    accounts: list[WhoRow]
    entities: list[EntityRow]
    total_accounts: int
    totals: Totals
    signaled: int


@dataclass(slots=True)
class Activity:
    """One account's activity in one bucket (or summed over the window)."""

    start: str
    requests: int = 0
    allowed: int = 0
    denied: int = 0
    tokens: int = 0
    signaled: int = 0
    countries: dict[str, int] = field(default_factory=dict)
    networks: dict[str, int] = field(default_factory=dict)
    asns: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)
    signals: dict[str, int] = field(default_factory=dict)
    would_deny: dict[str, int] = field(default_factory=dict)

    def sort(self) -> None:
        """Order each breakdown by count, largest first (then by name)."""
        for name in _BREAKDOWNS:
            counts: dict[str, int] = getattr(self, name)
            setattr(self, name, dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))))

    def add(self, other: Activity) -> None:
        """Sum another bucket into this one."""
        self.requests += other.requests
        self.allowed += other.allowed
        self.denied += other.denied
        self.tokens += other.tokens
        self.signaled += other.signaled
        for name in _BREAKDOWNS:
            mine: dict[str, int] = getattr(self, name)
            theirs: dict[str, int] = getattr(other, name)
            for key, n in theirs.items():
                mine[key] = mine.get(key, 0) + n


@dataclass(frozen=True, slots=True)
class Timeline:
    """The answer of `account ID`: its buckets with any activity, and the window's sums."""

    account: str
    entity: str
    tier: str
    kyc: str
    kyc_country: str
    window: Window
    buckets: list[Activity]
    totals: Activity
    as_orgs: dict[str, str]  # names of the ASNs seen


# --- queries ---------------------------------------------------------------------------


def _sum_totals(replies: Iterable[Sequence[bytes | None]]) -> Totals:
    req = deny = tok = 0
    for reply in replies:
        req += int(reply[0] or 0)
        deny += int(reply[1] or 0)
        tok += int(reply[2] or 0)
    return Totals(req, req - deny, deny, tok)


def usage(client: Client, window: Window, by: str, top: int = 20) -> Usage:
    """Requests, allowed, denied and tokens per key of one dimension, largest first.

    Keys with equal requests are ordered by name, also where `top` cuts them.
    """
    if by not in DIMENSIONS:
        raise QueryError(f"--by must be one of {', '.join(DIMENSIONS)}, not {by!r}")
    tmp = f"{TMP_PREFIX}:{uuid.uuid4().hex}"
    g = window.granularity
    pipe = client.pipeline(transaction=False)
    for measure in ("req", "deny", "tok"):
        pipe.zunionstore(f"{tmp}:{measure}", [dim_key(g, b, by, measure) for b in window.buckets])
        pipe.expire(f"{tmp}:{measure}", 60)  # gone even if we die before the DEL below
    pipe.zrevrange(f"{tmp}:req", 0, top - 1 if top > 0 else -1, withscores=True)
    pipe.zcard(f"{tmp}:req")
    for bucket in window.buckets:
        pipe.hmget(total_key(g, bucket), ["req", "deny", "tok"])
    replies = pipe.execute()
    ranked = [(text(m), int(score)) for m, score in replies[6]]
    keys: int = replies[7]
    totals = _sum_totals(replies[8:])
    if 0 < top < keys:
        # Redis orders equal scores by name descending: take the cut's ties by name instead.
        last = ranked[-1][1]
        above = [row for row in ranked if row[1] > last]
        ties: Any = client.zrangebyscore(
            f"{tmp}:req", last, last, start=0, num=top - len(above), withscores=True
        )
        ranked = above + [(text(m), int(score)) for m, score in ties]
    members = [member for member, _ in ranked]
    pipe = client.pipeline(transaction=False)
    if members:
        pipe.zmscore(f"{tmp}:deny", members)
        pipe.zmscore(f"{tmp}:tok", members)
        if by == "asn":
            pipe.hmget(ASN_ORG_KEY, members)
    for measure in ("req", "deny", "tok"):  # one key per DEL: Cluster pipelines allow no more
        pipe.delete(f"{tmp}:{measure}")
    more = pipe.execute()
    denied, tokens = (more[0], more[1]) if members else ([], [])
    orgs = more[2] if members and by == "asn" else [None] * len(members)
    rows = []
    for (member, requests), deny, tok, org in zip(ranked, denied, tokens, orgs, strict=True):
        refused = int(deny or 0)
        rows.append(
            UsageRow(
                key=member,
                requests=requests,
                allowed=requests - refused,
                denied=refused,
                tokens=int(tok or 0),
                share=requests / totals.requests if totals.requests else 0.0,
                org=text(org) if org else "",
            )
        )
    rows.sort(key=lambda r: (-r.requests, r.key))
    return Usage(by, window, rows, keys, totals)


def who(client: Client, window: Window, country: str, top: int = 50) -> Who:
    """The accounts (and entities) that used the model from one country, largest first."""
    country = country.strip().upper()
    g = window.granularity
    pipe = client.pipeline(transaction=False)
    for measure in ("req", "deny", "tok", "sig"):
        pipe.zunion([country_key(g, b, country, measure) for b in window.buckets], withscores=True)
    req, deny, tok, sig = ({text(m): int(s) for m, s in reply} for reply in pipe.execute())
    accounts = []
    for pair, requests in req.items():
        account, _, entity = pair.partition("|")
        denied = deny.get(pair, 0)
        accounts.append(
            WhoRow(
                account, entity, requests, requests - denied, denied, tok.get(pair, 0),
                sig.get(pair, 0),
            )
        )  # fmt: skip
    accounts.sort(key=lambda r: (-r.requests, r.account))
    entities: dict[str, list[WhoRow]] = {}
    for row in accounts:
        entities.setdefault(row.entity, []).append(row)
    entity_rows = sorted(
        (
            EntityRow(
                name,
                len(rows),
                sum(r.requests for r in rows),
                sum(r.allowed for r in rows),
                sum(r.denied for r in rows),
                sum(r.tokens for r in rows),
                sum(r.signaled for r in rows),
            )
            for name, rows in entities.items()
        ),
        key=lambda r: (-r.requests, r.entity),
    )
    totals = Totals(
        sum(r.requests for r in accounts),
        sum(r.allowed for r in accounts),
        sum(r.denied for r in accounts),
        sum(r.tokens for r in accounts),
    )
    shown = accounts[:top] if top > 0 else accounts
    shown_entities = entity_rows[:top] if top > 0 else entity_rows
    signaled = sum(r.signaled for r in accounts)
    return Who(country, window, shown, shown_entities, len(accounts), totals, signaled)


def _activity(start: str, raw: Mapping[bytes, bytes]) -> tuple[Activity, dict[str, str]]:
    act = Activity(start)
    meta: dict[str, str] = {}
    for raw_key, raw_value in raw.items():
        key, value = text(raw_key), text(raw_value)
        if key.startswith("@"):
            meta[key[1:]] = value
        elif key in {"req", "deny", "tok", "sig"}:
            n = int(value)
            if key == "req":
                act.requests = n
            elif key == "deny":
                act.denied = n
            elif key == "tok":
                act.tokens = n
            else:
                act.signaled = n
        else:
            prefix, _, name = key.partition(":")
            breakdown = _COUNTER_FIELDS.get(prefix + ":")
            if breakdown:  # fields a later version may add are skipped
                getattr(act, breakdown)[name] = int(value)
    act.allowed = act.requests - act.denied
    return act, meta


def account_timeline(client: Client, window: Window, account: str) -> Timeline:
    """One account's buckets in the window: volume, countries, networks, decisions, signals."""
    g = window.granularity
    pipe = client.pipeline(transaction=False)
    for bucket in window.buckets:
        pipe.hgetall(account_key(account, g, bucket))
    totals = Activity(rfc3339(window.start))
    buckets: list[Activity] = []
    meta: dict[str, str] = {}
    for bucket, raw in zip(window.buckets, pipe.execute(), strict=True):
        if not raw:
            continue
        act, latest = _activity(rfc3339(bucket_start(g, bucket)), raw)
        meta.update(latest)
        buckets.append(act)
        totals.add(act)
    for act in [*buckets, totals]:
        act.sort()
    orgs: dict[str, str] = {}
    if totals.asns:
        names = list(totals.asns)
        found = client.hmget(ASN_ORG_KEY, names)
        orgs = {asn: text(org) for asn, org in zip(names, found, strict=True) if org}
    return Timeline(
        account,
        meta.get("entity", ""),
        meta.get("tier", ""),
        meta.get("kyc", ""),
        meta.get("kyc_country", ""),
        window,
        buckets,
        totals,
        orgs,
    )
