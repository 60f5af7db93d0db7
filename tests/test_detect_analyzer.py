"""The off-path analysis on small hand-made populations whose answers are known."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from authz.cli import main
from authz.detect.analyzer import (
    Analyzer,
    Observation,
    RecordError,
    TemplateIndex,
    observe_all,
    parse_record,
)
from authz.detect.harness import observations, rfc3339, score, simulation_records
from authz.detect.harness import run as harness_run
from authz.detect.keys import template_verdict_keys
from authz.detect.settings import AnalysisSettings, Component, Thresholds
from authz.detect.verdicts import MemoryVerdictSink, Verdict, verdict_key

DAY = 86400.0
START = 1_777_000_000.0  # a Friday, 03:06 UTC
LONG_AGO = "2023-01-10T09:00:00Z"
# Three near-duplicate scaffolds of one campaign template (at most 3 bits apart).
CAMPAIGN_HASH = 0x9F3A5C7E12345678
VARIANTS = (CAMPAIGN_HASH, CAMPAIGN_HASH ^ 1 << 5, CAMPAIGN_HASH ^ (1 << 40 | 1 << 41))
_RNG = random.Random(0)  # default template ids and hashes: all different, and reproducible


def record(account: str, ts: float, **fields: Any) -> dict[str, Any]:
    """An audit record as the request path writes it (proto3 JSON: defaults left out)."""
    detection = {
        "template": fields.pop("template", f"{_RNG.getrandbits(64):016x}"),
        "simhash": f"{fields.pop('simhash', _RNG.getrandbits(64)):016x}",
        "elicitation": fields.pop("elicitation", 0.1),
        "client": fields.pop("client", "0a1b2c3d4e5f6071"),
        "prompt_chars": fields.pop("prompt_chars", 800),
        "risk": "none",
    }
    out = {
        "schema": 1,
        "time": rfc3339(ts),
        "account": account,
        "entity": fields.pop("entity", "e-" + account),
        "tier": fields.pop("tier", "pro"),
        "kyc": fields.pop("kyc", "verified"),
        "account_created": fields.pop("created", LONG_AGO),
        "client_network": fields.pop("network", "73.12.4.0/24"),
        "asn": fields.pop("asn", 7922),
        "country": "US",
        "model": fields.pop("model", "frontier-3"),
        "action": "allow",
        "reason": "ok",
        "detection": detection,
    }
    assert not fields, f"unknown fields {fields}"
    return out


def campaign(
    start: float, *, accounts: int = 30, per_day: int = 25, days: float = 1.0, seed: int = 1
) -> list[dict[str, Any]]:
    """Throwaway accounts opened in one burst, on near-duplicate templates, through a proxy pool.

    Round-robin, load-balancer timing; every request from one of 60 networks in 30 ASes.
    """
    rng = random.Random(seed)
    names = [f"camp{i:03d}" for i in range(accounts)]
    pool = [
        (f"{20 + i}.{rng.randrange(256)}.{rng.randrange(256)}.0/24", 64500 + i % 30)
        for i in range(60)
    ]
    gap = DAY / per_day
    out = []
    for k in range(int(days * per_day)):
        for i, name in enumerate(names):
            ts = start + k * gap + i * gap / accounts + rng.uniform(-20, 20)
            variant = VARIANTS[(i + k) % 3]
            network, asn = rng.choice(pool)
            out.append(
                record(
                    name,
                    ts,
                    entity="e-" + name,
                    tier="free",
                    kyc="unverified",
                    created=rfc3339(start - DAY + 60 * i),
                    network=network,
                    asn=asn,
                    client="c0ffee0000000001",
                    template=f"{variant:016x}",
                    simhash=variant,
                    elicitation=0.7,
                )
            )
    return sorted(out, key=lambda r: r["time"])


def ci_job(start: float, *, days: float = 1.0) -> list[dict[str, Any]]:
    """Three accounts of one verified enterprise: two templated jobs every 15 minutes, 07-19 h."""
    out = []
    for day in range(int(days)):
        for slot in range(48):
            for i in range(3):
                ts = start + day * DAY + 7 * 3600 + slot * 900 + i * 40 + 3
                job = (slot + i) % 2
                out.append(
                    record(
                        f"ci{i}",
                        ts,
                        entity="acme",
                        tier="enterprise",
                        network="34.120.8.0/24",
                        asn=396982,
                        client="5e1f00d5e1f00d01",
                        template=f"{0xC1C1C1C1 + job:016x}",
                        simhash=0xC1C1C1C1C1C1 + (job << 20),
                        elicitation=0.15,
                    )
                )
    return out


def nat_users(
    start: float, *, users: int = 40, days: float = 1.0, seed: int = 2
) -> list[dict[str, Any]]:
    """Forty people behind one corporate NAT with one SDK, each writing their own prompts."""
    rng = random.Random(seed)
    out = []
    for i in range(users):
        for _ in range(int(8 * days)):
            out.append(
                record(
                    f"nat{i:02d}",
                    start + rng.uniform(0, days * DAY),
                    entity=f"nat-person-{i}",  # separate entities: nothing to discount
                    network="80.187.14.0/24",
                    asn=3320,
                    client="0a1b2c3d4e5f6071",
                    template=f"{rng.getrandbits(64):016x}",
                    simhash=rng.getrandbits(64),
                    elicitation=rng.uniform(0, 0.3),
                )
            )
    return out


def researcher(start: float, *, days: float = 1.0, seed: int = 3) -> list[dict[str, Any]]:
    """One researcher asking for step-by-step reasoning on diverse problems."""
    rng = random.Random(seed)
    return [
        record(
            "researcher",
            start + rng.uniform(0, days * DAY),
            network="131.111.5.0/24",
            asn=786,
            template=f"{rng.getrandbits(64):016x}",
            simhash=rng.getrandbits(64),
            elicitation=0.95,
        )
        for _ in range(int(30 * days))
    ]


def run(
    records: list[dict[str, Any]], now: float, settings: AnalysisSettings | None = None
) -> tuple[Analyzer, list[Verdict]]:
    """An analyzer fed `records` in time order, and its verdicts at `now`."""
    analyzer = Analyzer(settings)
    assert not observe_all(analyzer, sorted(records, key=lambda r: r["time"]))
    return analyzer, analyzer.analyze(now)


def network_users(records: list[dict[str, Any]]) -> dict[str, int]:
    """How many accounts used each network."""
    users: dict[str, set[str]] = {}
    for r in records:
        users.setdefault(r["client_network"], set()).add(r["account"])
    return {n: len(a) for n, a in users.items()}


def by_action(verdicts: list[Verdict]) -> Counter[str]:
    """How many verdicts of each action."""
    return Counter(v.action for v in verdicts)


# --- the known answers -------------------------------------------------------------


def test_campaign_is_one_cluster_and_restricted() -> None:
    """Thirty accounts on near-duplicate templates from many /24s: one cluster, all restricted."""
    analyzer, verdicts = run(campaign(START), START + DAY)
    assert len(analyzer.clusters) == 1
    (cluster,) = analyzer.clusters
    assert cluster.accounts == 30
    assert {v.account for v in verdicts} == {f"camp{i:03d}" for i in range(30)}
    assert all(v.action in {"restrict", "deny"} for v in verdicts)
    assert {v.cluster for v in verdicts} == {cluster.cluster}
    assert {"template_spread", "regular_timing", "proxy_pool", "unverified"} <= set(cluster.reasons)
    # Its three templates are its own: their SimHashes go out under each band value,
    # with the near-duplicate distance, each verdict naming the cluster.
    owned = analyzer.template_verdicts
    assert {pair for t in owned for pair in t.simhashes} == {(v, cluster.cluster) for v in VARIANTS}
    assert {t.key for t in owned} == {k for v in VARIANTS for k in template_verdict_keys(v)}
    assert {t.bits for t in owned} == {AnalysisSettings().linking.near_duplicate_bits}
    assert {(t.action, t.cluster, t.until) for t in owned} == {
        ("restrict", cluster.cluster, START + DAY + AnalysisSettings().verdict_ttl)
    }


def test_a_template_other_people_use_gets_no_verdict() -> None:
    """A campaign template that ten unrelated accounts also send now and then is not the
    campaign's own (under 90 % of the people on it and its near-duplicates are members):
    no template verdict, and the ten stay out of the cluster."""
    rng = random.Random(4)
    records = campaign(START)
    for i in range(10):
        for k in range(8):
            own = rng.getrandbits(64)
            # Half of them send the campaign's template itself, half a near-duplicate of it.
            near = VARIANTS[0] if i % 2 else VARIANTS[0] ^ (1 << 10 | 1 << 30 | 1 << 50)
            template = near if k < 2 else own
            records.append(
                record(
                    f"user{i}",
                    START + rng.uniform(0, DAY),
                    network=f"{150 + i}.3.9.0/24",
                    asn=9000 + i,
                    template=f"{template:016x}",
                    simhash=template,
                )
            )
    analyzer, verdicts = run(records, START + DAY)
    assert not [v for v in verdicts if v.account.startswith("user")]
    assert {v.account for v in verdicts if v.action != "watch"} == {
        f"camp{i:03d}" for i in range(30)
    }
    assert analyzer.template_verdicts == []


def test_a_new_account_on_the_campaigns_own_template_is_restricted_at_once() -> None:
    """A replacement account whose one request is on the campaign's own template is
    restricted by the next analysis (too few requests for a member's own checks, but
    the template is the campaign's); without template ownership it is only watched."""
    records = campaign(START)
    records.append(
        record(
            "late",
            START + DAY - 900,
            tier="free",
            kyc="unverified",
            created=rfc3339(START + DAY - 1000),
            network="203.0.113.0/24",
            asn=64599,
            client="c0ffee0000000001",
            template=f"{VARIANTS[1]:016x}",
            simhash=VARIANTS[1],
            elicitation=0.7,
        )
    )
    _, verdicts = run(records, START + DAY)
    assert {v.account: v.action for v in verdicts}["late"] in {"restrict", "deny"}
    off = AnalysisSettings.model_validate({"template_verdicts": {"enabled": False}})
    _, verdicts = run(records, START + DAY, off)
    assert {v.account: v.action for v in verdicts}["late"] == "watch"


def test_a_newcomer_on_a_campaign_template_is_never_denied_for_it() -> None:
    """A new, unverified account whose two requests use the campaign's template joins
    its cluster, but the template does not count as its own evidence and, with too few
    requests for a member's own checks, it is at most restricted, never denied."""
    records = campaign(START)
    for k in range(2):
        records.append(
            record(
                "newbie",
                START + DAY - 3000 + 600 * k,
                kyc="unverified",
                created=rfc3339(START - 5 * DAY),
                network="198.51.100.0/24",
                asn=64777,
                client="0d0d0d0d0d0d0d0d",
                template=f"{VARIANTS[1]:016x}",
                simhash=VARIANTS[1],
                elicitation=0.1,
            )
        )
    _, verdicts = run(records, START + DAY)
    judged = {v.account: v.action for v in verdicts}
    assert judged["newbie"] in {"watch", "restrict"}
    assert judged["camp000"] == "deny"


def test_a_band_value_shared_by_two_campaigns_names_each_hash_owner() -> None:
    """Two campaigns whose templates share a 16-bit band value: the band's verdict carries
    each SimHash with the cluster that owns it."""
    other = 0x9F3A_0000_0000_5678  # shares CAMPAIGN_HASH's lowest band, 30 bits away
    second = campaign(START, seed=9)
    for r in second:
        r["account"] = "b" + r["account"]
        r["entity"] = "e-" + r["account"]
        r["detection"].update(
            template=f"{other:016x}", simhash=f"{other:016x}", client="beefbeefbeefbeef"
        )
    analyzer, verdicts = run(campaign(START) + second, START + DAY)
    cluster_of = {v.account: v.cluster for v in verdicts}
    assert cluster_of["camp000"] != cluster_of["bcamp000"]
    (shared,) = [t for t in analyzer.template_verdicts if t.key == template_verdict_keys(other)[0]]
    owners = dict(shared.simhashes)
    assert owners[other] == cluster_of["bcamp000"]
    assert owners[CAMPAIGN_HASH] == cluster_of["camp000"]


def test_template_verdicts_are_capped() -> None:
    """`max_total` bounds the SimHashes written, `max_per_key` those under one band value."""
    settings = AnalysisSettings.model_validate(
        {"template_verdicts": {"max_total": 2, "max_per_key": 1}}
    )
    analyzer, _ = run(campaign(START), START + DAY, settings)
    kept = {h for t in analyzer.template_verdicts for h, _ in t.simhashes}
    assert len(kept) == 2 and kept < set(VARIANTS)
    assert all(len(t.simhashes) == 1 for t in analyzer.template_verdicts)


def test_template_verdicts_follow_shadow_and_can_be_switched_off() -> None:
    """In shadow mode template verdicts are `watch` led by `shadow:restrict`; disabled, none."""
    shadow, _ = run(campaign(START), START + DAY, AnalysisSettings(shadow=True))
    assert shadow.template_verdicts
    assert {(t.action, t.reasons[0]) for t in shadow.template_verdicts} == {
        ("watch", "shadow:restrict")
    }
    off = AnalysisSettings.model_validate({"template_verdicts": {"enabled": False}})
    analyzer, verdicts = run(campaign(START), START + DAY, off)
    assert verdicts and analyzer.template_verdicts == []


def test_a_campaign_owns_the_networks_of_its_proxies() -> None:
    """Every /24 of the campaign's proxy pool that three of its restricted members used,
    and no one else, gets a verdict naming the cluster; a /24 an outsider also used
    within the window gets none."""
    records = campaign(START)
    pool = sorted(n for n, users in network_users(records).items() if users >= 3)
    shared = pool[0]
    records.append(record("neighbour", START + 3600, network=shared, asn=64999))
    analyzer, verdicts = run(records, START + DAY)
    (cluster,) = [c for c in analyzer.clusters if c.accounts == 30]
    owned = {v.network: v for v in analyzer.network_verdicts}
    assert len(pool) > 50 and set(owned) == set(pool) - {shared}
    assert {(v.action, v.cluster, v.until) for v in owned.values()} == {
        ("restrict", cluster.cluster, START + DAY + AnalysisSettings().verdict_ttl)
    }
    assert owned[pool[1]].key == "dg:v:{n:" + pool[1] + "}"
    assert "neighbour" not in {v.account for v in verdicts}


def test_a_customer_swept_into_the_cluster_never_makes_its_networks_the_campaigns() -> None:
    """A verified customer with the campaign's client fingerprint on two of the proxy /24s is
    linked into the cluster but only watched; it is an outsider on its networks, so neither
    gets a network verdict, while the campaign's other networks do."""
    records = campaign(START)
    pool = sorted(n for n, users in network_users(records).items() if users >= 3)
    home = pool[:2]
    for k in range(8):
        records.append(
            record(
                "customer",
                START + 3600 * (k + 1),
                network=home[k % 2],
                asn=7922 + k % 2,
                client="c0ffee0000000001",
                elicitation=0.1,
            )
        )
    analyzer, verdicts = run(records, START + DAY)
    judged = {v.account: v for v in verdicts}
    assert judged["customer"].action == "watch"
    assert judged["customer"].cluster == judged["camp000"].cluster  # swept in
    owned = {v.network for v in analyzer.network_verdicts}
    assert not owned & set(home) and set(pool[2:]) <= owned


def test_network_verdicts_are_capped_follow_shadow_and_can_be_switched_off() -> None:
    """`max_per_cluster` keeps the networks most members used; shadow writes `watch`."""
    records = campaign(START)
    members_on = network_users(records)
    capped = AnalysisSettings.model_validate({"network_verdicts": {"max_per_cluster": 5}})
    analyzer, _ = run(records, START + DAY, capped)
    kept = [v.network for v in analyzer.network_verdicts]
    assert len(kept) == 5
    assert min(members_on[n] for n in kept) >= max(
        members_on[n] for n in members_on if n not in kept
    )
    few = AnalysisSettings.model_validate({"network_verdicts": {"max_total": 3}})
    assert len(run(records, START + DAY, few)[0].network_verdicts) == 3
    shadow, _ = run(records, START + DAY, AnalysisSettings(shadow=True))
    assert shadow.network_verdicts
    assert {(v.action, v.reasons[0]) for v in shadow.network_verdicts} == {
        ("watch", "shadow:restrict")
    }
    off = AnalysisSettings.model_validate({"network_verdicts": {"enabled": False}})
    analyzer, verdicts = run(records, START + DAY, off)
    assert verdicts and analyzer.network_verdicts == []


def test_network_churn_shows_rotating_proxies_from_the_third_request() -> None:
    """Accounts with three requests each, every one through another network of the pool:
    the median count of networks (3) is below `proxy_pool`'s ramp, but every request
    after the first brought a new network, so `network_churn` fires. The same accounts
    each on one home network show no churn."""
    records = campaign(START, per_day=3)
    for r in records:  # three distinct networks per account
        k = int(r["account"][4:]) * 3 + sum(
            1 for x in records if x["account"] == r["account"] and x["time"] < r["time"]
        )
        r["client_network"], r["asn"] = f"10.{k // 256}.{k % 256}.0/24", 65000 + k
    analyzer, _ = run(records, START + DAY)
    (rotating,) = analyzer.clusters
    assert rotating.values["network_churn"] == 1.0 and rotating.values["proxy_pool"] == 3.0
    assert "network_churn" in rotating.reasons and "proxy_pool" not in rotating.reasons
    for r in records:
        n = int(r["account"][4:])
        r["client_network"], r["asn"] = f"10.9.{n}.0/24", 65000 + n
    analyzer, _ = run(records, START + DAY)
    (home,) = analyzer.clusters
    assert home.values["network_churn"] == 0.0 and "network_churn" not in home.reasons


def test_enterprise_ci_job_gets_nothing() -> None:
    """One verified entity's templated, clockwork CI traffic from one network: no verdict."""
    analyzer, verdicts = run(ci_job(START), START + DAY)
    assert verdicts == [] and analyzer.template_verdicts == []
    assert analyzer.network_verdicts == []
    assert all(c.identities == 1 for c in analyzer.clusters)


def test_nat_users_get_nothing() -> None:
    """Forty users on one /24 with one SDK and diverse prompts: not even a cluster."""
    analyzer, verdicts = run(nat_users(START), START + DAY)
    assert verdicts == []
    assert analyzer.clusters == []


def test_researcher_alone_gets_nothing() -> None:
    """High elicitation by itself, from one account with diverse prompts, is no cluster."""
    analyzer, verdicts = run(researcher(START), START + DAY)
    assert verdicts == []
    assert analyzer.clusters == []


def test_mixed_population_restricts_only_the_campaign() -> None:
    """All of them together: the campaign is restricted, nobody else gets any verdict."""
    records = campaign(START) + ci_job(START) + nat_users(START) + researcher(START)
    analyzer, verdicts = run(records, START + DAY)
    assert {v.account for v in verdicts} == {f"camp{i:03d}" for i in range(30)}
    assert by_action(verdicts)["watch"] == 0
    assert {h for t in analyzer.template_verdicts for h, _ in t.simhashes} == set(VARIANTS)


def test_cover_traffic_does_not_pull_in_benign_users() -> None:
    """A campaign mixing ordinary prompts on popular frames into its traffic does not drag
    the people who use those frames into its cluster."""
    rng = random.Random(8)
    frames = [rng.getrandbits(64) for _ in range(10)]
    records = campaign(START)
    for r in records:  # about a third of the campaign's requests become ordinary prompts
        if rng.random() < 0.33:
            frame = rng.choice(frames)
            r["detection"].update(
                template=f"{frame:016x}", simhash=f"{frame:016x}", elicitation=0.05
            )
    for i in range(60):  # people who mostly use one popular frame; a third new and unverified
        new = i % 3 == 0
        for k in range(3):
            frame = frames[i % 10] if k < 2 else rng.getrandbits(64)
            records.append(
                record(
                    f"person{i:02d}",
                    START + rng.uniform(0, DAY),
                    kyc="unverified" if new else "verified",
                    created=rfc3339(START - 3 * DAY) if new else LONG_AGO,
                    network=f"{100 + i}.{i}.7.0/24",
                    asn=7000 + i,
                    template=f"{frame:016x}",
                    simhash=frame,
                )
            )
    analyzer, verdicts = run(records, START + DAY)
    judged = {v.account: v.action for v in verdicts}
    assert not [a for a in judged if a.startswith("person")]
    # The campaign's own templates still get theirs; none of the frames does.
    assert {h for t in analyzer.template_verdicts for h, _ in t.simhashes} == set(VARIANTS)
    assert all(judged.get(f"camp{i:03d}") in {"restrict", "deny"} for i in range(30))


def test_a_campaign_spread_over_many_templates_keeps_them_all_in_its_core() -> None:
    """Sixty fresh accounts with two requests each, spread over thirty unrelated templates
    (each used by four accounts, under a tenth of the group): every template is in the
    cluster's core, so the members' whole traffic counts as concentrated on it."""
    rng = random.Random(12)
    templates = [rng.getrandbits(64) for _ in range(30)]
    records = []
    for i in range(60):
        for k in range(2):
            t = templates[(i + 31 * k) % 30]
            records.append(
                record(
                    f"slow{i:02d}",
                    START + 3600 * (i % 12) + 7200 * k + i,
                    tier="free",
                    kyc="unverified",
                    created=rfc3339(START - DAY + 60 * i),
                    network=f"{20 + i}.{k}.9.0/24",
                    asn=64500 + 2 * i + k,
                    client="c0ffee0000000001",
                    template=f"{t:016x}",
                    simhash=t,
                    elicitation=0.7,
                )
            )
    analyzer, _ = run(records, START + DAY)
    (cluster,) = analyzer.clusters
    assert cluster.accounts == 60
    assert cluster.values["template_concentration"] == 1.0
    assert cluster.values["network_churn"] == 1.0  # two requests, two networks each


def test_popular_sdk_from_many_networks_is_no_cluster() -> None:
    """Hundreds of unrelated users of one popular SDK (one fingerprint) link to nothing."""
    rng = random.Random(5)
    records = [
        record(
            f"user{i:03d}",
            START + rng.uniform(0, DAY),
            network=f"{rng.randrange(1, 223)}.{rng.randrange(256)}.{rng.randrange(256)}.0/24",
            asn=rng.randrange(1000, 60000),
            client="0a1b2c3d4e5f6071",
        )
        for i in range(300)
        for _ in range(5)
    ]
    analyzer, verdicts = run(records, START + DAY)
    assert verdicts == []
    assert analyzer.clusters == []


# --- verdicts over time ---------------------------------------------------------------


def test_verdicts_expire_unless_renewed() -> None:
    """A verdict lasts `verdict_ttl`; each analysis renews it; once the campaign stops it lapses."""
    settings = AnalysisSettings(verdict_ttl=600)
    analyzer = Analyzer(settings)
    observe_all(analyzer, campaign(START))
    first = analyzer.analyze(START + DAY)
    assert {v.until for v in first} == {START + DAY + 600}
    renewed = analyzer.analyze(START + DAY + 60)
    assert {v.until for v in renewed} == {START + DAY + 660}
    sink = MemoryVerdictSink()
    asyncio.run(sink.put(renewed))
    assert sink.get(verdict_key("camp000"), START + DAY + 659) is not None
    assert sink.get(verdict_key("camp000"), START + DAY + 660) is None  # expired, and dropped
    # A window later nothing is left to renew, and the analyzer has forgotten everyone.
    assert analyzer.analyze(START + 2 * DAY + 1) == []
    assert analyzer.accounts == 0
    assert len(analyzer) == 0


def test_cluster_id_is_stable_across_runs_and_record_order() -> None:
    """The same cluster keeps its id as records arrive, and does not depend on their order."""
    records = campaign(START, days=2)
    half = [r for r in records if r["time"] < rfc3339(START + DAY)]
    rest = [r for r in records if r["time"] >= rfc3339(START + DAY)]
    analyzer = Analyzer()
    observe_all(analyzer, half)
    first = {v.cluster for v in analyzer.analyze(START + DAY)}
    observe_all(analyzer, rest)
    second = {v.cluster for v in analyzer.analyze(START + 2 * DAY)}
    assert first == second and len(first) == 1
    shuffled = list(records)
    random.Random(9).shuffle(shuffled)
    other = Analyzer()
    observe_all(other, shuffled)
    assert {v.cluster for v in other.analyze(START + 2 * DAY)} == first


def test_shadow_writes_watch_and_names_the_real_action() -> None:
    """In shadow mode every verdict is `watch`, its reasons led by the action it would have had."""
    _, verdicts = run(campaign(START), START + DAY, AnalysisSettings(shadow=True))
    assert verdicts and by_action(verdicts) == {"watch": 30}
    assert all(v.reasons[0] in {"shadow:restrict", "shadow:deny"} for v in verdicts)


def test_unverified_accounts_are_restricted_sooner() -> None:
    """With restrict just above the cluster score, only KYC multipliers above 1 reach it."""
    records = campaign(START)
    verified = {f"camp{i:03d}" for i in range(0, 30, 2)}
    for r in records:
        if r["account"] in verified:
            r["kyc"] = "verified"
    analyzer, _ = run(records, START + DAY)
    score = analyzer.clusters[0].score
    thresholds = Thresholds(watch=0.01, restrict=score * 1.1, deny=2.0)
    _, verdicts = run(records, START + DAY, AnalysisSettings(thresholds=thresholds))
    actions = {v.account: v.action for v in verdicts}
    assert {a for a, act in actions.items() if act == "restrict"} == set(actions) - verified
    assert {actions[a] for a in verified} == {"watch"}


def test_a_restricted_member_stays_restricted_while_its_cluster_qualifies() -> None:
    """A member that passed its own checks keeps its restriction as its requests leave the window.

    camp000 stops sending half-way; hours later its window holds too few requests
    for a member's own checks, yet the cluster still qualifies: an analyzer that
    restricted it before keeps it restricted, a fresh one (no history) only watches it.
    (Template ownership is off: it would let a member with few requests qualify.)
    """
    settings = AnalysisSettings.model_validate(
        {"window": 12 * 3600, "template_verdicts": {"enabled": False}}
    )
    stop = START + DAY / 2
    records = [
        r
        for r in campaign(START, days=1.5)
        if r["account"] != "camp000" or r["time"] < rfc3339(stop)
    ]
    analyzer = Analyzer(settings)
    observe_all(analyzer, [r for r in records if r["time"] < rfc3339(stop)])
    assert {v.action for v in analyzer.analyze(stop) if v.account == "camp000"} == {"deny"}
    observe_all(analyzer, [r for r in records if r["time"] >= rfc3339(stop)])
    late = stop + 11.5 * 3600
    for half_hour in range(1, 23):  # within `verdict_ttl` of each other, so nothing lapses
        analyzer.analyze(stop + half_hour * 1800)
    held = {v.account: v.action for v in analyzer.analyze(late)}
    _, fresh = run(records, late, settings)
    assert held["camp000"] == "deny"
    assert {v.account: v.action for v in fresh}["camp000"] == "watch"
    assert {a for a, act in held.items() if act == "watch"} == set()


# --- input and memory -----------------------------------------------------------------


def test_bad_records_are_counted_by_kind() -> None:
    """Records without an account or time, or with a bad time, are refused with a stable kind."""
    good = record("a", START)
    no_account = {k: v for k, v in good.items() if k != "account"}
    no_time = {k: v for k, v in good.items() if k != "time"}
    bad_time = dict(good, time="yesterday")
    bad_detection = dict(good, detection="x")
    analyzer = Analyzer()
    bad = observe_all(analyzer, [good, no_account, no_time, bad_time, bad_detection])
    assert bad == {"missing_field": 2, "bad_field": 2}
    assert len(analyzer) == 1
    with pytest.raises(RecordError, match="no 'account'"):
        parse_record(no_account)


def test_record_without_detection_still_counts() -> None:
    """A check that stopped before the detect phase still says who called, when and from where."""
    r = record("a", START)
    del r["detection"]
    obs = parse_record(r)
    assert obs.template == "" and obs.simhash is None and obs.network == "73.12.4.0/24"


def test_same_source_is_counted_once() -> None:
    """An observation delivered twice under one source (a redelivered entry) counts once."""
    analyzer = Analyzer()
    r = record("a", START)
    analyzer.observe(r, source="1-0")
    analyzer.observe(r, source="1-0")
    analyzer.observe(r, source="2-0")
    assert len(analyzer) == 2


def test_observation_round_trips_through_its_compact_form() -> None:
    """The worker's log entry reads back as the same observation."""
    obs = parse_record(record("a", START, simhash=0x0123456789ABCDEF))
    assert Observation.from_compact(obs.to_compact()) == obs
    with pytest.raises(RecordError):
        Observation.from_compact([1, 2])


def test_memory_is_bounded_per_account() -> None:
    """A heavy account keeps only its newest `max_events_per_account` requests."""
    analyzer = Analyzer(AnalysisSettings(max_events_per_account=16))
    for i in range(100):
        analyzer.observe(record("heavy", START + i))
    assert len(analyzer) == 16


def test_near_duplicates_join_within_three_bits_only() -> None:
    """SimHashes up to 3 bits apart form one template cluster; 4 bits apart do not."""
    index = TemplateIndex(max_bits=3, max_pairs=64)
    base = 0x0F0F0F0F0F0F0F0F
    index.add("b", base ^ 0b111, START)  # 3 bits away
    index.add("a", base, START)
    index.add("c", base ^ 0xF000, START)  # 4 bits away from a, 7 from b
    groups = index.groups(["a", "b", "c"])
    assert groups == {"a": "a", "b": "a", "c": "c"}
    index.expire(START + 1)
    assert len(index) == 0


def test_wider_near_duplicates_are_found_by_probing_each_band() -> None:
    """Within 7 bits, a pair that shares no 16-bit band at all still joins; 9 bits apart does not.

    The pair 7 bits apart differs in every band (2, 2, 2 and 1 bits): only the
    probe one bit around each band finds it. The pair 9 bits apart is found as
    a candidate (one band differs in a single bit) and the Hamming check keeps
    it two templates.
    """
    base = 0x0123456789ABCDEF
    seven = base ^ sum(1 << (8 * band) for band in range(7))  # one bit in each of 7 bands
    nine = base ^ 0xFF00000000000000 ^ 1 << 8  # 8 bits in the top band, 1 in another
    narrow = TemplateIndex(max_bits=3, max_pairs=64)
    wide = TemplateIndex(max_bits=7, max_pairs=64)
    assert (narrow.radius, wide.radius) == (0, 1)
    for index in (narrow, wide):
        for name, h in (("a", base), ("b", seven), ("c", nine)):
            index.add(name, h, START)
    assert narrow.groups(["a", "b", "c"]) == {"a": "a", "b": "b", "c": "c"}
    assert wide.groups(["a", "b", "c"]) == {"a": "a", "b": "a", "c": "c"}


def test_settings_document_every_field() -> None:
    """Every settings field has a description (the rules' JSON Schema shows them) and a default.

    A Component is one value (start, full, weight): its parts are described, and
    each component's default is given whole.
    """

    def walk(model: type[Any]) -> None:
        for name, info in model.model_fields.items():
            assert info.description, f"{model.__name__}.{name} has no description"
            if model is not Component:
                assert not info.is_required(), f"{model.__name__}.{name} has no default"
            annotation = info.annotation
            if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
                walk(annotation)

    walk(AnalysisSettings)


def test_settings_refuse_unknown_keys_and_disordered_thresholds() -> None:
    """Settings are strict: an unknown key or thresholds out of order are errors."""
    with pytest.raises(ValidationError, match="extra"):
        AnalysisSettings.model_validate({"treshold": 1})
    with pytest.raises(ValidationError, match="ordered"):
        AnalysisSettings.model_validate({"thresholds": {"watch": 0.9, "restrict": 0.5}})


def test_harness_on_a_small_simulation(tmp_path: Path) -> None:
    """The harness turns simulate's files into records the analyzer takes, and scores them."""
    args = ["--days", "1", "--benign-accounts", "100", "--campaign-accounts", "30", "--seed", "21"]
    assert main(["simulate", "--out", str(tmp_path), *args]) == 0
    records = list(simulation_records(tmp_path))
    assert records
    first = records[0]
    assert first["client_network"].endswith(("/24", "/48"))
    assert {"template", "simhash", "client"} <= set(first["detection"])
    bad: Counter[str] = Counter()
    result, _ = harness_run(observations(records, bad), AnalysisSettings(), 600)
    assert not bad
    report = score(result, tmp_path / "labels.jsonl")
    campaign_row = report["groups"].pop("campaign")
    assert campaign_row["restricted"] >= 0.9 * campaign_row["active"]
    assert all(row["restricted"] == 0 for row in report["groups"].values())
    assert report["precision"] == 1.0
