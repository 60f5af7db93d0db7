"""Run the off-path analysis over a simulated scenario, offline (a development and benchmark tool).

`distill-guard simulate` writes requests, not audit records. This module builds
the records the request path would write for them (identity from the accounts
file, network and location from the demo GeoIP database, detection features
from `authz.detect.features.extract`), feeds them to an Analyzer in time order,
analyses every `interval` seconds of simulated time, and scores the verdicts
against the scenario's labels:

    python -m authz.detect.harness run/ [--interval 900] [--settings FILE] [--json]

The records leave out what this module cannot know without the rules (the
action is always `allow`), which the analysis does not read anyway.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from ipaddress import ip_address
from pathlib import Path
from typing import Any

from authz.clientip import client_network
from authz.detect.analyzer import Analyzer, Observation, RecordError, parse_record
from authz.detect.features import extract
from authz.detect.settings import AnalysisSettings, load_settings
from authz.geo import MaxMindResolver, load_resolver
from authz.geobuild import demo_database
from authz.protocols import GeoResolver

_KEY_HEADERS = ("x-api-key", "authorization")


def rfc3339(ts: float) -> str:
    """Epoch seconds as the audit record writes them: UTC, milliseconds, `Z`."""
    when = datetime.fromtimestamp(ts, UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def load_accounts(path: Path) -> dict[str, dict[str, Any]]:
    """The accounts file as key digest -> account entry (simulate's files carry digests)."""
    by_digest: dict[str, dict[str, Any]] = {}
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                entry = json.loads(line)
                for key in entry.get("keys", []):
                    by_digest[key["sha256"]] = entry
    return by_digest


def _key(headers: Mapping[str, str]) -> str | None:
    for name in _KEY_HEADERS:
        value = headers.get(name)
        if value:
            return value.removeprefix("Bearer ").strip() if name == "authorization" else value
    return None


def demo_resolver() -> MaxMindResolver:
    """The bundled demo database as country and ASN database (what `--geoip demo` uses)."""
    path = demo_database()
    return load_resolver(path, path)


def traffic_records(
    lines: Iterable[str | bytes],
    accounts: Mapping[str, Mapping[str, Any]],
    resolver: GeoResolver,
) -> Iterator[dict[str, Any]]:
    """The audit record (as its JSON mapping) of every traffic line whose key is known."""
    for raw in lines:
        req = json.loads(raw)
        headers = {k.lower(): v for k, v in req.get("headers", {}).items()}
        key = _key(headers)
        entry = accounts.get(hashlib.sha256(key.encode()).hexdigest()) if key else None
        if entry is None:
            continue
        try:
            body = json.loads(req.get("body") or "{}")
        except ValueError:
            body = {}
        fields = body if isinstance(body, dict) else {}
        features = extract(fields, headers)
        ip = ip_address(req["source_ip"])
        where = resolver.locate(ip)
        detection: dict[str, Any] = {
            "template": features.template_id,
            "simhash": f"{features.simhash:016x}",
            "elicitation": features.elicitation.score,
            "client": features.client,
            "prompt_chars": features.prompt_chars,
        }
        record: dict[str, Any] = {
            "schema": 1,
            "time": rfc3339(float(req["ts"])),
            "account": entry["account"],
            "entity": entry["entity"],
            "tier": entry["tier"],
            "kyc": entry["kyc"],
            "client_ip": str(ip),
            "client_network": client_network(ip),
            "model": fields.get("model") if isinstance(fields.get("model"), str) else "",
            "action": "allow",
            "reason": "ok",
            "detection": {k: v for k, v in detection.items() if v},
        }
        if entry.get("created"):
            record["account_created"] = entry["created"]
        if where.country:
            record["country"] = where.country
        if where.asn:
            record["asn"] = where.asn
        yield {k: v for k, v in record.items() if v not in ("", None)}


def simulation_records(directory: Path) -> Iterator[dict[str, Any]]:
    """The audit records of a simulate output directory, in traffic order."""
    accounts = load_accounts(directory / "accounts.jsonl")
    resolver = demo_resolver()
    try:
        with (directory / "traffic.jsonl").open("rb") as f:
            yield from traffic_records(f, accounts, resolver)
    finally:
        resolver.close()


@dataclass
class RunResult:
    """What the analysis did over one scenario."""

    analyses: int = 0
    records: int = 0
    bad: Counter[str] = field(default_factory=Counter)
    first_action: dict[str, dict[str, float]] = field(
        default_factory=dict
    )  # account -> action -> ts
    max_member_score: dict[str, float] = field(default_factory=dict)
    cluster_scores: list[float] = field(default_factory=list)  # every cluster of every analysis
    cluster_max: dict[str, float] = field(default_factory=dict)  # cluster id -> highest score
    first_seen: dict[str, float] = field(default_factory=dict)  # account -> first record time


def run(
    observations: Iterable[Observation], settings: AnalysisSettings, interval: float
) -> tuple[RunResult, Analyzer]:
    """Feed observations in order and analyse every `interval` seconds of their time."""
    analyzer = Analyzer(settings)
    result = RunResult()
    due = -math.inf
    last = 0.0
    for obs in observations:
        if obs.ts >= due:
            if due > -math.inf:
                _analyze(analyzer, due, result)
            due = (obs.ts // interval + 1) * interval
        analyzer.add(obs)
        result.records += 1
        result.first_seen.setdefault(obs.account, obs.ts)
        last = obs.ts
    if result.records:
        _analyze(analyzer, last, result)
    return result, analyzer


def _analyze(analyzer: Analyzer, now: float, result: RunResult) -> None:
    result.analyses += 1
    for v in analyzer.analyze(now):
        seen = result.first_action.setdefault(v.account, {})
        seen.setdefault(v.action, now)
        if v.score > result.max_member_score.get(v.account, 0.0):
            result.max_member_score[v.account] = v.score
    for c in analyzer.clusters:
        result.cluster_scores.append(c.score)
        if c.score > result.cluster_max.get(c.cluster, -1.0):
            result.cluster_max[c.cluster] = c.score


def observations(records: Iterable[Mapping[str, Any]], bad: Counter[str]) -> Iterator[Observation]:
    """Records as observations; the unusable ones counted in `bad` by kind."""
    for record in records:
        try:
            yield parse_record(record)
        except RecordError as exc:
            bad[exc.kind] += 1


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by linear interpolation; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def score(result: RunResult, labels_path: Path) -> dict[str, Any]:
    """Accounts watched, restricted and denied per class and group, against the labels."""
    groups: dict[str, Counter[str]] = {}
    restricted_true = restricted_all = 0
    with labels_path.open(encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            label = json.loads(line)
            account = label["account"]
            if account not in result.first_seen:
                continue  # never sent anything
            name = label["group"] if label["class"] == "benign" else "campaign"
            c = groups.setdefault(name, Counter())
            c["active"] += 1
            actions = result.first_action.get(account, {})
            for action in ("watch", "restrict", "deny"):
                if action in actions:
                    c[action] += 1
            hard = "restrict" in actions or "deny" in actions
            if hard:
                c["restricted_or_denied"] += 1
                restricted_all += 1
                restricted_true += label["class"] == "campaign"
                start = result.first_seen[account]
                when = min(actions.get("restrict", math.inf), actions.get("deny", math.inf))
                c["_delay_sum"] += int(when - start)
    table: dict[str, Any] = {}
    for name, c in sorted(groups.items()):
        active = c["active"]
        hit = c["restricted_or_denied"]
        table[name] = {
            "active": active,
            "watched": c["watch"],
            "restricted": hit,
            "denied": c["deny"],
            "restricted_share": round(hit / active, 5) if active else None,
            "mean_hours_to_restriction": round(c["_delay_sum"] / hit / 3600, 2) if hit else None,
        }
    return {
        "groups": table,
        "precision": round(restricted_true / restricted_all, 5) if restricted_all else None,
        "analyses": result.analyses,
        "records": result.records,
        "bad_records": dict(result.bad),
        "cluster_scores": {
            "samples": len(result.cluster_scores),
            "p50": round(percentile(result.cluster_scores, 0.5), 4),
            "p99": round(percentile(result.cluster_scores, 0.99), 4),
            "p999": round(percentile(result.cluster_scores, 0.999), 4),
            "max": round(max(result.cluster_scores, default=0.0), 4),
        },
        "member_scores_max": round(max(result.max_member_score.values(), default=0.0), 4),
    }


def main(argv: list[str] | None = None) -> int:
    """Command line: analyse a simulate directory and print the scores against its labels."""
    p = argparse.ArgumentParser(prog="python -m authz.detect.harness", description=__doc__)
    p.add_argument("directory", type=Path, help="a `distill-guard simulate --out` directory")
    p.add_argument("--settings", type=Path, help="AnalysisSettings YAML (default: defaults)")
    p.add_argument(
        "--interval",
        type=float,
        default=900.0,
        help="seconds of simulated time between analyses (default 900; analyses are the cost)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ns = p.parse_args(argv)
    settings = load_settings(ns.settings) if ns.settings else AnalysisSettings()
    bad: Counter[str] = Counter()
    result, _ = run(observations(simulation_records(ns.directory), bad), settings, ns.interval)
    result.bad = bad
    report = score(result, ns.directory / "labels.jsonl")
    if ns.json:
        print(json.dumps(report, indent=2))
        return 0
    print(
        f"{'group':<12} {'active':>7} {'watched':>8} {'restricted':>11} {'share':>8} {'hours':>7}"
    )
    for name, row in report["groups"].items():
        share = row["restricted_share"]
        hours = row["mean_hours_to_restriction"]
        print(
            f"{name:<12} {row['active']:>7} {row['watched']:>8} {row['restricted']:>11} "
            f"{(share or 0) * 100:>7.2f}% {hours if hours is not None else '-':>7}"
        )
    print(f"precision of restricted accounts: {report['precision']}")
    print(
        f"cluster scores: {report['cluster_scores']}; highest member score: "
        f"{report['member_scores_max']}"
    )
    return 0


def synthetic_records(n: int, *, seed: int = 7, start: float = 1776816000.0) -> list[str]:
    """`n` audit records as canonical-looking JSON lines, for throughput benchmarks.

    A day of traffic: most accounts benign with their own prompts, a few
    hundred sharing near-duplicate templates; the shapes are plausible, the
    values random. Records carry the fields a real one does (chain, hashes,
    counters), so parsing costs what it costs in production.
    """
    rng = random.Random(seed)
    accounts = [f"a{rng.getrandbits(40):010x}" for _ in range(max(10, n // 25))]
    shared = [rng.getrandbits(64) for _ in range(20)]
    lines: list[str] = []
    for i in range(n):
        account = rng.choice(accounts)
        campaign = int(account[1:3], 16) < 16  # about one account in sixteen
        base = rng.choice(shared) if campaign else rng.getrandbits(64)
        simhash = base ^ (1 << rng.randrange(64)) if campaign else base
        ip = ".".join(
            str(rng.randrange(1, 224) if k == 0 else rng.randrange(256)) for k in range(4)
        )
        record: dict[str, Any] = {
            "account": account,
            "account_created": "2026-04-20T10:00:00Z",
            "action": "allow",
            "address_kind": "public",
            "asn": rng.randrange(1000, 60000),
            "chain": "guard-0",
            "client_ip": ip,
            "client_network": ip.rsplit(".", 1)[0] + ".0/24",
            "counters": [
                {"limit": "60", "name": "account-requests-1m", "remaining": "59"},
                {"limit": "5000", "name": "account-requests-1d", "remaining": "4990"},
            ],
            "country": "US",
            "decision_id": f"{rng.getrandbits(96):024x}",
            "detection": {
                "client": f"{rng.getrandbits(8):016x}",
                "elicitation": round(rng.random(), 4),
                "prompt_chars": rng.randrange(40, 4096),
                "risk": "none",
                "simhash": f"{simhash:016x}",
                "template": f"{(base if campaign else rng.getrandbits(64)):016x}",
            },
            "entity": "e" + account[1:],
            "hash": f"{rng.getrandbits(256):064x}",
            "key_id": "k_" + account[1:],
            "kyc": "unverified" if campaign else "verified",
            "matched_rules": ["tier:pro"],
            "method": "POST",
            "model": "frontier-3",
            "path": "/v1/messages",
            "prev_hash": f"{rng.getrandbits(256):064x}",
            "reason": "ok",
            "request_bytes": str(rng.randrange(200, 8000)),
            "request_id": f"req-{i}",
            "rule": "tier:pro",
            "rules_version": "sim-1@a4b3fa6df237",
            "schema": 1,
            "sequence": str(i + 1),
            "status": 200,
            "tier": "pro",
            "time": rfc3339(start + i * 86400.0 / n),
        }
        lines.append(json.dumps(record, sort_keys=True, separators=(",", ":")))
    return lines


if __name__ == "__main__":
    sys.exit(main())
