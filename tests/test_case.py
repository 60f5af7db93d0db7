"""distill-guard case on a small replayed campaign: every number against the audit file itself."""

from __future__ import annotations

import base64
import itertools
import json
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from authz.cli import main
from authz.events.rules import RestrictedJurisdiction, seconds
from authz.rules import load_rules

NOW = "2026-11-27T00:00:00Z"


@pytest.fixture(scope="module")
def trail(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small simulated campaign replayed into a chained audit trail that keeps request content.

    The rules report campaign clusters (and, by default, restricted-jurisdiction
    attempts), so the trail holds reportable events on a chain of their own.
    """
    sim = tmp_path_factory.mktemp("case") / "sim"
    assert (
        main(
            [
                *("simulate", "--out", str(sim), "--seed", "3", "--days", "1"),
                *("--benign-accounts", "30", "--campaign-accounts", "8"),
            ]
        )
        == 0
    )
    with open(sim / "rules.yaml", "a") as rules:
        rules.write("events:\n  campaign_cluster: {}\n")
    assert (
        main(
            [
                *("replay", str(sim / "traffic.jsonl"), "--quiet"),
                *("--rules", str(sim / "rules.yaml"), "--accounts", str(sim / "accounts.jsonl")),
                *("--geoip", "demo", "--out", str(sim / "decisions.jsonl")),
                *("--audit-out", str(sim / "audit.jsonl"), "--audit-request-content"),
                *("--events-out", str(sim / "events.jsonl")),
            ]
        )
        == 0
    )
    return sim


def records(path: Path) -> list[dict[str, Any]]:
    """Every record of an audit file."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def the_cluster(audit: Path) -> str:
    """The cluster most records of the trail carry (the campaign's)."""
    clusters = Counter(r.get("detection", {}).get("cluster", "") for r in records(audit))
    del clusters[""]
    return clusters.most_common(1)[0][0]


def run_case(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """`distill-guard case ARGS`: exit status, stdout and stderr."""
    capsys.readouterr()
    status = main(["case", *args, "--now", NOW])
    out, err = capsys.readouterr()
    return status, out, err


def case_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    """The case JSON of a run that must succeed."""
    status, out, err = run_case(capsys, *args, "--format", "json")
    assert status == 0, err
    result: dict[str, Any] = json.loads(out)
    return result


def epoch(text: str) -> float:
    """A record time as epoch seconds."""
    return datetime.fromisoformat(text).timestamp()


def test_cluster_case_numbers_match_the_audit_trail(
    trail: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every count of a cluster's case equals the same count made here from the audit file."""
    audit = trail / "audit.jsonl"
    cluster = the_cluster(audit)
    case = case_json(capsys, cluster, "--file", str(audit))
    rows = records(audit)
    members = {r["account"] for r in rows if r.get("detection", {}).get("cluster") == cluster}
    mine = [r for r in rows if r.get("account") in members]
    labels = [json.loads(line) for line in (trail / "labels.jsonl").read_text().splitlines()]
    campaign = {label["account"] for label in labels if label["class"] == "campaign"}
    assert members == campaign  # the replayed campaign is exactly the cluster

    restricted = [
        r for r in mine if r["action"] == "allow" and r["detection"].get("risk") == "restrict"
    ]
    assert case["totals"] == {
        "records": len(mine),
        "accounts": len(members),
        "entities": len({r["entity"] for r in mine}),
        "allow": sum(r["action"] == "allow" for r in mine),
        "deny": sum(r["action"] == "deny" for r in mine),
        "restricted": len(restricted),
        "estimated_tokens": sum(int(r.get("estimated_tokens", 0)) for r in mine),
        "with_content": len(mine),
    }
    per_account = Counter(r["account"] for r in mine)
    assert {a["account"]: a["requests"] for a in case["accounts"]} == per_account
    for a in case["accounts"]:
        own = [r for r in mine if r["account"] == a["account"]]
        assert a["keys"] == dict(Counter(r["key_id"] for r in own))
        assert a["created"] == own[-1]["account_created"]
        assert a["deny"] == sum(r["action"] == "deny" for r in own)
        risks = [r["time"] for r in own if r.get("detection", {}).get("risk") == "deny"]
        assert a["first_deny"] == (risks[0] if risks else "")

    networks: dict[str, set[str]] = defaultdict(set)
    for r in mine:
        networks[r["client_network"]].add(r["account"])
    net_requests = Counter(r["client_network"] for r in mine)
    assert {n["value"]: (n["requests"], n["accounts"]) for n in case["networks"]} == {
        net: (net_requests[net], len(accounts)) for net, accounts in networks.items()
    }
    assert {c["value"]: c["requests"] for c in case["countries"]} == Counter(
        r["country"] for r in mine if r.get("country")
    )

    hours = Counter(int(epoch(r["time"]) // 3600) for r in mine)
    assert case["volume"]["bucket"] == "hour"
    assert {
        int(epoch(b["start"]) // 3600): b["requests"]
        for b in case["volume"]["buckets"]
        if b["requests"]
    } == hours
    assert sum(b["deny"] for b in case["volume"]["buckets"]) == case["totals"]["deny"]

    decisions = Counter((r["action"], r["reason"], r.get("rule", "")) for r in mine)
    assert {(d["action"], d["reason"], d["rule"]): d["requests"] for d in case["decisions"]} == (
        decisions
    )
    assert {v["value"]: v["requests"] for v in case["rules_versions"]} == Counter(
        r["rules_version"] for r in mine
    )
    assert {t["value"]: t["requests"] for t in case["templates"]} == Counter(
        r["detection"]["template"] for r in mine if r.get("detection", {}).get("template")
    )

    chain = case["chain"]
    assert chain["intact"] and chain["records_read"] == len(rows)
    sequences = [int(r["sequence"]) for r in mine]
    assert chain["case"]["chains"] == [
        {
            "name": "replay",
            "records": len(mine),
            "first_sequence": min(sequences),
            "last_sequence": max(sequences),
            "last_hash": mine[-1]["hash"],
        }
    ]
    heads = {c["name"]: c["last_hash"] for c in chain["chains"]}
    assert heads["replay"] == [r for r in rows if r.get("chain") == "replay"][-1]["hash"]


def raw_prompt_lines(audit: Path, accounts: set[str]) -> set[str]:
    """Lines of at least 30 characters of the raw prompts the accounts sent."""
    lines = set()
    for r in records(audit):
        if r.get("account") in accounts and "content" in r:
            body = json.loads(base64.b64decode(r["content"]["body"]))
            for message in body.get("messages", []):
                text = message["content"] if isinstance(message["content"], str) else ""
                lines.update(line for line in text.splitlines() if len(line) >= 30)
    return lines


def test_examples_are_redacted_unless_asked(
    trail: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """No raw prompt line reaches any output by default; --unredacted shows them and says so."""
    audit = trail / "audit.jsonl"
    cluster = the_cluster(audit)
    redacted, raw = tmp_path / "redacted", tmp_path / "raw"
    assert run_case(capsys, cluster, "--file", str(audit), "--out", str(redacted))[0] == 0
    assert (
        run_case(capsys, cluster, "--file", str(audit), "--out", str(raw), "--unredacted")[0] == 0
    )
    accounts = {a["account"] for a in json.loads((raw / "case.json").read_text())["accounts"]}
    lines = raw_prompt_lines(audit, accounts)
    assert lines
    for name in ("case.md", "case.html", "case.json", "indicators.jsonl"):
        text = (redacted / name).read_text()
        assert not [line for line in lines if line in text], name
        assert "UNREDACTED" not in text
    unredacted_md = (raw / "case.md").read_text()
    assert "UNREDACTED" in unredacted_md
    assert any(line in unredacted_md for line in lines)
    assert json.loads((raw / "case.json").read_text())["redacted"] is False
    example = json.loads((redacted / "case.json").read_text())["templates"][0]["example"]
    assert example["kind"] == "scaffold" and example["matches_template"]


def test_an_edited_record_shows_as_a_broken_chain(
    trail: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Changing one record of the trail: the case still comes out, says where, and exits 1."""
    audit = trail / "audit.jsonl"
    cluster = the_cluster(audit)
    lines = audit.read_text().splitlines(keepends=True)
    target = next(
        n for n, line in enumerate(lines) if cluster in line and '"action":"deny"' in line
    )
    lines[target] = lines[target].replace('"action":"deny"', '"action":"allow"')
    edited = tmp_path / "edited.jsonl"
    edited.write_text("".join(lines))
    status, out, err = run_case(capsys, cluster, "--file", str(edited), "--format", "json")
    assert status == 1 and "CHAIN BROKEN (edited)" in err
    chain = json.loads(out)["chain"]
    assert not chain["intact"]
    assert chain["problem"]["kind"] == "edited"
    assert chain["problem"]["found_at"] == f"line {target + 1}"
    assert chain["case"]["checked_before_problem"] < chain["case"]["records"]
    status, out, _ = run_case(capsys, cluster, "--file", str(edited))
    assert status == 1
    assert "> **The audit trail's hash chain is BROKEN (edited)" in out
    assert f"found at line {target + 1}" in out


def test_account_and_entity_subjects(trail: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An account's case holds its records only; an entity's (--entity) all of its accounts'."""
    audit = trail / "audit.jsonl"
    rows = records(audit)
    account = Counter(r["account"] for r in rows if r.get("account")).most_common(1)[0][0]
    case = case_json(capsys, account, "--file", str(audit))
    assert case["subject"] == {"kind": "account", "id": account, "from_verdicts": []}
    assert [a["account"] for a in case["accounts"]] == [account]
    assert case["totals"]["records"] == sum(r.get("account") == account for r in rows)
    entity = next(r["entity"] for r in rows if r.get("account") == account)
    by_entity = case_json(capsys, entity, "--entity", "--file", str(audit))
    assert by_entity["subject"]["kind"] == "entity"
    assert by_entity["totals"]["records"] == sum(r.get("entity") == entity for r in rows)


def test_the_period_bounds_the_records(trail: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--since and --until keep [since, until); the subject's other records are counted apart."""
    audit = trail / "audit.jsonl"
    cluster = the_cluster(audit)
    since, until = "2026-04-22T06:00:00Z", "2026-04-22T12:00:00Z"
    case = case_json(capsys, cluster, "--file", str(audit), "--since", since, "--until", until)
    members = {a["account"] for a in case["accounts"]}
    inside = [
        r
        for r in records(audit)
        if r.get("account") in members and epoch(since) <= epoch(r["time"]) < epoch(until)
    ]
    assert case["totals"]["records"] == len(inside)
    assert case["period"]["since"] == since and case["period"]["until"] == until
    assert case["source"]["subject_records_outside_period"] > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["a b", "--file", "{audit}"], "not an account, entity or cluster id: 'a b'"),
        (["", "--file", "{audit}"], "not an account, entity or cluster id: ''"),
        (["nope", "--cluster", "--file", "{audit}"], "a cluster id is 'c' and 12 hex digits"),
        (["a-nobody", "--file", "{audit}"], "no records of account a-nobody in the source"),
        (["c000000000000", "--file", "{audit}"], "no records of cluster c000000000000"),
        (["a1", "--file", "{dir}/missing.jsonl"], "no audit file"),
        (["a1", "--file", "{dir}"], "no audit file"),
        (["a1", "--file", "-"], "give a file, not stdin"),
        (["a1", "--file", "{audit}", "--since", "yesterday"], "not a duration"),
        (
            ["a1", "--file", "{audit}", "--since", "2d", "--until", "3d"],
            "--until (3d) is not after --since (2d)",
        ),
        (["a1", "--redis", "http://x"], "not a Redis URL"),
        (["a1", "--redis", "redis://127.0.0.1:1/0"], "Redis: Error"),
    ],
)
def test_bad_input_gets_a_clear_message(
    trail: Path,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    args: list[str],
    message: str,
) -> None:
    """A bad subject, a subject not in the source or an unreadable source: one line, exit 2."""
    filled = [a.format(audit=trail / "audit.jsonl", dir=tmp_path) for a in args]
    status, out, err = run_case(capsys, *filled)
    assert status == 2 and out == ""
    assert err.startswith("distill-guard case: ") and message in err
    assert "Traceback" not in err


def test_an_account_outside_the_period_says_so(
    trail: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A subject with records only outside the period is 'not found', with how many lie outside."""
    audit = trail / "audit.jsonl"
    account = next(r["account"] for r in records(audit) if r.get("account"))
    status, _, err = run_case(capsys, account, "--file", str(audit), "--since", "2027-01-01")
    assert status == 2
    assert "between 2027-01-01T00:00:00Z and the end" in err and "lie outside the period" in err


def test_indicators_parse_and_match_the_case(
    trail: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The indicator file: a header, then one line per case value with the case's own counts."""
    audit = trail / "audit.jsonl"
    out = tmp_path / "out"
    assert run_case(capsys, the_cluster(audit), "--file", str(audit), "--out", str(out))[0] == 0
    case = json.loads((out / "case.json").read_text())
    header, *lines = [
        json.loads(line) for line in (out / "indicators.jsonl").read_text().splitlines()
    ]
    assert header["type"] == "header" and header["format"] == "distill-guard-indicators/1"
    assert header["case_id"] == case["case_id"] and header["sharing"] == "TLP:AMBER"
    assert header["masking"] == case["masking"] and header["indicators"] == len(lines)
    pools = {
        "network": "networks",
        "asn": "asns",
        "client_fingerprint": "clients",
        "template": "templates",
        "simhash": "simhashes",
        "ip": "ips",
    }
    expected = {
        (kind, row["value"]): (row["requests"], row["accounts"], row["confidence"])
        for kind, pool in pools.items()
        for row in case[pool]
    }
    assert {
        (i["type"], i["value"]): (i["requests"], i["accounts"], i["confidence"]) for i in lines
    } == expected
    assert all(i["case_id"] == case["case_id"] for i in lines)


def test_same_input_same_bytes(
    trail: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Two runs with the same --now write identical files; the HTML fetches nothing."""
    audit = trail / "audit.jsonl"
    cluster = the_cluster(audit)
    for name in ("one", "two"):
        assert (
            run_case(capsys, cluster, "--file", str(audit), "--out", str(tmp_path / name))[0] == 0
        )
    names = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert names == ["case.html", "case.json", "case.md", "indicators.jsonl", "volume.png"]
    for name in names:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    html = (tmp_path / "one" / "case.html").read_text()
    assert 'src="data:image/png;base64,' in html
    assert "<link" not in html and 'src="http' not in html and "<script" not in html


def test_reportable_events_of_the_case_are_listed(
    trail: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The replay's events that name the cluster or its accounts are in the case, not counted."""
    audit = trail / "audit.jsonl"
    cluster = the_cluster(audit)
    case = case_json(capsys, cluster, "--file", str(audit))
    accounts = {a["account"] for a in case["accounts"]}
    emitted = [json.loads(line) for line in (trail / "events.jsonl").read_text().splitlines()]
    mine = [
        e["id"]
        for e in emitted
        if e.get("cluster") == cluster or accounts.intersection(e.get("accounts", ()))
    ]
    assert [e["id"] for e in case["events"]] == mine
    assert [e["incident"] for e in case["events"] if e["kind"] == "campaign_cluster"] == [
        f"campaign_cluster:{cluster}"
    ]
    in_trail = [r for r in records(audit) if "event" in r]
    assert len(in_trail) == len(emitted)
    assert case["totals"]["records"] + len(in_trail) <= case["chain"]["records_read"]
    events_chain = next(c for c in case["chain"]["chains"] if c["name"].startswith("events-"))
    assert events_chain["last_sequence"] == len(in_trail)


def jurisdiction_incidents(rows: list[dict[str, Any]], scope: RestrictedJurisdiction) -> int:
    """Incidents of restricted_jurisdiction counted from the trail's own decisions, as
    docs/events.md defines them: the denials and dry-run would-denials of each listed
    jurisdiction rule and client network (or account, `per: account`), split where no
    denial came for longer than the cooldown; those with at least `min_requests`."""
    times: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in rows:
        denied = r.get("action") == "deny" or bool(r.get("would_deny"))
        if (
            "decision_id" not in r
            or not denied
            or not r.get("rule", "").startswith("jurisdiction:")
        ):
            continue
        rule = r["rule"].removeprefix("jurisdiction:")
        if scope.rules and rule not in scope.rules:
            continue
        by_network = scope.per == "network" and r.get("client_network")
        times[rule, r["client_network"] if by_network else r["account"]].append(epoch(r["time"]))
    cooldown = seconds(scope.cooldown)
    incidents = 0
    for seen in times.values():
        seen.sort()
        runs = [1]  # denials per incident of this key
        for a, b in itertools.pairwise(seen):
            if b - a > cooldown:
                runs.append(0)
            runs[-1] += 1
        incidents += sum(n >= scope.min_requests for n in runs)
    return incidents


def test_events_of_the_replay_match_the_case_and_the_trail(
    trail: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The replayed campaign is one campaign_cluster event whose accounts and evidence are
    the case's; jurisdiction events are as many as the incidents counted from the trail."""
    audit = trail / "audit.jsonl"
    rows = records(audit)
    emitted = [json.loads(line) for line in (trail / "events.jsonl").read_text().splitlines()]
    campaigns = [e for e in emitted if e["kind"] == "campaign_cluster"]
    assert len(campaigns) == 1
    campaign = campaigns[0]
    case = case_json(capsys, campaign["cluster"], "--file", str(audit))
    accounts = {a["account"] for a in case["accounts"]}
    # The event names the accounts the cluster held when it was reported; the case, built
    # later from the whole trail, also holds those the analysis added to the cluster after.
    assert campaign["account_count"] == len(campaign["accounts"]) >= 5
    assert set(campaign["accounts"]) <= accounts
    case_decisions = {r["decision_id"] for r in rows if r.get("account") in accounts}
    assert campaign["evidence"] and set(campaign["evidence"]) <= case_decisions
    assert campaign["id"] in {e["id"] for e in case["events"]}

    jurisdiction = [e for e in emitted if e["kind"] == "restricted_jurisdiction"]
    assert jurisdiction  # the simulation's embargoed and out-of-region clients
    events = load_rules(trail / "rules.yaml").events
    assert events is not None
    scope = events.restricted_jurisdiction
    assert len(jurisdiction) == jurisdiction_incidents(rows, scope)


@pytest.fixture
def stream(trail: Path, redis_url: str) -> Iterator[str]:
    """The trail XADDed to a real Redis stream, entry by entry, as the stream sink writes it."""
    import redis

    client = redis.Redis.from_url(redis_url)
    for line in (trail / "audit.jsonl").read_text().splitlines():
        client.xadd("dg:audit", {"record": line})
    client.close()
    yield redis_url


def test_a_redis_stream_gives_the_same_case(
    trail: Path, stream: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The case read from the stream equals the file's, plus the accounts' current verdicts."""
    import redis

    from authz.detect.verdicts import verdict_key

    audit = trail / "audit.jsonl"
    cluster = the_cluster(audit)
    from_file = case_json(capsys, cluster, "--file", str(audit))
    member = from_file["accounts"][0]["account"]
    client = redis.Redis.from_url(stream)
    for account in (member, "a-no-records"):
        client.hset(
            verdict_key(account),
            mapping={"action": "restrict", "cluster": cluster, "score": "0.7", "until": "2e9"},
        )
    client.close()
    from_stream = case_json(capsys, cluster, "--redis", stream)
    assert from_stream["subject"]["from_verdicts"] == sorted([member, "a-no-records"])
    assert from_stream["verdicts"] == [
        {
            "account": member,
            "action": "restrict",
            "cluster": cluster,
            "score": "0.7",
            "until": "2033-05-18T03:33:20Z",
            "reasons": [],
        }
    ]  # an account without records in the period has no row
    assert from_file["verdicts"] is None
    for key in ("totals", "accounts", "networks", "volume", "decisions", "templates", "clients"):
        assert from_stream[key] == from_file[key], key
    assert from_file["events"]
    places = [e.pop("where") for e in from_file["events"]]
    entries = [e.pop("where") for e in from_stream["events"]]
    assert all(p.startswith("line ") for p in places)
    assert all(p.startswith("entry ") for p in entries)
    assert from_stream["events"] == from_file["events"]
    assert from_stream["chain"]["intact"]
    assert from_stream["chain"]["case"] == from_file["chain"]["case"]
    assert from_stream["source"]["verify"].startswith("distill-guard audit verify --redis ")


def test_missing_stream_is_a_clear_error(
    redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Redis without the stream: exit 2 and the stream's name."""
    status, _, err = run_case(capsys, "a1", "--redis", redis_url, "--stream", "dg:none")
    assert status == 2 and "no stream 'dg:none' in that Redis" in err


def test_a_trail_of_garbage_says_so(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A file of lines that are not records: nothing found, and the chain check's finding."""
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_text("not json\n")
    status, _, err = run_case(capsys, "a1", "--file", str(garbage))
    assert status == 2
    assert err == (
        "distill-guard case: no records of account a1 in the source; and the chain check "
        "found unreadable: line 1 is not an audit record (not a JSON object)\n"
    )


def test_a_bad_indicators_path_writes_nothing(
    trail: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """An indicators path that cannot be written: exit 2 before any case reaches stdout."""
    audit = trail / "audit.jsonl"
    missing = tmp_path / "no" / "such" / "indicators.jsonl"
    status, out, err = run_case(
        capsys, the_cluster(audit), "--file", str(audit), "--indicators", str(missing)
    )
    assert status == 2 and out == ""
    assert err == f"distill-guard case: {missing}: No such file or directory\n"
