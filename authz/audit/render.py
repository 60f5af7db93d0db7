"""The audit queries' answers for people (aligned tables) and for scripts (JSON)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

from authz.audit.queries import Timeline, Usage, Who
from authz.audit.rollup_keys import HOUR

_PLURAL = {"entity": "entities", "country": "countries", "asn": "ASNs"}


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
