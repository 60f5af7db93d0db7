"""Audit queries answered from the rollups alone: `audit usage`, `audit who`, `audit account`.

No query reads a record: each reads one key (or a few) per bucket of the
window, so it costs the same over ten thousand records as over ten million.

Windows: `--since` and `--until` take a duration back from now (`90m`, `24h`,
`7d`, `2w`, `30s`), an RFC 3339 time or a date (midnight UTC). Windows of at
most 72 hours are read from hourly buckets, longer ones from daily buckets
(`--granularity` overrides). Buckets are whole: the first and last buckets of
the window are counted entirely, so a window may include up to one bucket's
worth of records before `since` and after `until`; the output states the
span actually covered (`from`, `to`).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

import redis

from authz.audit.rollup import (
    ASN_ORG_KEY,
    BUCKET_SECONDS,
    DAY,
    DIMENSIONS,
    HOUR,
    Client,
    account_key,
    add_redis_argument,
    bucket_name,
    bucket_start,
    country_key,
    dim_key,
    redis_client,
    total_key,
)
from authz.clock import SystemClock
from authz.protocols import Clock

HOUR_WINDOW_LIMIT = 72 * 3600  # windows up to this long are read from hourly buckets
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
TMP_PREFIX = "{dg:audit}:tmp"  # same slot as the rollups (Cluster)
_PLURAL = {"entity": "entities", "country": "countries", "asn": "ASNs"}
_BREAKDOWNS = ("countries", "networks", "asns", "reasons", "signals", "would_deny")


class QueryError(ValueError):
    """A query cannot run as asked (bad time, empty window)."""


# --- windows ---------------------------------------------------------------------------


def parse_time(text: str, now: float) -> float:
    """Epoch seconds of `24h`/`7d`/`90m`-style durations back from now, RFC 3339 times or dates."""
    match = _DURATION.match(text.strip())
    if match:
        return now - float(match.group(1)) * _UNITS[match.group(2)]
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise QueryError(f"not a duration (90m, 24h, 7d) or an RFC 3339 time: {text!r}") from None
    if when.tzinfo is None:
        if len(text.strip()) != 10:  # a bare date means midnight UTC; a time needs its offset
            raise QueryError(f"give a UTC offset (Z or +01:00) with the time: {text!r}")
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def rfc3339(when: float) -> str:
    """Epoch seconds as an RFC 3339 UTC time."""
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Window:
    """The span a query covers, as whole buckets of one granularity."""

    since: float
    until: float
    granularity: str  # h or d
    buckets: tuple[str, ...]

    @property
    def start(self) -> float:
        """When the first bucket begins."""
        return bucket_start(self.granularity, self.buckets[0])

    @property
    def end(self) -> float:
        """When the last bucket ends."""
        return bucket_start(self.granularity, self.buckets[-1]) + BUCKET_SECONDS[self.granularity]

    def describe(self) -> str:
        """One line for people: the span covered and the bucket size."""
        unit = "hourly" if self.granularity == HOUR else "daily"
        return (
            f"{rfc3339(self.start)} .. {rfc3339(self.end)} "
            f"({len(self.buckets)} {unit} buckets, edge buckets counted whole)"
        )

    def as_json(self) -> dict[str, Any]:
        """The window for --json output."""
        return {
            "since": rfc3339(self.since),
            "until": rfc3339(self.until),
            "granularity": "hour" if self.granularity == HOUR else "day",
            "from": rfc3339(self.start),
            "to": rfc3339(self.end),
            "buckets": len(self.buckets),
        }


def make_window(since: str, until: str | None, now: float, granularity: str = "auto") -> Window:
    """The buckets covering [since, until): hourly up to 72 hours, daily beyond (unless forced)."""
    start = parse_time(since, now)
    end = parse_time(until, now) if until else now
    if end <= start:
        raise QueryError(f"empty window: {rfc3339(start)} is not before {rfc3339(end)}")
    if granularity == "auto":
        g = HOUR if end - start <= HOUR_WINDOW_LIMIT else DAY
    else:
        g = HOUR if granularity in {"hour", HOUR} else DAY
    size = BUCKET_SECONDS[g]
    first = bucket_start(g, bucket_name(g, start))
    buckets = []
    at = float(first)
    while at < end:
        buckets.append(bucket_name(g, at))
        at += size
    return Window(start, end, g, tuple(buckets))


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
        for mine, theirs in (
            (self.countries, other.countries),
            (self.networks, other.networks),
            (self.asns, other.asns),
            (self.reasons, other.reasons),
            (self.signals, other.signals),
            (self.would_deny, other.would_deny),
        ):
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

_COUNTER_FIELDS = {
    "cc:": "countries",
    "net:": "networks",
    "asn:": "asns",
    "reason:": "reasons",
    "sig:": "signals",
    "wd:": "would_deny",
}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


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
    ranked = [(_text(m), int(score)) for m, score in replies[6]]
    keys: int = replies[7]
    totals = _sum_totals(replies[8:])
    if 0 < top < keys:
        # Redis orders equal scores by name descending: take the cut's ties by name instead.
        last = ranked[-1][1]
        above = [row for row in ranked if row[1] > last]
        ties: Any = client.zrangebyscore(
            f"{tmp}:req", last, last, start=0, num=top - len(above), withscores=True
        )
        ranked = above + [(_text(m), int(score)) for m, score in ties]
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
                org=_text(org) if org else "",
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
    req, deny, tok, sig = ({_text(m): int(s) for m, s in reply} for reply in pipe.execute())
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
        key, value = _text(raw_key), _text(raw_value)
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
        orgs = {asn: _text(org) for asn, org in zip(names, found, strict=True) if org}
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


# --- output ----------------------------------------------------------------------------


def table(
    headers: Sequence[str], rows: Iterable[Sequence[object]], footer: Sequence[object] = ()
) -> str:
    """Aligned columns: text left, numbers right; an optional footer row under a rule."""
    cells = [[_cell(v) for v in row] for row in rows]
    foot = [_cell(v) for v in footer]
    everything = [list(headers), *cells, *([foot] if foot else [])]
    widths = [max(len(r[i]) for r in everything) for i in range(len(headers))]
    numeric = [
        all(_is_number(r[i]) for r in cells + ([foot] if foot else []) if r[i]) and bool(cells)
        for i in range(len(headers))
    ]

    def line(row: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(row, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    out = [line(headers), *(line(r) for r in cells)]
    if foot:
        out += ["  ".join("-" * w for w in widths), line(foot)]
    return "\n".join(out)


def _cell(value: object) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _is_number(text: str) -> bool:
    return bool(re.fullmatch(r"[\d,.]+%?", text))


def _count(n: int, noun: str) -> str:
    if n == 1:
        return f"1 {'ASN' if noun == 'asn' else noun}"
    return f"{n:,} {_PLURAL.get(noun, noun + 's')}"


def _share(value: float) -> str:
    return f"{value * 100:.1f}%"


def _top(counts: Mapping[str, int], n: int = 3, sep: str = ", ") -> str:
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    text = sep.join(f"{k} {v:,}" for k, v in ranked[:n])
    return text + (f"{sep}+{len(ranked) - n} more" if len(ranked) > n else "")


def _named(asns: Mapping[str, int], orgs: Mapping[str, str]) -> dict[str, int]:
    return {(f"AS{a} {orgs[a]}" if a in orgs else f"AS{a}"): n for a, n in asns.items()}


def format_usage(result: Usage) -> str:
    """`usage` as a table for people."""
    asn = result.by == "asn"
    headers = [result.by.upper(), *(["ORG"] if asn else []), "REQUESTS", "ALLOWED", "DENIED"]
    headers += ["TOKENS", "SHARE"]
    rows = [
        [
            r.key,
            *([r.org] if asn else []),
            r.requests,
            r.allowed,
            r.denied,
            r.tokens,
            _share(r.share),
        ]
        for r in result.rows
    ]
    t = result.totals
    label = f"total ({_count(result.keys, result.by)})"
    footer = [label, *([""] if asn else []), t.requests, t.allowed, t.denied, t.tokens, "100.0%"]
    lines = [f"usage by {result.by}, {result.window.describe()}", ""]
    lines.append(table(headers, rows, footer if result.keys else ()))
    if len(result.rows) < result.keys:
        lines.append(f"(top {len(result.rows)} of {result.keys:,}; --top 0 for all)")
    if not result.keys:
        lines.append("(no records in this window)")
    return "\n".join(lines)


def format_who(result: Who) -> str:
    """`who` as two tables for people: accounts, then entities."""
    t = result.totals
    lines = [f"who used the model from {result.country}, {result.window.describe()}", ""]
    if not result.total_accounts:
        return "\n".join([*lines, "(no records from this country in this window)"])
    headers = ["ACCOUNT", "ENTITY", "REQUESTS", "ALLOWED", "DENIED", "TOKENS", "SIGNALED"]
    rows = [
        [r.account, r.entity, r.requests, r.allowed, r.denied, r.tokens, r.signaled]
        for r in result.accounts
    ]
    footer = [
        f"total ({_count(result.total_accounts, 'account')})", "", t.requests, t.allowed, t.denied,
        t.tokens, result.signaled,
    ]  # fmt: skip
    lines.append(table(headers, rows, footer))
    if len(result.accounts) < result.total_accounts:
        lines.append(f"(top {len(result.accounts)} of {result.total_accounts:,}; --top 0 for all)")
    lines.append("")
    headers = ["ENTITY", "ACCOUNTS", "REQUESTS", "ALLOWED", "DENIED", "TOKENS", "SIGNALED"]
    rows = [
        [e.entity, e.accounts, e.requests, e.allowed, e.denied, e.tokens, e.signaled]
        for e in result.entities
    ]
    lines.append(table(headers, rows))
    return "\n".join(lines)


def format_timeline(result: Timeline) -> str:
    """`account` as a timeline table and a summary of the window, for people."""
    who_line = f"account {result.account}"
    if result.entity:
        who_line += (
            f" (entity {result.entity}, tier {result.tier}, kyc {result.kyc}"
            f" in {result.kyc_country})"
        )
    lines = [f"{who_line}, {result.window.describe()}", ""]
    if not result.buckets:
        return "\n".join([*lines, "(no records for this account in this window)"])
    hourly = result.window.granularity == HOUR
    headers = ["HOUR" if hourly else "DAY", "REQUESTS", "DENIED", "TOKENS", "COUNTRIES", "NETS"]
    headers += ["DECISIONS", "SIGNALS"]
    rows = [
        [
            b.start[:16] + "Z" if hourly else b.start[:10],
            b.requests,
            b.denied,
            b.tokens,
            _top(b.countries),
            len(b.networks),
            _top(b.reasons),
            _top(b.signals) or "-",
        ]
        for b in result.buckets
    ]
    t = result.totals
    footer = ["total", t.requests, t.denied, t.tokens, _count(len(t.countries), "country")]
    footer += [len(t.networks), "", f"{t.signaled:,} signaled"]
    lines += [table(headers, rows, footer), ""]
    summary = [
        ("countries", _top(t.countries, 10, " · ")),
        ("networks", _top(t.networks, 5, " · ") + f" ({_count(len(t.networks), 'network')})"),
        ("ASNs", _top(_named(t.asns, result.as_orgs), 5, " · ")),
        ("decisions", _top(t.reasons, 10, " · ")),
        ("signals", _top(t.signals, 10, " · ") or "none"),
    ]
    if t.would_deny:
        summary.append(("would deny", _top(t.would_deny, 10, " · ")))
    lines += [f"{name + ':':<11} {text}" for name, text in summary]
    return "\n".join(lines)


def usage_json(result: Usage) -> dict[str, Any]:
    """`usage --json`."""
    rows = [asdict(r) for r in result.rows]
    if result.by != "asn":
        for row in rows:
            del row["org"]
    return {
        "query": "usage",
        "by": result.by,
        "window": result.window.as_json(),
        "rows": rows,
        "keys": result.keys,
        "totals": asdict(result.totals),
    }


def who_json(result: Who) -> dict[str, Any]:
    """`who --json`."""
    return {
        "query": "who",
        "country": result.country,
        "window": result.window.as_json(),
        "accounts": [asdict(r) for r in result.accounts],
        "entities": [asdict(e) for e in result.entities],
        "total_accounts": result.total_accounts,
        "totals": {**asdict(result.totals), "signaled": result.signaled},
    }


def timeline_json(result: Timeline) -> dict[str, Any]:
    """`account --json`."""
    totals = asdict(result.totals)
    del totals["start"]
    return {
        "query": "account",
        "account": result.account,
        "entity": result.entity,
        "tier": result.tier,
        "kyc": result.kyc,
        "kyc_country": result.kyc_country,
        "window": result.window.as_json(),
        "buckets": [asdict(b) for b in result.buckets],
        "totals": totals,
        "as_orgs": result.as_orgs,
    }


# --- command line ----------------------------------------------------------------------


def _run(
    ns: argparse.Namespace,
    clock: Clock,
    query: Callable[[Client, Window], tuple[dict[str, Any], str]],
) -> int:
    try:
        window = make_window(ns.since, ns.until, clock.now(), ns.granularity)
        client = redis_client(ns.redis)
    except ValueError as exc:
        print(f"distill-guard audit {ns.audit_command}: {exc}", file=sys.stderr)
        return 2
    try:
        with client:
            data, text = query(client, window)
    except redis.RedisError as exc:
        print(f"distill-guard audit {ns.audit_command}: Redis: {exc}", file=sys.stderr)
        return 1
    if ns.json:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    else:
        sys.stdout.write(text + "\n")
    return 0


def _usage_cmd(ns: argparse.Namespace, clock: Clock) -> int:
    def query(client: Client, window: Window) -> tuple[dict[str, Any], str]:
        result = usage(client, window, ns.by, ns.top)
        return usage_json(result), format_usage(result)

    return _run(ns, clock, query)


def _who_cmd(ns: argparse.Namespace, clock: Clock) -> int:
    def query(client: Client, window: Window) -> tuple[dict[str, Any], str]:
        result = who(client, window, ns.country, ns.top)
        return who_json(result), format_who(result)

    return _run(ns, clock, query)


def _account_cmd(ns: argparse.Namespace, clock: Clock) -> int:
    def query(client: Client, window: Window) -> tuple[dict[str, Any], str]:
        result = account_timeline(client, window, ns.account)
        return timeline_json(result), format_timeline(result)

    return _run(ns, clock, query)


def _common(p: argparse.ArgumentParser, since: str) -> None:
    add_redis_argument(p)
    p.add_argument(
        "--since",
        default=since,
        help=f"start: 90m, 24h, 7d… back from now, or an RFC 3339 time (default: {since})",
    )
    p.add_argument("--until", help="end, in the same forms (default: now)")
    p.add_argument(
        "--granularity",
        choices=("auto", "hour", "day"),
        default="auto",
        help="bucket size; auto: hours for windows up to 72h, days beyond",
    )
    p.add_argument("--json", action="store_true", help="print JSON for scripts")


def add_parsers(
    actions: argparse._SubParsersAction[argparse.ArgumentParser], clock: Clock | None = None
) -> None:
    """Add `audit usage`, `audit who` and `audit account`."""
    clock = clock or SystemClock()
    p = actions.add_parser(
        "usage", help="requests, denials and tokens per account/entity/country/ASN"
    )
    _common(p, "24h")
    p.add_argument(
        "--by", choices=DIMENSIONS, default="account", help="dimension (default: account)"
    )
    p.add_argument(
        "--top", type=int, default=20, help="rows shown, largest first; 0: all (default: 20)"
    )
    p.set_defaults(func=partial(_usage_cmd, clock=clock))

    p = actions.add_parser("who", help="accounts and entities that used the model from a country")
    _common(p, "7d")
    p.add_argument("--country", required=True, help="ISO 3166-1 alpha-2 code, e.g. IR")
    p.add_argument("--top", type=int, default=50, help="accounts shown; 0: all (default: 50)")
    p.set_defaults(func=partial(_who_cmd, clock=clock))

    p = actions.add_parser(
        "account", help="one account's timeline: volume, places, decisions, signals"
    )
    _common(p, "7d")
    p.add_argument("account", help="account id")
    p.set_defaults(func=partial(_account_cmd, clock=clock))
