"""Tallies of a case's records, kept while the source streams past, and the case JSON they make.

Memory grows with what the case touches (its accounts, networks, templates,
addresses), never with the records: each record updates counters and sets
and is dropped. Examples are kept for at most MAX_EXAMPLES templates, each
cut to authz.case.redact.EXAMPLE_CHARS characters.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from authz.audit.rollup_keys import BUCKET_SECONDS, DAY, HOUR
from authz.audit.window import HOUR_WINDOW_LIMIT, rfc3339
from authz.case.redact import example

MAX_EXAMPLES = 2000
RISKS = ("watch", "restrict", "deny")
# The pools of the case: the JSON key of each, and how a record names its value there.
POOLS = (
    "entities",
    "networks",
    "asns",
    "countries",
    "clients",
    "ips",
    "templates",
    "simhashes",
    "clusters",
    "rules_versions",
)


@dataclass(slots=True)
class Tally:
    """Requests and accounts on one value (a network, a template, ...), and when."""

    requests: int = 0
    accounts: set[str] = field(default_factory=set)
    first: float = math.inf
    last: float = -math.inf
    first_at: str = ""
    last_at: str = ""
    notes: Counter[str] = field(default_factory=Counter)  # e.g. a network's countries

    def add(self, account: str, when: float, at: str) -> None:
        """Count one request of `account` at `when` (its record's time text `at`)."""
        self.requests += 1
        self.accounts.add(account)
        if when < self.first:
            self.first, self.first_at = when, at
        if when >= self.last:
            self.last, self.last_at = when, at

    def row(self, value: str) -> dict[str, Any]:
        """The JSON row of this value."""
        return {
            "value": value,
            "requests": self.requests,
            "accounts": len(self.accounts),
            "account_ids": sorted(self.accounts),
            "first_seen": self.first_at,
            "last_seen": self.last_at,
        }


@dataclass(slots=True)
class _Account:
    seen: Tally = field(default_factory=Tally)
    latest: dict[str, str] = field(default_factory=dict)
    actions: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    keys: Counter[str] = field(default_factory=Counter)
    countries: Counter[str] = field(default_factory=Counter)
    networks: set[str] = field(default_factory=set)
    tokens: int = 0
    first_risk: dict[str, tuple[float, str]] = field(default_factory=dict)
    max_score: float = 0.0
    detectors: Counter[str] = field(default_factory=Counter)
    clusters: Counter[str] = field(default_factory=Counter)


def usable(fields: Mapping[str, Any]) -> bool:
    """Whether a record has the shapes the tallies read (records a writer made always do)."""
    detection = fields.get("detection") or {}
    content = fields.get("content") or {}
    if not isinstance(detection, Mapping) or not isinstance(content, Mapping):
        return False
    lists = (fields.get("signals"), detection.get("detectors"), content.get("headers"))
    if not all(isinstance(value or [], list) for value in lists):
        return False
    try:
        for name in ("estimated_tokens", "asn", "sequence"):
            int(fields.get(name) or 0)
        float(detection.get("score") or 0.0)
    except (TypeError, ValueError):
        return False
    return True


def outcome(fields: Mapping[str, Any]) -> tuple[str, bool]:
    """A record's action (allow or deny) and whether an allow was restricted by detection."""
    action = str(fields.get("action", ""))
    detection = fields.get("detection") or {}
    return action, action == "allow" and detection.get("risk") == "restrict"


def pool_values(fields: Mapping[str, Any]) -> dict[str, str]:
    """The value a record has in each pool; empty values are left out."""
    detection = fields.get("detection") or {}
    values = {
        "entities": fields.get("entity"),
        "networks": fields.get("client_network"),
        "asns": str(fields.get("asn") or ""),
        "countries": fields.get("country"),
        "clients": detection.get("client"),
        "ips": fields.get("client_ip"),
        "templates": detection.get("template"),
        "simhashes": detection.get("simhash"),
        "clusters": detection.get("cluster"),
        "rules_versions": fields.get("rules_version"),
    }
    return {pool: str(value) for pool, value in values.items() if value}


def _user_agent(fields: Mapping[str, Any]) -> str:
    content = fields.get("content") or {}
    for header in content.get("headers") or ():
        if isinstance(header, Mapping) and header.get("name") == "user-agent":
            return str(header.get("value", ""))[:200]
    return ""


class Collector:
    """Takes the case's records one at a time; `sections` is the case JSON's body."""

    def __init__(self, *, unredacted: bool) -> None:
        self.unredacted = unredacted
        self.accounts: dict[str, _Account] = {}
        self.pools: dict[str, dict[str, Tally]] = {name: {} for name in POOLS}
        self.kyc_vs_ip: dict[tuple[str, str], Tally] = {}
        self.decisions: Counter[tuple[str, str, str]] = Counter()
        self.signals: Counter[str] = Counter()
        self.detectors: Counter[str] = Counter()
        self.risks: Counter[str] = Counter()
        self.hours: dict[int, Counter[str]] = {}
        self.examples: dict[str, dict[str, Any]] = {}
        self.with_content = 0
        self.span = Tally()  # the first and last record of the case

    def add(self, fields: Mapping[str, Any], when: float) -> None:
        """Count one record of the case, timed `when` (epoch seconds)."""
        at = str(fields["time"])
        account = str(fields.get("account", ""))
        acc = self.accounts.setdefault(account, _Account())
        acc.seen.add(account, when, at)
        self.span.add(account, when, at)
        if when >= acc.seen.last:  # the latest record says what the account is now
            for name in ("entity", "tier", "kyc", "kyc_country", "account_created"):
                acc.latest[name] = str(fields.get(name, ""))
        action, restricted = outcome(fields)
        acc.actions[action] += 1
        acc.actions["restricted"] += restricted
        reason = str(fields.get("reason", ""))
        acc.reasons[reason] += 1
        if key := fields.get("key_id"):
            acc.keys[str(key)] += 1
        acc.tokens += int(fields.get("estimated_tokens") or 0)
        values = pool_values(fields)
        if "countries" in values:
            acc.countries[values["countries"]] += 1
        if "networks" in values:
            acc.networks.add(values["networks"])
        for pool, value in values.items():
            self.pools[pool].setdefault(value, Tally()).add(account, when, at)
        self._notes(fields, values)
        pair = (str(fields.get("kyc_country", "")), values.get("countries", ""))
        self.kyc_vs_ip.setdefault(pair, Tally()).add(account, when, at)
        self.decisions[(action, reason, str(fields.get("rule", "")))] += 1
        self.signals.update(str(s) for s in fields.get("signals") or ())
        bucket = self.hours.setdefault(int(when // BUCKET_SECONDS[HOUR]), Counter())
        bucket.update({"requests": 1, action: 1, "restricted": int(restricted)})
        self._detection(acc, fields, when, at)
        if fields.get("content"):
            self.with_content += 1
            template = values.get("templates")
            if template and template not in self.examples and len(self.examples) < MAX_EXAMPLES:
                found = example(fields, unredacted=self.unredacted)
                if found is not None:
                    self.examples[template] = found

    def _notes(self, fields: Mapping[str, Any], values: dict[str, str]) -> None:
        """What an investigator wants beside some values: a network's AS, a client's agent."""
        if "networks" in values:
            notes = self.pools["networks"][values["networks"]].notes
            notes["country:" + values.get("countries", "")] += 1
            notes["asn:" + values.get("asns", "")] += 1
        if "asns" in values:
            self.pools["asns"][values["asns"]].notes[str(fields.get("as_org", ""))] += 1
        if "clients" in values and (agent := _user_agent(fields)):
            self.pools["clients"][values["clients"]].notes[agent] += 1
        if "templates" in values and "simhashes" in values:
            self.pools["templates"][values["templates"]].notes[values["simhashes"]] += 1

    def _detection(self, acc: _Account, fields: Mapping[str, Any], when: float, at: str) -> None:
        detection = fields.get("detection") or {}
        risk = str(detection.get("risk", ""))
        self.risks[risk or "(not assessed)"] += 1
        if risk in RISKS and (risk not in acc.first_risk or when < acc.first_risk[risk][0]):
            acc.first_risk[risk] = (when, at)  # chains of several writers interleave
        acc.max_score = max(acc.max_score, float(detection.get("score") or 0.0))
        fired = [str(d) for d in detection.get("detectors") or ()]
        acc.detectors.update(fired)
        self.detectors.update(fired)
        if cluster := detection.get("cluster"):
            acc.clusters[str(cluster)] += 1

    def sections(self) -> dict[str, Any]:
        """The case JSON's tallies: totals, accounts, pools, volume, templates, decisions."""
        accounts = sorted(self.accounts.items(), key=lambda kv: (-kv[1].seen.requests, kv[0]))
        pools = {name: _rows(tallies) for name, tallies in self.pools.items()}
        for row in pools["networks"]:
            notes = self.pools["networks"][row["value"]].notes
            row["countries"] = _named(notes, "country:")
            row["asns"] = _named(notes, "asn:")
        for row in pools["asns"]:
            row["org"] = _top(self.pools["asns"][row["value"]].notes)
        for row in pools["clients"]:
            row["user_agents"] = dict(self.pools["clients"][row["value"]].notes.most_common(3))
        for row in pools["templates"]:
            row["simhashes"] = dict(self.pools["templates"][row["value"]].notes.most_common())
            row["example"] = self.examples.get(row["value"])
        totals = Counter[str]()
        for _, acc in accounts:
            totals.update(acc.actions)
        return {
            "totals": {
                "records": sum(acc.seen.requests for _, acc in accounts),
                "accounts": len(accounts),
                "entities": len(self.pools["entities"]),
                "allow": totals["allow"],
                "deny": totals["deny"],
                "restricted": totals["restricted"],
                "estimated_tokens": sum(acc.tokens for _, acc in accounts),
                "with_content": self.with_content,
            },
            "accounts": [_account_row(name, acc) for name, acc in accounts],
            **pools,
            "kyc_vs_ip": [
                {"kyc_country": kyc, "ip_country": ip, **tally.row("")}
                for (kyc, ip), tally in sorted(
                    self.kyc_vs_ip.items(), key=lambda kv: (-kv[1].requests, kv[0])
                )
            ],
            "volume": self._volume(),
            "detection": {
                "risks": _counts(self.risks),
                "detectors": _counts(self.detectors),
            },
            "decisions": [
                {"action": a, "reason": r, "rule": rule, "requests": n}
                for (a, r, rule), n in sorted(
                    self.decisions.items(), key=lambda kv: (-kv[1], kv[0])
                )
            ],
            "signals": _counts(self.signals),
        }

    def _volume(self) -> dict[str, Any]:
        """Requests per hour, or per day when the records span more than 72 hours."""
        if not self.hours:
            return {"bucket": "hour", "buckets": []}
        first, last = min(self.hours), max(self.hours)
        daily = (last - first + 1) * BUCKET_SECONDS[HOUR] > HOUR_WINDOW_LIMIT
        size = BUCKET_SECONDS[DAY if daily else HOUR]
        merged: dict[int, Counter[str]] = {}
        for hour, counts in self.hours.items():
            merged.setdefault(hour * BUCKET_SECONDS[HOUR] // size, Counter()).update(counts)
        start, end = min(merged), max(merged)
        return {
            "bucket": "day" if daily else "hour",
            "buckets": [
                {
                    "start": rfc3339(b * size),
                    **{k: merged.get(b, Counter())[k] for k in _VOLUME_KEYS},
                }
                for b in range(start, end + 1)
            ],
        }


_VOLUME_KEYS = ("requests", "allow", "deny", "restricted")


def _rows(tallies: dict[str, Tally]) -> list[dict[str, Any]]:
    ordered = sorted(tallies.items(), key=lambda kv: (-kv[1].requests, kv[0]))
    return [tally.row(value) for value, tally in ordered]


def _counts(counter: Counter[str]) -> dict[str, int]:
    return dict(sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])))


def _named(notes: Counter[str], prefix: str) -> dict[str, int]:
    return _counts(Counter({k[len(prefix) :]: n for k, n in notes.items() if k.startswith(prefix)}))


def _top(notes: Counter[str]) -> str:
    return max(sorted(notes), key=notes.__getitem__) if notes else ""


def _account_row(name: str, acc: _Account) -> dict[str, Any]:
    return {
        "account": name,
        "entity": acc.latest.get("entity", ""),
        "tier": acc.latest.get("tier", ""),
        "kyc": acc.latest.get("kyc", ""),
        "kyc_country": acc.latest.get("kyc_country", ""),
        "created": acc.latest.get("account_created", ""),
        "keys": _counts(acc.keys),
        "first_seen": acc.seen.first_at,
        "last_seen": acc.seen.last_at,
        "requests": acc.seen.requests,
        "allow": acc.actions["allow"],
        "deny": acc.actions["deny"],
        "restricted": acc.actions["restricted"],
        "estimated_tokens": acc.tokens,
        "reasons": _counts(acc.reasons),
        "countries": _counts(acc.countries),
        "networks": len(acc.networks),
        **{f"first_{risk}": acc.first_risk.get(risk, (0.0, ""))[1] for risk in RISKS},
        "max_score": round(acc.max_score, 4),
        "detectors": _counts(acc.detectors),
        "clusters": _counts(acc.clusters),
    }
