"""Distillation campaigns: farmed accounts in sign-up cohorts, proxy pools, a scheduler, bans.

A campaign's accounts sign up in bursts, most unverified on the free tier and
a share verified on `pro` through a farmed path. A scheduler hands requests to
its accounts like a load balancer: each UTC day every account gets about
`per_account_daily` requests (never more than `daily_cap`), dealt out round
robin at an even pace across the day. `timing_jitter` blurs that: the deal
order changes from day to day, the pace follows a human-looking daily curve,
and each request moves by up to a share of the account's own interval.

Bans (standing in for the provider's manual enforcement) stop an account's
traffic at a random moment; the campaign opens a replacement a few hours
later, which takes over the dealt requests from then on.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from authz.sim.banks import bank
from authz.sim.benign_text import Style
from authz.sim.campaign_text import CampaignText
from authz.sim.clients import Client, make_client
from authz.sim.knobs import Knobs
from authz.sim.networks import FREE_COUNTRIES, Networks, draw_address
from authz.sim.population import DAY, Ids, SimAccount
from authz.sim.schedule import PERSONAL_HOURS

# Countries farmed identities claim: spread wide, none embargoed.
KYC_COUNTRIES = (
    "US",
    "GB",
    "DE",
    "FR",
    "NL",
    "PL",
    "IN",
    "ID",
    "VN",
    "PH",
    "BR",
    "MX",
    "NG",
    "KE",
    "PK",
    "BD",
    "EG",
    "UA",
    "KZ",
    "TR",
    "MY",
    "TH",
    "CO",
    "AR",
    "RO",
    "ZA",
)
CLIENT_FAMILIES = (
    "python-httpx",
    "openai-python",
    "anthropic-python",
    "go",
    "aiohttp",
    "python-requests",
)
# Shares of a proxy pool: residential and mobile addresses where the free tier is offered,
# elsewhere, hosting networks, restricted countries.
POOL_SHARES = (("free", 0.70), ("elsewhere", 0.12), ("hosting", 0.15), ("restricted", 0.03))


@dataclass(slots=True)
class Campaign:
    """One operator's campaign."""

    index: int
    id: str
    start: int  # epoch seconds of its first request
    clients: list[Client]
    client_weights: list[float]
    pool: list[str]  # proxy addresses
    free_pool: list[str]  # the part that suits free-tier accounts
    text: CampaignText
    vocabulary: str
    rotation: float  # seconds an account keeps one proxy
    mimic_tz: float  # the time zone a jittered schedule imitates
    accounts: list[SimAccount] = field(default_factory=list)
    order: dict[str, float] = field(default_factory=dict)  # the scheduler's deal order


def build_campaigns(
    k: Knobs, rng_of: dict[str, random.Random], ids: Ids, nets: Networks
) -> list[Campaign]:
    """The campaigns and their initial accounts."""
    out = []
    start = k.start_epoch
    sizes = (
        [
            k.campaign_accounts // k.campaigns + (i < k.campaign_accounts % k.campaigns)
            for i in range(k.campaigns)
        ]
        if k.campaigns
        else []
    )
    for i, size in enumerate(sizes):
        rng = rng_of[f"campaign-{i + 1}"]
        begin = start + int(rng.uniform(1, 8) * 3600 + rng.uniform(0, min(2, k.days / 4)) * DAY * i)
        families = rng.sample(CLIENT_FAMILIES, rng.randint(1, 3))
        vocabulary = k.vocabulary[i % len(k.vocabulary)]
        text = CampaignText(
            rng_of[f"campaign-{i + 1}-templates"], bank(vocabulary), rng.randint(12, 24)
        )
        pool, free_pool = proxy_pool(rng_of[f"campaign-{i + 1}-proxies"], nets, k.proxies)
        c = Campaign(
            index=i,
            id=f"campaign-{i + 1}",
            start=begin,
            clients=[make_client(rng, f) for f in families],
            client_weights=[rng.uniform(1, 4) for _ in families],
            pool=pool,
            free_pool=free_pool,
            text=text,
            vocabulary=vocabulary,
            rotation=rng.uniform(0.5, 3) * 3600,
            mimic_tz=rng.choice((-5, 0, 1, 8)),
        )
        made = 0
        while made < size:  # sign-up cohorts: bursts of accounts, a minute or two apart
            t = begin + rng.uniform(-5, min(2, k.days / 2)) * DAY
            for _ in range(min(rng.randint(20, 80), size - made)):
                t += rng.uniform(20, 120)
                verified = rng.random() < k.farmed_verified
                new_account(rng, ids, c, int(t), verified)
                made += 1
        out.append(c)
    return out


def new_account(
    rng: random.Random, ids: Ids, c: Campaign, created: int, verified: bool
) -> SimAccount:
    """A farmed account of campaign `c`, opened at `created`."""
    key_id, secret = ids.key()
    if verified:
        country = rng.choice(KYC_COUNTRIES)
    else:
        country = rng.choice(("US", "US", "US", "GB", "DE", "FR", "NL", "ES", "IT", "PL", "SE"))
    pick = rng.choices(range(len(c.clients)), c.client_weights)[0]
    acct = SimAccount(
        index=-1,
        account=ids.account(),
        entity=ids.entity(),
        tier="pro" if verified else "free",
        kyc="verified" if verified else "unverified",
        country=country,
        created=created,
        key_id=key_id,
        secret=secret,
        group=c.id,
        clients=[c.clients[pick]],
        client_weights=[1.0],
        active_from=max(c.start, created + int(rng.uniform(300, 3600))),
        campaign=c.index,
    )
    acct.style = Style.draw(rng)  # what its cover traffic looks like
    c.accounts.append(acct)
    c.order[acct.account] = rng.random()
    return acct


def proxy_pool(rng: random.Random, nets: Networks, size: int) -> tuple[list[str], list[str]]:
    """`size` distinct proxy addresses across many networks; and those suited to free accounts."""
    residential = ("residential", "mobile")
    free_v4 = nets.select(kinds=residential, countries=FREE_COUNTRIES)
    free_v6 = nets.select(kinds=residential, countries=FREE_COUNTRIES, v6=True)
    others = frozenset(n.country for n in nets.all) - FREE_COUNTRIES
    choices = {
        "free": (free_v4, free_v6),
        "elsewhere": (
            nets.select(kinds=residential, countries=others),
            nets.select(kinds=residential, countries=others, v6=True),
        ),
        "hosting": (nets.select(kinds=("hosting",)), nets.select(kinds=("hosting",), v6=True)),
        "restricted": (
            nets.select(kinds=("restricted",)),
            nets.select(kinds=("restricted",), v6=True),
        ),
    }
    pool: list[str] = []
    free: list[str] = []
    seen: set[str] = set()
    names = [name for name, _ in POOL_SHARES]
    shares = [share for _, share in POOL_SHARES]
    while len(pool) < size:
        kind = rng.choices(names, shares)[0]
        v4, v6 = choices[kind]
        net = rng.choice(v6) if v6 and rng.random() < 0.05 else rng.choice(v4)
        address = draw_address(rng, net)
        if address in seen:
            continue
        seen.add(address)
        pool.append(address)
        if kind == "free":
            free.append(address)
    return pool, free or pool


def _mimic(tz: float) -> list[float]:
    """Cumulative share of a human day by UTC hour, for people living at offset `tz`."""
    weights = [PERSONAL_HOURS[int((h + tz) % 24)] for h in range(24)]
    total, out = 0.0, [0.0]
    for w in weights:
        total += w
        out.append(total)
    return [x / total for x in out]


def _warp(u: float, cum: list[float]) -> float:
    """Map an even position in the day onto the human curve (inverse of its CDF)."""
    for h in range(24):
        if u <= cum[h + 1]:
            span = cum[h + 1] - cum[h]
            return (h + (u - cum[h]) / span) / 24 if span > 0 else h / 24
    return 1.0


def _count(rng: random.Random, k: Knobs) -> int:
    """Requests dealt to one account for one day: about per_account_daily, at most daily_cap."""
    spread = 0.04 + 0.16 * k.timing_jitter
    x = max(0.0, k.per_account_daily * (1 + spread * rng.gauss(0, 1)))
    n = math.floor(x) + (rng.random() < x - math.floor(x))
    return min(n, k.daily_cap)


def schedule(rng: random.Random, ids: Ids, c: Campaign, k: Knobs) -> dict[str, list[int]]:
    """Every account's request times (ms), day by day; bans and replacements happen on the way."""
    start, end = k.start_epoch, k.end_epoch
    j = k.timing_jitter
    cum = _mimic(c.mimic_tz)
    times: dict[str, list[int]] = {a.account: [] for a in c.accounts}
    for d in range(k.days):
        day0, day1 = start + d * DAY, start + (d + 1) * DAY
        for a in list(c.accounts):  # the provider bans a few accounts a day
            if a.active_from >= day1 or a.banned is not None:
                continue
            if rng.random() < k.ban_rate:
                lo = max(a.active_from, day0)
                a.banned = int(lo + rng.random() * (day1 - lo))
                opened = int(a.banned + k.replace_hours * 3600 * rng.uniform(0.5, 1.5))
                if opened < end:
                    repl = new_account(rng, ids, c, opened, a.kyc == "verified")
                    repl.replaces = a.account
                    times[repl.account] = []
        live = [
            a for a in c.accounts if a.active_from < day1 and (a.banned is None or a.banned > day0)
        ]
        reshuffle = j > 0 and rng.random() < j  # a new deal order for the day
        order = {a.account: rng.random() for a in live} if reshuffle else c.order
        live.sort(key=lambda a: order[a.account])
        counts = [_count(rng, k) for _ in live]
        deal: list[int] = []  # round robin: one request per account per round
        for r in range(max(counts, default=0)):
            deal += [i for i, n in enumerate(counts) if n > r]
        total = len(deal)
        for pos, i in enumerate(deal):
            u = (pos + 0.5) / total
            if j > 0:
                u = (1 - 0.6 * j) * u + 0.6 * j * _warp(u, cum)
                u = (u + j * (rng.random() - 0.5) / counts[i]) % 1.0
            ms = day0 * 1000 + int(u * DAY * 1000)  # stays inside the UTC day
            a = live[i]
            if a.active_from * 1000 <= ms < end * 1000 and (
                a.banned is None or ms < a.banned * 1000
            ):
                times[a.account].append(ms)
    return {name: sorted(ts) for name, ts in times.items()}
