"""`distill-guard simulate`: reproducible files the server and replay read, knobs that work."""

from __future__ import annotations

import hashlib
import ipaddress
import itertools
import json
import os
import random
import re
import statistics
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from authz.accounts import load_accounts_file
from authz.geobuild import demo_csv_path, read_csv
from authz.keys import KeyHasher, extract_key
from authz.replay.traffic import parse_line
from authz.rules import load_rules
from authz.sim import cli as sim_cli
from authz.sim.banks import CATEGORIES, bank
from authz.sim.campaign_text import CampaignText, make_template
from authz.sim.knobs import DAY, PRESETS, VOCABULARIES, Knobs, resolve
from authz.sim.networks import Networks, draw_address
from authz.sim.run import FILES, rules_path, simulate

SMALL = {"benign_accounts": 100, "campaign_accounts": 20, "days": 3, "pivot_day": 1}
MODELS = {"small-2", "frontier-3", "frontier-4"}
ANTHROPIC_FIELDS = {"model", "max_tokens", "messages", "system", "thinking"}
OPENAI_FIELDS = {
    "model", "messages", "reasoning_effort", "n", "logprobs", "top_logprobs",
    "max_completion_tokens",
}  # fmt: skip


@dataclass
class Run:
    """A generated scenario, parsed."""

    dir: Path
    knobs: Knobs
    accounts: dict[str, Any]  # account id -> AccountEntry
    labels: dict[str, dict[str, Any]]
    scenario: dict[str, Any]
    traffic: list[dict[str, Any]]  # each line, plus "account" and "parsed_body"

    def of(self, klass: str) -> Iterator[dict[str, Any]]:
        """Requests of accounts of one class (benign or campaign)."""
        return (r for r in self.traffic if self.labels[r["account"]]["class"] == klass)


_RUNS: dict[tuple[tuple[str, Any], ...], Run] = {}


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Generate (once per set of knobs) and parse a small scenario."""

    def make(scenario: str = "default", **knobs: Any) -> Run:
        values = {**SMALL, "seed": 7, **knobs}
        key = (("scenario", scenario), *sorted(values.items()))
        if key not in _RUNS:
            k = resolve(scenario, values)
            out = tmp_path_factory.mktemp("sim")
            simulate(k, out)
            _RUNS[key] = _parse(out, k)
        return _RUNS[key]

    return make


def _parse(out: Path, k: Knobs) -> Run:
    hasher = KeyHasher(None)
    entries = load_accounts_file(out / "accounts.jsonl")
    by_digest = {key.sha256: e for e in entries for key in e.keys}
    traffic = []
    for number, line in enumerate((out / "traffic.jsonl").read_text("utf-8").splitlines(), 1):
        record = json.loads(line)
        parse_line(line, number)  # the replay reader takes it
        secret = extract_key(record["headers"], ["authorization", "x-api-key"])
        assert secret is not None
        record["account"] = by_digest[hasher.digest(secret)].account
        record["parsed_body"] = json.loads(record["body"])
        traffic.append(record)
    labels = [json.loads(x) for x in (out / "labels.jsonl").read_text("utf-8").splitlines()]
    return Run(
        dir=out,
        knobs=k,
        accounts={e.account: e for e in entries},
        labels={x["account"]: x for x in labels},
        scenario=json.loads((out / "scenario.json").read_text("utf-8")),
        traffic=traffic,
    )


def _prompt(record: dict[str, Any]) -> str:
    return str(record["parsed_body"]["messages"][-1]["content"])


# --- reproducibility ------------------------------------------------------------------


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    """Two runs with one seed and knobs write byte-identical files; another seed does not."""
    first, second, other = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    simulate(resolve("default", {**SMALL, "seed": 3}), first)
    simulate(resolve("default", {**SMALL, "seed": 3}), second)
    simulate(resolve("default", {**SMALL, "seed": 4}), other)
    assert sorted(p.name for p in first.iterdir()) == sorted(FILES)
    for name in FILES:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    for name in ("accounts.jsonl", "traffic.jsonl", "labels.jsonl"):
        assert (first / name).read_bytes() != (other / name).read_bytes(), name


def test_output_does_not_depend_on_the_process(tmp_path: Path) -> None:
    """Runs in processes with different string-hash seeds write identical files."""
    script = (
        "import sys; from pathlib import Path; from authz.sim.knobs import resolve; "
        "from authz.sim.run import simulate; simulate(resolve('default', {'benign_accounts': 40,"
        " 'campaign_accounts': 5, 'days': 1, 'seed': 5}), Path(sys.argv[1]))"
    )
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        subprocess.run(
            [sys.executable, "-c", script, str(tmp_path / hash_seed)], env=env, check=True
        )
    for name in FILES:
        assert (tmp_path / "1" / name).read_bytes() == (tmp_path / "2" / name).read_bytes(), name


# --- the files ------------------------------------------------------------------------


def test_accounts_load_and_every_request_carries_a_known_key(sim: Any) -> None:
    """The server's loader takes the accounts file; each request's key digests to an account."""
    run = sim()
    assert len(run.accounts) == len(run.labels) > 120  # replacements come on top
    for entry in run.accounts.values():
        assert entry.created is not None and len(entry.keys) == 1
        assert entry.keys[0].secret is None  # only digests are stored
    secret = "dg_sim_" + "ab" * 20
    assert KeyHasher(None).digest(secret) == hashlib.sha256(secret.encode()).hexdigest()
    assert {r["account"] for r in run.traffic} <= set(run.accounts)
    assert len(run.traffic) > 1000


def test_traffic_is_sorted_well_formed_and_from_demo_networks(sim: Any) -> None:
    """Lines are in time order (ms), POSTs to the two APIs, with SDK-shaped bodies and demo IPs."""
    run = sim()
    networks = [row.network for row in read_csv(demo_csv_path())]
    times = [r["ts"] for r in run.traffic]
    assert times == sorted(times)
    start, end = run.scenario["start"], run.scenario["end"]
    assert start <= times[0] and times[-1] < end
    for r in run.traffic:
        assert round(r["ts"], 3) == r["ts"]
        assert r["method"] == "POST"
        assert all(name == name.lower() for name in r["headers"])
        assert r["headers"]["content-type"].startswith("application/json")
        body = r["parsed_body"]
        assert body["model"] in MODELS
        if r["path"] == "/v1/messages":
            assert "x-api-key" in r["headers"] and "anthropic-version" in r["headers"]
            assert set(body) <= ANTHROPIC_FIELDS
            if "thinking" in body:
                assert 1024 <= body["thinking"]["budget_tokens"] < body["max_tokens"]
        else:
            assert r["path"] == "/v1/chat/completions"
            assert r["headers"]["authorization"].startswith("Bearer dg_sim_")
            assert set(body) <= OPENAI_FIELDS
        address = ipaddress.ip_address(r["source_ip"])
        assert any(address in net for net in networks if net.version == address.version)


def test_each_account_keeps_a_stable_client_fingerprint(sim: Any) -> None:
    """An account uses one or two header layouts (names in order plus user agent), never more."""
    run = sim()
    layouts: dict[str, set[tuple[str, ...]]] = defaultdict(set)
    for r in run.traffic:
        layouts[r["account"]].add((*r["headers"], r["headers"]["user-agent"]))
    assert max(len(v) for v in layouts.values()) <= 2
    campaign = {
        lay for a, v in layouts.items() if run.labels[a]["class"] == "campaign" for lay in v
    }
    assert 1 <= len(campaign) <= 3  # a few shared fingerprints per campaign


def test_labels_cover_every_account(sim: Any) -> None:
    """One label per account with consistent class, group, tier and the hard-negative flag."""
    run = sim()
    assert set(run.labels) == set(run.accounts)
    groups = Counter(x["group"] for x in run.labels.values())
    assert {"individual", "nat", "ci", "researcher", "campaign-1"} <= set(groups)
    for account, x in run.labels.items():
        entry = run.accounts[account]
        assert (x["entity"], x["tier"], x["kyc"]) == (entry.entity, entry.tier, entry.kyc)
        assert entry.created is not None and x["opened"] == entry.created.timestamp()
        assert x["hard_negative"] == (x["group"] in ("ci", "researcher"))
        if x["class"] == "campaign":
            assert x["group"].startswith("campaign-")
            assert (x["tier"], x["kyc"]) in {("free", "unverified"), ("pro", "verified")}
        else:
            assert x["class"] == "benign" and x["banned"] is None and x["replaces"] is None
    counts = run.scenario["counts"]
    assert counts["accounts"]["total"] == len(run.labels)
    assert counts["requests"]["total"] == len(run.traffic)
    assert counts["requests"]["campaign"]["campaign-1"] == sum(1 for _ in run.of("campaign"))


def test_rules_file_loads_and_is_copied(sim: Any) -> None:
    """The reference rules pass the server's loader, and the run carries an identical copy."""
    run = sim()
    rules = load_rules(rules_path())
    assert rules.version.startswith("sim-1@")
    assert set(rules.tiers) == {"free", "pro", "enterprise"}
    assert rules.tiers["free"].allow_unverified and rules.tiers["free"].reasoning == "summary"
    assert rules.tiers["pro"].reasoning == "full" and not rules.tiers["pro"].allow_unverified
    assert (run.dir / "rules.yaml").read_bytes() == rules_path().read_bytes()
    assert {r["account"] for r in run.traffic} >= {
        a for a, x in run.labels.items() if x["tier"] == "enterprise" and x["group"] == "ci"
    }


# --- the campaign's shape -------------------------------------------------------------


def _per_day(run: Run) -> Counter[tuple[str, int]]:
    return Counter((r["account"], int(r["ts"] // DAY)) for r in run.of("campaign"))


def test_campaign_accounts_stay_under_the_daily_cap(sim: Any) -> None:
    """No campaign account sends more than daily_cap requests in a UTC day, even if asked to."""
    assert max(_per_day(sim()).values()) <= 25
    greedy = sim(per_account_daily=40.0, daily_cap=10)
    assert max(_per_day(greedy).values()) == 10


def test_campaign_prompts_elicit_reasoning(sim: Any) -> None:
    """Campaign requests ask for large thinking budgets or high effort; rubric prompts appear."""
    run = sim()
    bodies = [r["parsed_body"] for r in run.of("campaign")]
    big = [
        b for b in bodies
        if b.get("thinking", {}).get("budget_tokens", 0) >= 16000
        or b.get("reasoning_effort") == "high"
    ]  # fmt: skip
    assert len(big) > 0.8 * len(bodies)
    assert any("A, B or tie" in str(b["messages"]) for b in bodies)


def test_pivot_moves_the_campaign_to_the_new_model(sim: Any) -> None:
    """A day after the release most campaign traffic uses the new model; benign users lag."""
    run = sim()
    pivot = run.scenario["pivot_ts"]
    assert pivot == run.scenario["start"] + DAY + 17 * 3600

    def share(klass: str, lo: float, hi: float) -> float:
        models = [r["parsed_body"]["model"] for r in run.of(klass) if lo <= r["ts"] < hi]
        return models.count("frontier-4") / len(models)

    assert share("campaign", 0, pivot) == 0 == share("benign", 0, pivot)
    assert share("campaign", pivot + DAY, pivot + 2 * DAY) > 0.8
    assert share("benign", pivot + DAY, pivot + 2 * DAY) < 0.5


def test_bans_stop_traffic_and_replacements_follow(sim: Any) -> None:
    """A banned account falls silent; its replacement opens hours later and takes over."""
    run = sim(ban_rate=0.3)
    banned = {a: x for a, x in run.labels.items() if x["banned"] is not None}
    replacements = [x for x in run.labels.values() if x["replaces"] is not None]
    assert banned and replacements
    last = {r["account"]: r["ts"] for r in run.traffic}
    for account, x in banned.items():
        assert last.get(account, 0) < x["banned"]
    for x in replacements:
        old = run.labels[x["replaces"]]
        assert old["group"] == x["group"] and old["kyc"] == x["kyc"]
        assert old["banned"] + 3600 <= x["opened"] <= old["banned"] + 6 * 3600
    assert any(r["account"] == replacements[0]["account"] for r in run.traffic)
    assert run.scenario["campaigns"][0]["replacements"] == len(replacements)


def test_benign_only_has_no_campaign(sim: Any) -> None:
    """The benign-only preset writes no campaign accounts or requests."""
    run = sim("benign-only")
    assert {x["class"] for x in run.labels.values()} == {"benign"}
    assert run.scenario["campaigns"] == []
    assert run.scenario["counts"]["requests"]["campaign"]["total"] == 0


# --- robustness knobs -----------------------------------------------------------------


def test_paraphrase_breaks_exact_scaffolds() -> None:
    """Rewording turns a handful of exact scaffolds into many near-duplicates."""
    text = CampaignText(random.Random(1), bank("en-plain"), 12)
    rng = random.Random(2)
    plain = {text.prompt(rng, 0.0)[3] for _ in range(400)}
    reworded = {text.prompt(rng, 0.7)[3] for _ in range(400)}
    assert len(plain) <= 12
    assert len(reworded) > 10 * len(plain)


def test_paraphrase_changes_only_campaign_text(sim: Any) -> None:
    """Same schedule, addresses and benign traffic; only campaign prompts differ."""
    base, reworded = sim(), sim(paraphrase=0.7)
    assert [(r["ts"], r["source_ip"]) for r in base.traffic] == [
        (r["ts"], r["source_ip"]) for r in reworded.traffic
    ]
    assert [_prompt(r) for r in base.of("benign")] == [_prompt(r) for r in reworded.of("benign")]
    assert [_prompt(r) for r in base.of("campaign")] != [
        _prompt(r) for r in reworded.of("campaign")
    ]


def test_proxies_knob_sets_the_campaign_address_pool(sim: Any) -> None:
    """The campaign calls from at most --proxies addresses; more proxies, more addresses."""
    few = {r["source_ip"] for r in sim(proxies=5).of("campaign")}
    many = {r["source_ip"] for r in sim(proxies=200).of("campaign")}
    assert len(few) <= 5 < len(many)


def test_timing_jitter_makes_the_schedule_irregular(sim: Any) -> None:
    """Gaps between campaign requests are near-constant without jitter and spread out with it."""

    def spread(run: Run) -> float:
        day = run.scenario["start"] + DAY
        ts = [r["ts"] for r in run.of("campaign") if day <= r["ts"] < day + DAY]
        gaps = [b - a for a, b in itertools.pairwise(ts)]
        return float(statistics.pstdev(gaps) / statistics.mean(gaps))

    regular, jittered = spread(sim(timing_jitter=0.0)), spread(sim(timing_jitter=0.9))
    assert regular < 0.1
    assert jittered > 0.5


def test_cover_traffic_replaces_campaign_prompts(sim: Any) -> None:
    """With full cover traffic the campaign sends ordinary prompts without big thinking budgets."""
    run = sim(cover_traffic=1.0)
    for r in run.of("campaign"):
        body = r["parsed_body"]
        assert body.get("thinking", {}).get("budget_tokens", 0) < 16000
        assert body.get("reasoning_effort") != "high"


def test_low_and_slow_spreads_the_campaign(sim: Any) -> None:
    """Fewer requests per account per day, over more accounts."""
    run = sim(per_account_daily=5.0, campaign_accounts=100)
    days = _per_day(run)
    assert max(days.values()) <= 8 and statistics.mean(days.values()) < 6
    assert len({a for a, _ in days}) > 80


def test_vocabulary_spanish(sim: Any) -> None:
    """The es vocabulary writes campaign scaffolds in Spanish."""
    run = sim(vocabulary=("es",))
    prompts = [_prompt(r) for r in run.of("campaign")]
    spanish = ("razonamiento", "paso", "respuesta", "Implementa", "código", "Califica", "plan")
    assert sum(any(w in p for w in spanish) for p in prompts) > 0.9 * len(prompts)


@pytest.mark.parametrize("name", VOCABULARIES)
def test_every_bank_fills_every_template(name: str) -> None:
    """Templates of each bank and category render with every slot filled; seeds differ."""
    b = bank(name)
    assert set(b.tasks) == set(CATEGORIES)
    assert not {"lang", "func", "file", "goal", "scale", "top", "n", "component"} & set(b.synonyms)
    slot = re.compile(
        r"\{(lang|fence|func|file|component|goal|scale|top|n|code|code_b|stub|"
        r"error|trace|question)\}"
    )
    rng = random.Random(5)
    for _ in range(40):
        text = CampaignText(rng, b, 6)
        for _ in range(10):
            _, system, prompt, scaffold = text.prompt(rng, 1.0)
            assert not slot.search(system) and not slot.search(prompt), scaffold
    assert make_template(random.Random(1), b).plain != make_template(random.Random(2), b).plain


# --- knobs and the command ------------------------------------------------------------


def test_presets_and_explicit_knobs() -> None:
    """A preset sets its knobs; an explicit knob wins over the preset; bad values are refused."""
    assert resolve("low-and-slow", {}).campaign_accounts == 2500
    assert resolve("low-and-slow", {}).per_account_daily == 5.0
    assert resolve("proxies5x", {}).proxies == 1500
    assert resolve("paraphrased", {"paraphrase": 0.2}).paraphrase == 0.2
    assert resolve("benign-only", {}).campaigns == 0
    assert set(PRESETS) == {
        "default", "paraphrased", "jittered", "proxies5x", "low-and-slow", "cover30",
        "benign-only",
    }  # fmt: skip
    with pytest.raises(ValueError, match="unknown scenario"):
        resolve("nope", {})
    with pytest.raises(ValueError, match="--campaign-accounts must be at least --campaigns"):
        resolve("default", {"campaigns": 3, "campaign_accounts": 2})


def test_command_writes_the_files_and_documents_every_knob(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`simulate` writes DIR and prints counts; --help names every knob; bad knobs exit 2."""
    import argparse

    parser = argparse.ArgumentParser(prog="distill-guard")
    sim_cli.register(parser.add_subparsers())
    ns = parser.parse_args(
        ["simulate", "--out", str(tmp_path), "--benign-accounts", "20", "--campaign-accounts",
         "5", "--days", "1", "--seed", "9"]
    )  # fmt: skip
    assert ns.func(ns) == 0
    assert "requests" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(FILES)
    with pytest.raises(SystemExit):
        parser.parse_args(["simulate", "--help"])
    help_text = capsys.readouterr().out
    for knob in Knobs.__dataclass_fields__:
        assert "--" + knob.replace("_", "-") in help_text, knob
    with pytest.raises(SystemExit):
        parser.parse_args(["simulate", "--out", str(tmp_path), "--paraphrase", "2"])
    assert "is not from 0 to 1" in capsys.readouterr().err
    blocked = tmp_path / "file"
    blocked.write_text("")
    ns = parser.parse_args(["simulate", "--out", str(blocked / "sub"), "--benign-accounts", "5"])
    assert ns.func(ns) == 1
    assert "cannot write" in capsys.readouterr().err


def test_addresses_avoid_more_specific_rows() -> None:
    """Addresses drawn in M247's GB /16 never fall in the NL /18 carved out of it."""
    nets = Networks()
    gb = next(n for n in nets.all if str(n.network) == "146.70.0.0/16")
    inner = ipaddress.ip_network("146.70.128.0/18")
    rng = random.Random(0)
    assert not any(ipaddress.ip_address(draw_address(rng, gb)) in inner for _ in range(2000))
