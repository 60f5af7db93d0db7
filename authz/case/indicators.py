"""Indicators of a case: how specific each one is, and the JSON lines export.

An indicator (a network, an AS, a client fingerprint, a template hash, a
SimHash, an address) is only worth sharing if it points at the campaign and
not at everyone: a popular SDK's fingerprint or a large ISP's AS would flag
ordinary customers at the receiving provider. So a last pass over the source
counts, for each of the case's indicator values, the requests and accounts of
*other* accounts in the same period, and the confidence follows from the
case's share of that traffic (docs/case.md, "Indicators").
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from authz import __version__
from authz.case.collect import Tally, pool_values
from authz.case.redact import masking_version

FORMAT = "distill-guard-indicators/1"
# Pool of the case JSON -> indicator type of the export, in the export's order.
TYPES = {
    "networks": "network",
    "asns": "asn",
    "clients": "client_fingerprint",
    "templates": "template",
    "simhashes": "simhash",
    "ips": "ip",
}
HIGH_SHARE = 0.9
MEDIUM_SHARE = 0.5


class Context:
    """Counts other accounts' traffic on the case's indicator values."""

    def __init__(self, sections: Mapping[str, Any]) -> None:
        self.wanted = {pool: {row["value"] for row in sections[pool]} for pool in TYPES}
        self.others: dict[tuple[str, str], Tally] = {}

    def add(self, fields: Mapping[str, Any], when: float) -> None:
        """Count one record of an account outside the case (in the period)."""
        account = str(fields.get("account", ""))
        at = str(fields.get("time", ""))
        for pool, value in pool_values(fields).items():
            if value in self.wanted.get(pool, ()):
                self.others.setdefault((pool, value), Tally()).add(account, when, at)

    def apply(self, sections: dict[str, Any]) -> None:
        """Add other_requests, other_accounts and confidence to the indicator pools' rows."""
        for pool in TYPES:
            for row in sections[pool]:
                other = self.others.get((pool, row["value"]), Tally())
                row["other_requests"] = other.requests
                row["other_accounts"] = len(other.accounts)
                row["confidence"] = confidence(row["requests"], row["accounts"], other.requests)


def confidence(requests: int, accounts: int, other_requests: int) -> str:
    """high: several case accounts and >= 90% of its traffic theirs; medium: >= 50%; else low."""
    share = requests / (requests + other_requests) if requests else 0.0
    if share >= HIGH_SHARE and accounts >= 2:
        return "high"
    return "medium" if share >= MEDIUM_SHARE else "low"


def _note(pool: str, row: Mapping[str, Any]) -> str:
    if pool == "networks":
        asns = ", ".join(f"AS{a}" for a in row.get("asns", {}))
        return f"{asns} {'/'.join(row.get('countries', {}))}".strip()
    if pool == "asns":
        return str(row.get("org", ""))
    if pool == "clients":
        return "; ".join(row.get("user_agents", {}))
    if pool == "templates":
        return "simhash " + ", ".join(row.get("simhashes", {}))
    return ""


def export_lines(case: Mapping[str, Any]) -> list[str]:
    """The indicator file: a header object, then one indicator per line (docs/case.md)."""
    rows = []
    for pool, kind in TYPES.items():
        for row in case[pool]:
            rows.append(
                {
                    "type": kind,
                    "value": row["value"],
                    "first_seen": row["first_seen"],
                    "last_seen": row["last_seen"],
                    "accounts": row["accounts"],
                    "requests": row["requests"],
                    "other_accounts": row["other_accounts"],
                    "other_requests": row["other_requests"],
                    "confidence": row["confidence"],
                    "case_id": case["case_id"],
                    "notes": _note(pool, row),
                }
            )
    header = {
        "type": "header",
        "format": FORMAT,
        "producer": f"distill-guard {__version__}",
        "generated": case.get("generated", ""),
        "case_id": case["case_id"],
        "sharing": case["sharing"],
        "subject": case["subject"],
        "period": case["period"],
        "masking": masking_version(),
        "indicators": len(rows),
    }
    return [json.dumps(line, ensure_ascii=False, sort_keys=True) for line in [header, *rows]]
