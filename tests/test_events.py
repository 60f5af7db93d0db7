"""Event detection on hand-made records: each kind at and just below its threshold, once
per incident, a new incident after the cooldown, deterministic ids, and the rules section."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest

from authz.audit.record import is_event
from authz.audit.tail import row
from authz.detect.analyzer import Analyzer, ClusterReport
from authz.detect.harness import rfc3339 as iso
from authz.detect.settings import AnalysisSettings
from authz.detect.verdicts import Verdict
from authz.errors import ConfigError
from authz.events.detector import EventDetector, Sighting, sighting_of
from authz.events.event import Event, event_id
from authz.events.rules import KINDS, EventRules
from authz.rules import json_schema, parse_rules
from tests.test_detect_analyzer import DAY, START, campaign, nat_users, record

HOUR = 3600.0


def detector(**sections: Any) -> EventDetector:
    """A detector for the `events` section given (each kind's defaults otherwise)."""
    return EventDetector(
        EventRules.model_validate(sections), AnalysisSettings(), rules_version="t@1"
    )


def denial(account: str, ts: float, rule: str = "embargoed-ip", **fields: Any) -> dict[str, Any]:
    """The record of a request a jurisdiction rule denied."""
    out = record(account, ts, **fields)
    out.update(
        action="deny",
        reason="country_denied",
        rule=f"jurisdiction:{rule}",
        decision_id=f"d-{account}-{int(ts)}",
    )
    return out


def signup(account: str, ts: float, created: float, **fields: Any) -> dict[str, Any]:
    """An unverified account's first request, `created` being its sign-up time."""
    fields.setdefault("network", "198.51.100.0/24")
    return record(account, ts, kyc="unverified", created=iso(created), **fields)


def feed(d: EventDetector, records: list[dict[str, Any]]) -> None:
    """Note every record."""
    for r in records:
        d.observe(r)


def analyse(d: EventDetector, now: float) -> list[Event]:
    """One analysis round with no clusters."""
    return d.after_analysis(now, [], [])


# --- restricted_jurisdiction ------------------------------------------------------------


def test_denials_from_one_network_are_one_incident() -> None:
    """Three denials by one rule from one /24 within the cooldown make one event with all three."""
    d = detector()
    feed(d, [denial(f"acct{i}", START + 60 * i, network="203.0.113.0/24") for i in range(3)])
    events = analyse(d, START + 300)
    assert len(events) == 1
    e = events[0]
    assert e.kind == "restricted_jurisdiction" and e.severity == "medium"
    assert e.incident == "restricted_jurisdiction:embargoed-ip:203.0.113.0/24"
    assert (e.requests, e.accounts, e.rule) == (3, ("acct0", "acct1", "acct2"), "embargoed-ip")
    assert e.evidence == (
        f"d-acct0-{int(START)}",
        f"d-acct1-{int(START + 60)}",
        f"d-acct2-{int(START + 120)}",
    )
    assert e.rules_version == "t@1"


def test_min_requests_just_below_and_at() -> None:
    """With min_requests 3, two denials report nothing; the third reports the incident."""
    d = detector(restricted_jurisdiction={"min_requests": 3})
    feed(d, [denial("a", START), denial("a", START + 10)])
    assert analyse(d, START + 60) == []
    feed(d, [denial("a", START + 70)])
    [event] = analyse(d, START + 120)
    assert event.requests == 3 and event.first_seen == START


def test_only_listed_rules_are_reportable() -> None:
    """A denial by a rule the section does not list is not reported; a listed one is."""
    d = detector(restricted_jurisdiction={"rules": ["embargoed-kyc"]})
    feed(d, [denial("a", START, rule="embargoed-ip")])
    assert analyse(d, START + 60) == []
    feed(d, [denial("a", START + 61, rule="embargoed-kyc")])
    assert [e.rule for e in analyse(d, START + 120)] == ["embargoed-kyc"]


def test_per_account_incidents() -> None:
    """With `per: account`, two accounts on one network are two incidents."""
    d = detector(restricted_jurisdiction={"per": "account"})
    feed(d, [denial("a", START), denial("b", START + 1)])
    events = analyse(d, START + 60)
    assert [e.incident for e in events] == [
        "restricted_jurisdiction:embargoed-ip:a",
        "restricted_jurisdiction:embargoed-ip:b",
    ]


def test_an_incident_that_goes_on_is_reported_once() -> None:
    """A denial every 10 minutes for 5 hours (cooldown 1h), analysed each minute: one event."""
    d = detector()
    reported = []
    for minute in range(300):
        now = START + 60 * minute
        if minute % 10 == 0:
            d.observe(denial("a", now))
        reported += analyse(d, now + 30)
    assert len(reported) == 1
    assert reported[0].first_seen == START


def test_a_new_incident_after_the_cooldown() -> None:
    """A denial after more than the cooldown of quiet is a new incident, with a new id."""
    d = detector(restricted_jurisdiction={"cooldown": "1h"})
    d.observe(denial("a", START))
    [first] = analyse(d, START + 60)
    d.observe(denial("a", START + HOUR))  # at the cooldown: still the same incident
    assert analyse(d, START + HOUR + 60) == []
    d.observe(denial("a", START + 2 * HOUR + 1))  # an hour and a second after the last
    [second] = analyse(d, START + 2 * HOUR + 60)
    assert second.incident == first.incident and second.id != first.id
    assert second.first_seen == START + 2 * HOUR + 1


def test_incidents_closed_long_before_the_analysis_are_history() -> None:
    """A worker catching up on a day of log reports what is still open, not what closed."""
    d = detector(restricted_jurisdiction={"cooldown": "1h"})
    d.observe(denial("old", START, network="192.0.2.0/24"))
    d.observe(denial("new", START + 20 * HOUR, network="203.0.113.0/24"))
    events = analyse(d, START + 20 * HOUR + 60)
    assert [e.accounts for e in events] == [("new",)]


def test_dry_run_would_deny_counts_and_other_denials_do_not() -> None:
    """A dry-run allow that a jurisdiction rule would have denied counts; a rate limit does not."""
    would = record("a", START)
    would.update(action="allow", would_deny="country_denied", rule="jurisdiction:embargoed-ip")
    limited = record("b", START)
    limited.update(action="deny", reason="rate_limited", rule="tier:free:limits:requests")
    assert sighting_of(would).denied_by == "embargoed-ip"
    assert sighting_of(limited).denied_by == ""
    d = detector()
    feed(d, [would, limited])
    assert [e.accounts for e in analyse(d, START + 60)] == [("a",)]


def test_disabled_kind_reports_nothing() -> None:
    """`enabled: false` turns a kind off."""
    d = detector(restricted_jurisdiction={"enabled": False})
    feed(d, [denial("a", START)])
    assert analyse(d, START + 60) == []


# --- unverified_signup_burst ----------------------------------------------------------


def burst(n: int, *, spread: float = 60.0, **fields: Any) -> list[dict[str, Any]]:
    """`n` unverified accounts opened `spread` seconds apart, each seen soon after."""
    return [
        signup(f"new{i:02d}", START + i * spread + 5, START + i * spread, **fields)
        for i in range(n)
    ]


def test_signup_burst_just_below_and_at() -> None:
    """Four new unverified accounts from one /24 within the window report nothing; five do."""
    d = detector(unverified_signup_burst={"min_accounts": 5, "window": "1h"})
    feed(d, burst(4))
    assert analyse(d, START + 600) == []
    d.observe(signup("late", START + 700, START + 650, network="198.51.100.0/24"))
    [event] = analyse(d, START + 900)
    assert event.kind == "unverified_signup_burst"
    assert event.incident == "unverified_signup_burst:network:198.51.100.0/24"
    assert event.accounts == ("late", "new00", "new01", "new02", "new03")
    assert event.networks == ("198.51.100.0/24",)


def test_signups_spread_wider_than_the_window_are_no_burst() -> None:
    """Five accounts opened 20 minutes apart are not five within 1h."""
    d = detector(unverified_signup_burst={"min_accounts": 5, "window": "1h"})
    feed(d, burst(5, spread=20 * 60))
    assert analyse(d, START + 2 * HOUR) == []


def test_verified_accounts_do_not_count() -> None:
    """Verified accounts opened together on one network are no unverified burst."""
    d = detector(unverified_signup_burst={"min_accounts": 3})
    feed(
        d,
        [
            record(f"v{i}", START + i, created=iso(START), network="198.51.100.0/24")
            for i in range(5)
        ],
    )
    assert analyse(d, START + 60) == []


def test_signup_burst_by_asn() -> None:
    """With `by: [asn]`, accounts on different /24s of one AS make a burst of that AS."""
    d = detector(unverified_signup_burst={"min_accounts": 3, "by": ["asn"]})
    feed(
        d,
        [signup(f"n{i}", START + i, START, network=f"10.0.{i}.0/24", asn=64501) for i in range(3)],
    )
    assert [e.incident for e in analyse(d, START + 60)] == ["unverified_signup_burst:asn:64501"]


def test_a_burst_that_grows_is_one_incident() -> None:
    """More accounts joining an open burst do not report it again."""
    d = detector(unverified_signup_burst={"min_accounts": 3})
    feed(d, burst(3))
    assert len(analyse(d, START + 600)) == 1
    feed(d, [signup("more", START + 700, START + 650)])
    assert analyse(d, START + 900) == []


# --- campaign_cluster ---------------------------------------------------------------------


def cluster(cid: str, score: float, accounts: list[str]) -> tuple[ClusterReport, list[Verdict]]:
    """A cluster report and its members' verdicts, as one analysis gives them."""
    report = ClusterReport(
        cid, len(accounts), len(accounts), score, {}, {}, ("elicitation",), 3, "restrict"
    )
    verdicts = [Verdict(a, "restrict", cid, score, ("elicitation",), START + DAY) for a in accounts]
    return report, verdicts


def test_cluster_score_just_below_and_at() -> None:
    """A cluster is reportable from min_score on, not below it."""
    members = [f"m{i}" for i in range(6)]
    d = detector(campaign_cluster={"min_score": 0.6})
    report, verdicts = cluster("c1", 0.5999, members)
    assert d.after_analysis(START, [report], verdicts) == []
    report, verdicts = cluster("c1", 0.6, members)
    [event] = d.after_analysis(START + 60, [report], verdicts)
    assert (event.cluster, event.score, event.accounts) == ("c1", 0.6, tuple(members))
    assert event.severity == "high" and event.reasons == ("elicitation",)


def test_cluster_needs_min_accounts() -> None:
    """A cluster smaller than min_accounts is not reported, whatever its score."""
    d = detector(campaign_cluster={"min_accounts": 5})
    report, verdicts = cluster("c1", 0.9, ["a", "b", "c", "d"])
    assert d.after_analysis(START, [report], verdicts) == []


def test_default_min_score_is_the_restrict_threshold() -> None:
    """Without min_score the analysis' restrict threshold decides."""
    d = detector()
    assert d.min_score == AnalysisSettings().thresholds.restrict


def test_a_renamed_cluster_of_the_same_accounts_is_the_same_incident() -> None:
    """A cluster under a new id, its accounts mostly an open incident's, is not reported again."""
    members = [f"m{i}" for i in range(6)]
    d = detector()
    assert len(d.after_analysis(START, *_one(cluster("c1", 0.8, members)))) == 1
    assert d.after_analysis(START + 60, *_one(cluster("c9", 0.8, [*members[:5], "x1"]))) == []
    # A cluster of other accounts is an incident of its own.
    assert (
        len(
            d.after_analysis(START + 120, *_one(cluster("c2", 0.8, ["y1", "y2", "y3", "y4", "y5"])))
        )
        == 1
    )


def test_a_cluster_that_scores_lower_for_a_while_stays_one_incident() -> None:
    """Still found (below the threshold) for longer than the cooldown: no second event; once
    gone for longer than the cooldown, crossing again is a new incident."""
    members = [f"m{i}" for i in range(6)]
    d = detector(campaign_cluster={"cooldown": "6h"})
    assert len(d.after_analysis(START, *_one(cluster("c1", 0.8, members)))) == 1
    for hour in range(1, 13):  # twelve hours below the threshold, still a cluster
        now = START + hour * HOUR
        assert d.after_analysis(now, *_one(cluster("c1", 0.3, members))) == []
    assert d.after_analysis(START + 13 * HOUR, *_one(cluster("c1", 0.8, members))) == []
    assert d.after_analysis(START + 20 * HOUR, [], []) == []  # gone for seven hours
    [again] = d.after_analysis(START + 20 * HOUR + 60, *_one(cluster("c1", 0.8, members)))
    assert again.first_seen == START + 20 * HOUR + 60


def _one(pair: tuple[ClusterReport, list[Verdict]]) -> tuple[list[ClusterReport], list[Verdict]]:
    return [pair[0]], pair[1]


def test_analyzer_campaign_is_one_event_over_a_day_of_analyses() -> None:
    """The hand-made campaign, analysed hourly for a day beside NAT users: one campaign event."""
    records = sorted(campaign(START) + nat_users(START), key=lambda r: r["time"])
    analyzer = Analyzer(AnalysisSettings())
    d = detector()
    events: list[Event] = []
    i = 0
    for hour in range(1, 25):
        now = START + hour * HOUR
        while i < len(records) and datetime.fromisoformat(records[i]["time"]).timestamp() <= now:
            analyzer.observe(records[i])
            d.observe(records[i])
            i += 1
        verdicts = analyzer.analyze(now)
        events += d.after_analysis(now, analyzer.clusters, verdicts)
    campaigns = [e for e in events if e.kind == "campaign_cluster"]
    assert len(campaigns) == 1
    assert set(campaigns[0].accounts) <= {f"camp{i:03d}" for i in range(30)}
    assert len(campaigns[0].accounts) >= 5


# --- the event value ----------------------------------------------------------------------


def test_ids_and_json_are_deterministic() -> None:
    """Two detectors fed the same records give byte-identical event JSON."""
    outputs = []
    for _ in range(2):
        d = detector()
        feed(d, [denial("a", START + 0.25), denial("b", START + 3)])
        outputs.append([json.dumps(e.to_json(), sort_keys=True) for e in analyse(d, START + 60)])
    assert outputs[0] == outputs[1] and len(outputs[0]) == 1
    assert json.loads(outputs[0][0])["id"] == event_id(
        "restricted_jurisdiction:embargoed-ip:73.12.4.0/24", START + 0.25
    )


def test_event_record_is_recognised_and_shown_by_tail() -> None:
    """An event's audit record carries `event`, no decision fields; `audit tail` shows its kind."""
    d = detector()
    feed(d, [denial("a", START)])
    [event] = analyse(d, START + 60)
    rec = event.record(START + 60)
    assert is_event(rec) and not is_event(record("a", START))
    assert set(rec) == {"schema", "time", "event"}
    line = row(rec)
    assert " event " in line and "restricted_jurisdiction" in line and event.incident in line


def test_sighting_compact_round_trip_and_bad_rows() -> None:
    """A Sighting survives its compact form; anything else is a RecordError, not a crash."""
    from authz.detect.analyzer import RecordError

    s = Sighting("d1", "embargoed-ip", "IR")
    assert Sighting.from_compact(s.to_compact()) == s
    for bad in (None, ["a", "b"], ["a", "b", 3], "abc"):
        with pytest.raises(RecordError):
            Sighting.from_compact(bad)


# --- the rules section ----------------------------------------------------------------------

_BASE = "tiers:\n  free: {}\n"


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            "events:\n  campaign_cluster:\n    cooldown: 6x\n",
            "rules.yaml:6: events.campaign_cluster.cooldown: '6x' is not a duration: a whole "
            "number and a unit s, m, h or d (e.g. 90s, 10m, 6h), at most 31d",
        ),
        (
            "events:\n  restricted_jurisdiction:\n    per: country\n",
            "rules.yaml:6: events.restricted_jurisdiction.per: Input should be 'network' or "
            "'account' (got 'country')",
        ),
        (
            "events:\n  unverified_signup_burst:\n    min_accounts: 1\n",
            "rules.yaml:6: events.unverified_signup_burst.min_accounts: Input should be greater "
            "than or equal to 2 (got 1)",
        ),
        ("events:\n  campaign:\n    enabled: true\n", "rules.yaml:5: events.campaign: unknown key"),
        (
            "events:\n  campaign_cluster: {severity: urgent}\n",
            "rules.yaml:5: events.campaign_cluster.severity: Input should be 'info', 'low', "
            "'medium', 'high' or 'critical' (got 'urgent')",
        ),
        (
            "events:\n  restricted_jurisdiction: {rules: [embargoed-ip]}\n",
            "rules.yaml:5: events.restricted_jurisdiction.rules.0: 'embargoed-ip' is not a "
            "jurisdiction rule id (jurisdiction.rules: none defined)",
        ),
        (
            "jurisdiction:\n  rules: [{id: local, action: allow, address: [loopback]}]\n"
            "events:\n  restricted_jurisdiction:\n    rules: [local]\n",
            "rules.yaml:8: events.restricted_jurisdiction.rules.0: jurisdiction rule 'local' "
            "never denies (its action is allow)",
        ),
    ],
)
def test_bad_events_section_names_the_path(section: str, message: str) -> None:
    """One bad value in `events` is refused with the file, line, path and problem."""
    with pytest.raises(ConfigError) as err:
        parse_rules((_BASE + "version: v\n" + section).encode(), source="rules.yaml")
    assert str(err.value) == message


def test_events_section_is_optional_and_compiled() -> None:
    """Without `events` nothing is reportable; with `events: {}` every kind is on by default."""
    assert parse_rules(_BASE.encode(), source="r").events is None
    rules = parse_rules((_BASE + "events: {}\n").encode(), source="r").events
    assert rules is not None
    assert all(getattr(rules, kind).enabled for kind in KINDS)
    assert rules.restricted_jurisdiction.cooldown == "1h"


def test_every_events_setting_is_described_in_the_json_schema() -> None:
    """Editors show a description for every key of the `events` section."""
    schema: dict[str, Any] = json.loads(json_schema())
    models = [schema["$defs"][name] for name in schema["$defs"] if name in _EVENT_MODELS]
    assert len(models) == len(_EVENT_MODELS)
    missing = [
        f"{m.get('title')}.{name}"
        for m in models
        for name, prop in m.get("properties", {}).items()
        if not prop.get("description")
    ]
    assert missing == []
    assert schema["properties"]["events"]["description"].startswith("Reportable events")


_EVENT_MODELS = {"EventRules", "CampaignCluster", "RestrictedJurisdiction", "UnverifiedSignupBurst"}
