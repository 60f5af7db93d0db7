"""A whole simulation run: build the population, schedule it, render and write the five files."""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from authz.keys import KeyHasher
from authz.sim import campaign as campaigns_mod
from authz.sim import schedule
from authz.sim.campaign import Campaign
from authz.sim.knobs import DAY, Knobs
from authz.sim.networks import Networks
from authz.sim.population import Ids, Period, SimAccount, build_benign
from authz.sim.render import FRONTIER, SMALL, Renderer

RELEASE_HOUR = 17  # UTC hour of the new model's release on the pivot day
FILES = ("accounts.jsonl", "traffic.jsonl", "labels.jsonl", "scenario.json", "rules.yaml")
_INDEX_BITS = 24  # sort key: ms << 48 | account index << 24 | request number


def rules_path() -> Path:
    """The simulation's reference rules (package data)."""
    return Path(__file__).resolve().parent / "rules.yaml"


def rfc3339(epoch: float) -> str:
    """Epoch seconds as an RFC 3339 UTC time."""
    return datetime.fromtimestamp(int(epoch), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Result:
    """What a run wrote, for the command's summary."""

    accounts: int
    requests: int
    counts: dict[str, Any]


def _streams(seed: int, names: list[str]) -> dict[str, random.Random]:
    return {n: random.Random(f"distill-guard-sim/{seed}/{n}") for n in names}


def simulate(k: Knobs, out: Path) -> Result:
    """Generate the scenario `k` into directory `out` (created if missing)."""
    out.mkdir(parents=True, exist_ok=True)  # fail before the work, not after it
    start, end = k.start_epoch, k.end_epoch
    pivot = start + k.pivot_day * DAY + RELEASE_HOUR * 3600
    names = ["ids", "benign", "benign-times"]
    for i in range(1, k.campaigns + 1):
        names += [
            f"campaign-{i}",
            f"campaign-{i}-templates",
            f"campaign-{i}-proxies",
            f"campaign-{i}-times",
        ]
    rng = _streams(k.seed, names)
    nets = Networks()
    ids = Ids(rng["ids"])
    period = Period(start, k.days, pivot)
    benign = build_benign(rng["benign"], ids, nets, k.benign_accounts, period)
    camps = campaigns_mod.build_campaigns(k, rng, ids, nets)

    times: dict[str, list[int]] = {}
    t_rng = rng["benign-times"]
    for a in benign:
        if a.group == "ci":
            times[a.account] = schedule.ci(t_rng, a, start, end)
        elif a.group == "researcher":
            times[a.account] = schedule.researcher(t_rng, a, start, end)
        else:
            times[a.account] = schedule.sessions(t_rng, a, start, end, work=a.group == "nat")
    for c in camps:
        times.update(campaigns_mod.schedule(rng[f"{c.id}-times"], ids, c, k))

    accounts = sorted(benign + [a for c in camps for a in c.accounts], key=lambda a: a.account)
    events: list[int] = []
    for index, a in enumerate(accounts):
        a.index = index
        a.headers = [c.headers_json(a.secret) for c in a.clients]
        base = index << _INDEX_BITS
        events += [(ms << 48) | base | n for n, ms in enumerate(times[a.account])]
    if len(accounts) >= 1 << _INDEX_BITS:
        raise ValueError(f"{len(accounts)} accounts is more than a run can sort by")
    events.sort()

    _write_accounts(out / "accounts.jsonl", accounts)
    _write_labels(out / "labels.jsonl", accounts)
    counts = _write_traffic(out / "traffic.jsonl", events, accounts, camps=camps, k=k, pivot=pivot)
    scenario = _scenario(k, pivot, camps, accounts, counts)
    (out / "scenario.json").write_text(
        json.dumps(scenario, indent=2, sort_keys=True) + "\n", encoding="utf-8", newline="\n"
    )
    (out / "rules.yaml").write_bytes(rules_path().read_bytes())
    return Result(len(accounts), len(events), scenario["counts"])


def _write_lines(path: Path, lines: list[str]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as f:
        f.writelines(lines)


def _write_accounts(path: Path, accounts: list[SimAccount]) -> None:
    hasher = KeyHasher(None)
    _write_lines(
        path,
        [
            json.dumps(
                {
                    "account": a.account,
                    "entity": a.entity,
                    "tier": a.tier,
                    "kyc": a.kyc,
                    "country": a.country,
                    "created": rfc3339(a.created),
                    "keys": [{"id": a.key_id, "sha256": hasher.digest(a.secret)}],
                }
            )
            + "\n"
            for a in accounts
        ],
    )


def _write_labels(path: Path, accounts: list[SimAccount]) -> None:
    _write_lines(
        path,
        [
            json.dumps(
                {
                    "account": a.account,
                    "entity": a.entity,
                    "class": "campaign" if a.is_campaign else "benign",
                    "group": a.group,
                    "hard_negative": a.hard_negative,
                    "tier": a.tier,
                    "kyc": a.kyc,
                    "opened": a.created,
                    "banned": a.banned,
                    "replaces": a.replaces,
                }
            )
            + "\n"
            for a in accounts
        ],
    )


def _write_traffic(
    path: Path,
    events: list[int],
    accounts: list[SimAccount],
    *,
    camps: list[Campaign],
    k: Knobs,
    pivot: int,
) -> Counter[str]:
    renderer = Renderer(
        k.seed,
        camps,
        new_model=k.new_model,
        pivot=pivot,
        paraphrase=k.paraphrase,
        cover=k.cover_traffic,
    )
    counts: Counter[str] = Counter()
    mask = (1 << _INDEX_BITS) - 1
    with path.open("w", encoding="utf-8", newline="\n") as f:
        chunk: list[str] = []
        for key in events:
            a = accounts[(key >> _INDEX_BITS) & mask]
            chunk.append(renderer.line(key >> 48, a))
            counts[a.group] += 1
            if len(chunk) >= 4096:
                f.writelines(chunk)
                chunk.clear()
        f.writelines(chunk)
    return counts


def _scenario(
    k: Knobs, pivot: int, camps: list[Campaign], accounts: list[SimAccount], requests: Counter[str]
) -> dict[str, Any]:
    groups = Counter(a.group for a in accounts)
    benign_groups = ("individual", "nat", "ci", "researcher")

    def split(c: Counter[str]) -> dict[str, Any]:
        benign = {g: c[g] for g in benign_groups}
        campaign = {x.id: c[x.id] for x in camps}
        return {
            "benign": {**benign, "total": sum(benign.values())},
            "campaign": {**campaign, "total": sum(campaign.values())},
            "total": sum(benign.values()) + sum(campaign.values()),
        }

    return {
        "format": "distill-guard-sim/1",
        "seed": k.seed,
        "scenario": k.scenario,
        "knobs": k.as_dict(),
        "start": k.start_epoch,
        "start_time": rfc3339(k.start_epoch),
        "end": k.end_epoch,
        "end_time": rfc3339(k.end_epoch),
        "models": [SMALL, FRONTIER, k.new_model],
        "new_model": k.new_model,
        "pivot_ts": pivot,
        "pivot_time": rfc3339(pivot),
        "campaigns": [
            {
                "id": c.id,
                "start": c.start,
                "start_time": rfc3339(c.start),
                "vocabulary": c.vocabulary,
                "templates": len(c.text.templates),
                "client_user_agents": [x.user_agent for x in c.clients],
                "proxies": len(c.pool),
                "proxy_rotation_s": round(c.rotation),
                "accounts": len(c.accounts),
                "verified_accounts": sum(a.kyc == "verified" for a in c.accounts),
                "banned": sum(a.banned is not None for a in c.accounts),
                "replacements": sum(a.replaces is not None for a in c.accounts),
                "requests": requests[c.id],
            }
            for c in camps
        ],
        "counts": {"accounts": split(groups), "requests": split(requests)},
    }
