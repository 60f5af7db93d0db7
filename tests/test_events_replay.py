"""A simulated campaign through `simulate` and `replay`: one campaign event per campaign
cluster, each event in the audit file on its own intact chain, matching the decisions."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from authz.cli import main
from authz.rules import load_rules
from tests.fakes import ACME_KEY, DEMO_ACCOUNTS, DEMO_RULES
from tests.test_case import jurisdiction_incidents

EVENTS = "events:\n  campaign_cluster: {min_accounts: 5}\n  restricted_jurisdiction: {}\n"


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small two-day simulation replayed with an `events` section; its directory."""
    sim = tmp_path_factory.mktemp("events") / "sim"
    assert (
        main(
            [
                *("simulate", "--out", str(sim), "--seed", "3", "--benign-accounts", "60"),
                *("--campaign-accounts", "12", "--days", "2", "--pivot-day", "1"),
            ]
        )
        == 0
    )
    rules = sim / "rules-events.yaml"
    rules.write_text((sim / "rules.yaml").read_text() + EVENTS)
    assert (
        main(
            [
                *("replay", str(sim / "traffic.jsonl"), "--out", str(sim / "decisions.jsonl")),
                *("--rules", str(rules), "--accounts", str(sim / "accounts.jsonl")),
                *("--geoip", "demo", "--quiet", "--summary", str(sim / "summary.json")),
                *("--audit-out", str(sim / "audit.jsonl")),
                *("--events-out", str(sim / "events.jsonl")),
            ]
        )
        == 0
    )
    return sim


def test_one_campaign_event_per_campaign(replayed: Path) -> None:
    """Each simulated campaign is reported exactly once, naming only its own accounts."""
    scenario = json.loads((replayed / "scenario.json").read_text())
    labels = {r["account"]: r for r in _lines(replayed / "labels.jsonl")}
    campaigns = [e for e in _lines(replayed / "events.jsonl") if e["kind"] == "campaign_cluster"]
    assert len(campaigns) == len(scenario["campaigns"]) == 1
    [event] = campaigns
    assert {labels[a]["class"] for a in event["accounts"]} == {"campaign"}
    assert event["account_count"] >= 5 and event["cluster"]
    # The cluster id is the one the decisions of its accounts carry once restricted.
    clusters = {
        r["signals"].get("cluster")
        for r in _lines(replayed / "decisions.jsonl")
        if r["account"] in event["accounts"]
    }
    assert event["cluster"] in clusters


def test_events_are_records_of_their_own_intact_chain(
    replayed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The audit file holds every event once, on chain events-replay, and verifies intact."""
    records = _lines(replayed / "audit.jsonl")
    in_audit = [r["event"] for r in records if "event" in r]
    assert in_audit == _lines(replayed / "events.jsonl")
    assert {r["chain"] for r in records if "event" in r} == {"events-replay"}
    assert [int(r["sequence"]) for r in records if "event" in r] == list(
        range(1, len(in_audit) + 1)
    )
    summary = json.loads((replayed / "summary.json").read_text())
    assert summary["events"] == dict(Counter(e["kind"] for e in in_audit))
    capsys.readouterr()
    assert main(["audit", "verify", "--file", str(replayed / "audit.jsonl")]) == 0
    out = capsys.readouterr().out
    assert "every chain intact" in out and "chain events-replay: sequence 1-" in out


def test_jurisdiction_evidence_matches_the_audit_trail(replayed: Path) -> None:
    """Every decision a jurisdiction event cites is in the trail, denied by that rule there,
    and there are as many events as incidents counted from the trail's denials."""
    decisions = {
        r["decision_id"]: r for r in _lines(replayed / "audit.jsonl") if "decision_id" in r
    }
    events = [
        e for e in _lines(replayed / "events.jsonl") if e["kind"] == "restricted_jurisdiction"
    ]
    assert events
    for event in events:
        for decision_id in event["evidence"]:
            cited = decisions[decision_id]
            assert cited["rule"] == "jurisdiction:" + event["rule"]
            assert cited["action"] == "deny"
            assert event["incident"].endswith(":" + cited["client_network"])
    # One incident per rule and network at a time: no two events of one key overlap.
    by_key: dict[str, list[tuple[datetime, datetime]]] = {}
    for e in events:
        span = (datetime.fromisoformat(e["first_seen"]), datetime.fromisoformat(e["last_seen"]))
        by_key.setdefault(e["incident"], []).append(span)
    for spans in by_key.values():
        spans.sort()
        assert all(a[1] < b[0] for a, b in itertools.pairwise(spans))
    # As many events as incidents counted from the trail (here, denials under an hour
    # apart from one network are one incident).
    section = load_rules(replayed / "rules-events.yaml").events
    assert section is not None
    trail = _lines(replayed / "audit.jsonl")
    assert len(events) == jurisdiction_incidents(trail, section.restricted_jurisdiction)


def test_export_skips_event_records(replayed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`audit export` counts only decision records; event records are neither exported nor bad."""
    decisions = sum(1 for r in _lines(replayed / "audit.jsonl") if "event" not in r)
    capsys.readouterr()
    status = main(
        [
            *("audit", "export", str(replayed / "audit.jsonl")),
            *("--out", str(replayed / "exported.jsonl")),
            *("--accounts-out", str(replayed / "exported-accounts.jsonl")),
        ]
    )
    said = capsys.readouterr()
    assert status == 0
    assert f"exported 0 of {decisions:,} records" in said.out + said.err
    assert "not an audit record" not in said.out + said.err


def test_events_out_without_an_events_section_warns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--events-out` with rules that report nothing says so instead of leaving a silent file."""
    traffic = tmp_path / "traffic.jsonl"
    line = {
        "ts": 1_790_000_000.0,
        "source_ip": "73.1.2.3",
        "method": "POST",
        "path": "/v1/messages",
        "headers": {"x-api-key": ACME_KEY, "content-type": "application/json"},
        "body": '{"model": "frontier-9"}',
    }
    traffic.write_text(json.dumps(line) + "\n")
    events = tmp_path / "events.jsonl"
    status = main(
        [
            *("replay", str(traffic), "--out", str(tmp_path / "decisions.jsonl"), "--quiet"),
            *("--rules", str(DEMO_RULES), "--accounts", str(DEMO_ACCOUNTS)),
            *("--events-out", str(events)),
        ]
    )
    assert status == 0
    assert events.read_text() == ""
    assert (
        f"distill-guard replay: warning: {events} stays empty: events need an `events` section"
        in capsys.readouterr().err
    )


# --- a sign-up burst, end to end --------------------------------------------------------

T0 = 1_790_000_000.0  # 2026-09-21T14:13:20Z
BURST_NET = "79.192.7"  # a /24 of the demo GeoIP data (DE, AS3320)


def _account(name: str, created: float, kyc: str = "unverified") -> dict[str, Any]:
    """A line of the accounts file: its key's secret is `dg_test_<name>` padded."""
    tier = "free" if kyc == "unverified" else "pro"
    return {
        "account": name,
        "entity": name,
        "tier": tier,
        "kyc": kyc,
        "country": "DE",
        "created": datetime.fromtimestamp(created, UTC).isoformat(),
        "keys": [{"id": f"k_{name}", "secret": f"dg_test_{name}".ljust(28, "0")}],
    }


def _request(ts: float, name: str, ip: str) -> dict[str, Any]:
    """One traffic line: the account's key, from `ip`, asking a small model."""
    body = {"model": "small-1", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}
    return {
        "ts": ts,
        "source_ip": ip,
        "method": "POST",
        "path": "/v1/messages",
        "headers": {"x-api-key": f"dg_test_{name}".ljust(28, "0"), "user-agent": "sdk/1.0"},
        "body": json.dumps(body),
    }


@pytest.fixture(scope="module")
def burst_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Traffic and accounts built by hand: six unverified accounts opened within half an
    hour and first seen from one /24 (the burst); six more opened as close together but
    each first seen from a network of its own (the control); one verified account calling
    from an embargoed country. Every account sends three requests 15 minutes apart."""
    root = tmp_path_factory.mktemp("burst")
    accounts, traffic = [], []
    groups = {
        "burst": [f"{BURST_NET}.{10 + i}" for i in range(6)],
        "spread": [f"79.192.{20 + i}.10" for i in range(6)],
    }
    for g, (group, ips) in enumerate(groups.items()):
        for i, ip in enumerate(ips):
            name = f"{group}{i}"
            accounts.append(_account(name, T0 - 3600 + i * 300))
            traffic += [_request(T0 + g * 30 + i * 60 + k * 900, name, ip) for k in range(3)]
    accounts.append(_account("exile", T0 - 86400, kyc="verified"))
    traffic.append(_request(T0 + 100, "exile", "2.176.1.1"))
    (root / "accounts.jsonl").write_text("".join(json.dumps(a) + "\n" for a in accounts))
    traffic.sort(key=lambda line: line["ts"])
    (root / "traffic.jsonl").write_text("".join(json.dumps(t) + "\n" for t in traffic))
    return root


@pytest.mark.parametrize("detection", [True, False])
def test_a_signup_burst_from_one_network_is_one_event(burst_files: Path, detection: bool) -> None:
    """A replay reports exactly one unverified_signup_burst, naming the accounts of the one
    /24 and none of the control group spread over six networks, and the one jurisdiction
    denial; with `detection.enabled: false` too (neither kind needs the analysis)."""
    rules = yaml.safe_load(DEMO_RULES.read_text())
    rules["detection"]["enabled"] = detection
    rules["events"] = {
        "campaign_cluster": {"enabled": False},
        "unverified_signup_burst": {"min_accounts": 5, "window": "1h"},
    }
    out = burst_files / f"detection-{detection}"
    out.mkdir()
    (out / "rules.yaml").write_text(yaml.safe_dump(rules))
    status = main(
        [
            *("replay", str(burst_files / "traffic.jsonl"), "--quiet"),
            *("--rules", str(out / "rules.yaml")),
            *("--accounts", str(burst_files / "accounts.jsonl")),
            *("--geoip", "demo", "--out", str(out / "decisions.jsonl")),
            *("--events-out", str(out / "events.jsonl")),
        ]
    )
    assert status == 0
    events = _lines(out / "events.jsonl")
    assert Counter(e["kind"] for e in events) == {
        "unverified_signup_burst": 1,
        "restricted_jurisdiction": 1,
    }
    [burst] = [e for e in events if e["kind"] == "unverified_signup_burst"]
    assert burst["incident"] == f"unverified_signup_burst:network:{BURST_NET}.0/24"
    # Reported at the first analysis that saw five of them; the sixth joins the same
    # incident later and is not a second event.
    assert burst["accounts"] == [f"burst{i}" for i in range(5)]
    assert burst["networks"] == [f"{BURST_NET}.0/24"]
    [denied] = [e for e in events if e["kind"] == "restricted_jurisdiction"]
    assert denied["incident"] == "restricted_jurisdiction:embargoed-ip:2.176.1.0/24"
    assert denied["accounts"] == ["exile"]
