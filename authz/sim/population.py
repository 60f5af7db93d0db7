"""Simulated accounts: the record every class shares, and the benign population.

Benign accounts come in four groups: individuals (most of them), employees of
organisations behind one or two NAT addresses, CI jobs of enterprise customers,
and researchers. CI jobs and researchers are the hard negatives: templated
prompts at regular intervals, and requests for step-by-step reasoning with
large thinking budgets. Campaign accounts are built in campaign.py.
"""

from __future__ import annotations

import bisect
import math
import random
from dataclasses import dataclass, field

from authz.keys import check_key_shape
from authz.sim.benign_text import Style, ci_jobs
from authz.sim.clients import Client, make_client
from authz.sim.networks import FREE_COUNTRIES, Net, Networks, draw_address

DAY = 86400
YEAR = 365 * DAY
# country, weight among users, UTC offsets (hours, northern spring) users there live in
COUNTRIES: tuple[tuple[str, float, tuple[float, ...]], ...] = (
    ("US", 28, (-7, -5, -4, -4)),
    ("IN", 8, (5.5,)),
    ("GB", 7, (1,)),
    ("DE", 6, (2,)),
    ("FR", 4, (2,)),
    ("BR", 4, (-3,)),
    ("JP", 4, (9,)),
    ("CA", 3, (-4, -7)),
    ("ES", 3, (2,)),
    ("MX", 2, (-6,)),
    ("IT", 2, (2,)),
    ("NL", 2, (2,)),
    ("KR", 2, (9,)),
    ("AU", 2, (10,)),
    ("PL", 2, (2,)),
    ("SE", 1, (2,)),
    ("TR", 1, (3,)),
    ("ID", 1, (7,)),
    ("SG", 1, (8,)),
    ("PH", 1, (8,)),
    ("VN", 1, (7,)),
    ("BE", 1, (2,)),
    ("PT", 1, (1,)),
    ("AT", 1, (2,)),
    ("DK", 0.5, (2,)),
    ("FI", 0.5, (3,)),
    ("RO", 0.5, (3,)),
    ("HU", 0.5, (2,)),
    ("ZA", 0.5, (2,)),
)
SPANISH_COUNTRIES = frozenset({"ES", "MX"})
# Shares of the benign accounts.
GROUP_SHARES = {"nat": 0.13, "ci": 0.015, "researcher": 0.05}
SYSTEM_PROMPTS = (
    "You are a helpful assistant.",
    "Answer concisely.",
    "You are a friendly tutor.",
    "Reply in plain text.",
)


@dataclass(slots=True)
class SimAccount:
    """One simulated account: identity, key, client, networks and behaviour."""

    index: int
    account: str
    entity: str
    tier: str
    kyc: str
    country: str
    created: int  # epoch seconds
    key_id: str
    secret: str
    group: str  # individual, nat, ci, researcher, or the campaign id
    clients: list[Client]
    client_weights: list[float]
    tz: float = 0.0  # hours from UTC where the user lives
    homes: list[tuple[int, str]] = field(default_factory=list)  # (since, address)
    others: list[str] = field(default_factory=list)  # addresses used now and then
    other_share: float = 0.0
    style: Style | None = None
    active_from: int = 0  # epoch seconds
    banned: int | None = None
    replaces: str | None = None
    campaign: int | None = None
    # behaviour
    median: float = 3.0  # requests on an active day
    spread: float = 1.0
    p_active: float = 0.5
    p_frontier: float = 0.5
    adopt_at: float = math.inf  # when the user starts using the new model
    thinking: float = 0.0  # share of requests asking for reasoning
    system: str | None = None
    ci_jobs: list[tuple[str, str]] = field(default_factory=list)
    ci_interval: int = 0  # seconds between scheduled CI jobs
    repo: str = ""
    headers: list[str] = field(default_factory=list)  # each client's header JSON

    @property
    def hard_negative(self) -> bool:
        """Benign accounts that look like campaigns in some respect."""
        return self.group in ("ci", "researcher")

    @property
    def is_campaign(self) -> bool:
        """Whether the account belongs to a campaign."""
        return self.campaign is not None

    def address(self, t: float, rng: random.Random) -> str:
        """The address a benign account calls from at time t."""
        if self.others and rng.random() < self.other_share:
            return rng.choice(self.others)
        i = bisect.bisect_right(self.homes, (t, "~")) - 1
        return self.homes[max(i, 0)][1]

    def client_index(self, rng: random.Random) -> int:
        """Which of the account's clients sends the next request."""
        if len(self.clients) == 1:
            return 0
        return rng.choices(range(len(self.clients)), self.client_weights)[0]


class Ids:
    """Unique account ids, entity ids, key ids and key secrets from one stream."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.seen: set[str] = set()

    def _hex(self, prefix: str, bits: int) -> str:
        while True:
            text = prefix + f"{self.rng.getrandbits(bits):0{bits // 4}x}"
            if text not in self.seen:
                self.seen.add(text)
                return text

    def account(self) -> str:
        """A new account id."""
        return self._hex("a", 40)

    def entity(self) -> str:
        """A new entity id."""
        return self._hex("e", 40)

    def key(self) -> tuple[str, str]:
        """A new (key id, secret)."""
        secret = self._hex("dg_sim_", 160)
        check_key_shape(secret)
        return self._hex("k_", 48), secret


def pick_country(rng: random.Random) -> tuple[str, float]:
    """A country and a UTC offset for a user."""
    country, _, offsets = rng.choices(COUNTRIES, [w for _, w, _ in COUNTRIES])[0]
    return country, rng.choice(offsets)


def home_addresses(
    rng: random.Random, nets: Networks, country: str, period: Period
) -> list[tuple[int, str]]:
    """A home address, and the new ones a dynamic-IP ISP hands out over the period."""
    access = nets.access(country)
    v6 = nets.select(kinds=("residential", "mobile"), countries=frozenset({country}), v6=True)
    net: Net = rng.choice(v6) if v6 and rng.random() < 0.15 else rng.choice(access)
    homes = [(0, draw_address(rng, net))]
    t = period.start + rng.expovariate(1 / (12 * DAY))
    while t < period.end:
        homes.append((int(t), draw_address(rng, net)))
        t += rng.expovariate(1 / (12 * DAY))
    return homes


@dataclass(frozen=True, slots=True)
class Period:
    """The simulated period and the new model's release."""

    start: int  # epoch seconds
    days: int
    pivot: int  # epoch seconds of the release

    @property
    def end(self) -> int:
        """The end of the period (exclusive)."""
        return self.start + self.days * DAY


def build_benign(
    rng: random.Random, ids: Ids, nets: Networks, count: int, period: Period
) -> list[SimAccount]:
    """The benign population: `count` accounts of every benign group."""
    b = _Benign(rng, ids, nets, period)
    n_nat = round(count * GROUP_SHARES["nat"])
    n_ci = round(count * GROUP_SHARES["ci"])
    n_res = round(count * GROUP_SHARES["researcher"])
    out: list[SimAccount] = []
    while len(out) < n_nat:
        out += b.organisation(min(rng.randint(5, 40), n_nat - len(out)))
    while len(out) < n_nat + n_ci:
        out += b.ci_entity(min(rng.randint(1, 3), n_nat + n_ci - len(out)))
    out += [b.researcher() for _ in range(n_res)]
    while len(out) < count:
        out.append(b.individual())
    return out


class _Benign:
    """Makes benign accounts of each group from one random stream."""

    def __init__(self, rng: random.Random, ids: Ids, nets: Networks, period: Period) -> None:
        self.rng, self.ids, self.nets, self.period = rng, ids, nets, period

    def _account(
        self, group: str, entity: str, *, tier: str, country: str, created: int | None = None
    ) -> SimAccount:
        rng = self.rng
        if created is None:  # a long-standing account: opened up to three years ago
            created = self.period.start - rng.randint(DAY, 3 * YEAR)
        key_id, secret = self.ids.key()
        return SimAccount(
            index=-1,
            account=self.ids.account(),
            entity=entity,
            tier=tier,
            kyc="verified"
            if tier != "free"
            else rng.choice(("unverified", "unverified", "pending")),
            country=country,
            created=created,
            key_id=key_id,
            secret=secret,
            group=group,
            clients=[],
            client_weights=[],
            active_from=created,
        )

    def _personal_clients(self, acct: SimAccount, families: tuple[str, ...] = ()) -> None:
        rng = self.rng
        acct.clients = [make_client(rng, rng.choice(families) if families else None)]
        acct.client_weights = [1.0]
        if rng.random() < 0.15:  # a second tool now and then
            acct.clients.append(make_client(rng, rng.choice(families) if families else None))
            acct.client_weights = [0.7, 0.3]

    def _adoption(self, mean_days: float) -> float:
        return self.period.pivot + self.rng.expovariate(1 / (mean_days * DAY))

    def individual(self) -> SimAccount:
        """A person on their own account: free (unverified) or pro."""
        rng, period = self.rng, self.period
        country, tz = pick_country(rng)
        free = country in FREE_COUNTRIES and rng.random() < 0.2
        # A few accounts are opened during the period: new customers, not only campaigns.
        created = None
        if rng.random() < 0.04:
            created = period.start + rng.randint(0, max(period.days - 1, 0) * DAY)
        tier = "free" if free else "pro"
        acct = self._account(
            "individual", self.ids.entity(), tier=tier, country=country, created=created
        )
        acct.tz = tz
        self._personal_clients(acct)
        acct.homes = home_addresses(rng, self.nets, country, period)
        if rng.random() < 0.25:  # a phone or a workplace now and then
            acct.others = [draw_address(rng, rng.choice(self.nets.access(country)))]
            acct.other_share = 0.2
        acct.style = Style.draw(rng, 0.7 if country in SPANISH_COUNTRIES else 0.0)
        acct.median = rng.lognormvariate(math.log(3), 0.6)
        acct.spread = 0.9
        acct.p_active = rng.uniform(0.15, 0.85)
        acct.p_frontier = rng.uniform(0.2, 0.9)
        acct.adopt_at = self._adoption(6)
        acct.thinking = rng.choice((0.0, 0.0, 0.05, 0.2))
        if rng.random() < 0.1:
            acct.system = rng.choice(SYSTEM_PROMPTS)
        return acct

    def organisation(self, size: int) -> list[SimAccount]:
        """Employees of one organisation behind one or two NAT addresses."""
        rng = self.rng
        country, tz = pick_country(rng)
        entity = self.ids.entity()
        tier = "enterprise" if rng.random() < 0.4 else "pro"
        net = rng.choice(self.nets.access(country))
        nat = [draw_address(rng, net) for _ in range(rng.choice((1, 1, 2)))]
        internal = make_client(rng) if rng.random() < 0.4 else None  # an in-house tool
        out = []
        for _ in range(size):
            acct = self._account("nat", entity, tier=tier, country=country)
            acct.tz = tz
            self._personal_clients(acct)
            if internal is not None and rng.random() < 0.6:
                acct.clients, acct.client_weights = [internal], [1.0]
            acct.homes = [(0, nat[0])]
            acct.others, acct.other_share = nat[1:], 0.5 if len(nat) > 1 else 0.0
            acct.style = Style.draw(rng, 0.7 if country in SPANISH_COUNTRIES else 0.0)
            acct.median = rng.lognormvariate(math.log(4), 0.5)
            acct.spread = 0.7
            acct.p_active = rng.uniform(0.5, 0.95)
            acct.p_frontier = rng.uniform(0.4, 0.9)
            acct.adopt_at = self._adoption(4)
            acct.thinking = rng.choice((0.0, 0.05, 0.1))
            out.append(acct)
        return out

    def ci_entity(self, size: int) -> list[SimAccount]:
        """An enterprise customer's CI: 1 to 3 accounts, one client, a few cloud addresses."""
        rng = self.rng
        country, tz = pick_country(rng)
        entity = self.ids.entity()
        family = rng.choice(("python-httpx", "openai-python", "anthropic-python", "go"))
        client = make_client(rng, family)
        hosting = self.nets.select(kinds=("hosting",))
        addresses = [draw_address(rng, rng.choice(hosting)) for _ in range(rng.randint(1, 4))]
        jobs = ci_jobs(rng)
        repo = rng.choice(("billing", "web", "platform", "mobile-app", "data", "infra", "search"))
        # Someone changes the pipeline's model setting some days after the release.
        switch = self.period.pivot + rng.uniform(3, 10) * DAY
        out = []
        for _ in range(size):
            acct = self._account("ci", entity, tier="enterprise", country=country)
            acct.tz = tz
            acct.clients, acct.client_weights = [client], [1.0]
            acct.homes = [(0, addresses[0])]
            acct.others, acct.other_share = addresses[1:], 0.6 if len(addresses) > 1 else 0.0
            acct.ci_jobs = jobs
            acct.ci_interval = rng.choice((15, 20, 30, 60)) * 60
            acct.repo = f"{repo}-{rng.randint(1, 9)}"
            acct.p_frontier = rng.choice((0.0, 1.0))
            acct.adopt_at = switch
            out.append(acct)
        return out

    def researcher(self) -> SimAccount:
        """A verified researcher: reasoning puzzles, evaluation rubrics, big thinking budgets."""
        rng = self.rng
        country, tz = pick_country(rng)
        acct = self._account("researcher", self.ids.entity(), tier="pro", country=country)
        acct.tz = tz
        self._personal_clients(acct, ("anthropic-python", "openai-python", "python-httpx"))
        acct.homes = home_addresses(rng, self.nets, country, self.period)
        acct.median = rng.lognormvariate(math.log(10), 0.5)
        acct.spread = 0.8
        acct.p_active = rng.uniform(0.4, 0.8)
        acct.p_frontier = 0.9
        acct.adopt_at = self._adoption(1)  # researchers try a new model at once
        acct.thinking = 0.8
        return acct
