"""Synthetic audit records for tests and benchmarks: `audit generate` and `audit bench`.

Records are built as dicts already in the canonical JSON shape of AuditRecord
(proto3 JSON mapping: snake_case names, uint64 as strings, defaults and empty
lists left out, keys sorted), so no protobuf message is made per record; the
tests check that every line parses with `json_format.ParseDict` and prints back
unchanged. Generated records carry no hash chain (`sequence`, `prev_hash`,
`hash`): they feed rollups and queries, not `audit verify`.

The population: accounts of entities across countries, most calling from a few
home networks of their KYC country; some from cloud networks; a few travel; a
few (about 3%) behave like extraction: high volume from many hosting networks
in several countries, volume-spike signals and rate-limit denials; a few call
from embargoed countries and are denied; some requests carry no valid key.
Traffic follows a daily cycle (busiest around 15:00 UTC).
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import json
import math
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import redis

from authz.audit.rollup import (
    DIMENSIONS,
    RECORD_FIELD,
    STATS_KEY,
    STREAM,
    Client,
    redis_client,
)
from authz.clock import SystemClock
from authz.procs import Child, free_port, stop_all, wait_until

# (asn, organisation) of access networks per country, with the country's share of traffic.
ISPS: dict[str, tuple[float, list[tuple[int, str]]]] = {
    "US": (30, [(7922, "COMCAST-7922"), (701, "UUNET"), (7018, "ATT-INTERNET4")]),
    "DE": (8, [(3320, "Deutsche Telekom AG"), (3209, "Vodafone GmbH")]),
    "GB": (8, [(2856, "British Telecommunications PLC"), (5089, "Virgin Media Limited")]),
    "FR": (6, [(3215, "Orange S.A."), (12322, "Free SAS")]),
    "IN": (8, [(55836, "Reliance Jio Infocomm Limited"), (24560, "Bharti Airtel Ltd.")]),
    "JP": (5, [(2516, "KDDI CORPORATION"), (4713, "NTT Communications Corporation")]),
    "BR": (5, [(28573, "Claro NXT Telecomunicacoes Ltda"), (18881, "TELEFONICA BRASIL S.A")]),
    "CA": (4, [(812, "Rogers Communications Canada Inc."), (577, "Bell Canada")]),
    "NL": (3, [(1136, "KPN B.V."), (33915, "Vodafone Libertel B.V.")]),
    "SG": (3, [(9506, "Singtel Fibre Broadband")]),
    "KR": (3, [(4766, "Korea Telecom")]),
    "AU": (2, [(1221, "Telstra Limited")]),
    "CN": (4, [(4134, "CHINANET-BACKBONE"), (4837, "CHINA UNICOM China169 Backbone")]),
    "RU": (2, [(12389, "PJSC Rostelecom"), (8359, "MTS PJSC")]),
}
EMBARGOED: dict[str, list[tuple[int, str]]] = {
    "IR": [
        (58224, "Iran Telecommunication Company PJS"),
        (197207, "Mobile Communication Company of Iran PLC"),
    ],
    "KP": [(131279, "Ryugyong-dong")],
    "SY": [(29256, "Syrian Telecom")],
    "CU": [(27725, "Empresa de Telecomunicaciones de Cuba, S.A.")],
}
HOSTING: list[tuple[int, str]] = [
    (16509, "AMAZON-02"),
    (14061, "DIGITALOCEAN-ASN"),
    (16276, "OVH SAS"),
    (24940, "Hetzner Online GmbH"),
    (9009, "M247 Europe SRL"),
    (396982, "GOOGLE-CLOUD-PLATFORM"),
]
HOSTING_COUNTRIES = ("US", "DE", "NL", "SG", "FR", "GB", "JP")
TIERS = (("free", 40), ("pro", 45), ("enterprise", 15))
LIMITS = {"free": 60, "pro": 600, "enterprise": 6000}  # account-requests-1m
MODELS = (
    ("frontier-2", "/v1/chat/completions", 60),
    ("frontier-2-mini", "/v1/chat/completions", 30),
    ("embed-1", "/v1/embeddings", 10),
)
RULES_VERSIONS = ("prod@3f9a1c2e7b10", "prod@8d41e07c55a2")  # the rules change halfway


@dataclass(frozen=True, slots=True)
class Network:
    """A /24 (or /48) clients call from, with what the GeoIP and ASN databases say of it.

    `head`, `mid` and `cc` are its pre-rendered JSON: from "address_kind" to the
    client_ip's host part, then client_network, then country.
    """

    cidr: str
    country: str
    v6: bool
    head: str
    mid: str
    cc: str


@dataclass(frozen=True, slots=True)
class Account:
    """A synthetic account, how it behaves, and its pre-rendered JSON fields."""

    name: str
    entity: str
    tier: str
    kyc: str
    kyc_country: str
    profile: str  # normal, cloud, traveller, extractor, embargoed
    home: tuple[Network, ...]
    away: tuple[Network, ...]  # networks of other countries it sometimes calls from
    away_share: float
    ident: str  # "key_id":…,"kyc":…,"kyc_country":…,

    @property
    def mismatch(self) -> bool:
        """Whether calls from outside its KYC country raise the kyc-mismatch flag."""
        return self.kyc == "unverified"


class Population:
    """Accounts, entities and networks drawn from one seed."""

    def __init__(self, rng: random.Random, accounts: int) -> None:
        self.rng = rng
        self._nets: set[str] = set()
        countries = list(ISPS)
        country_w = [ISPS[c][0] for c in countries]
        self.accounts: list[Account] = []
        weights: list[float] = []
        entity_left, entity, k = 0, "", 0
        for i in range(accounts):
            if entity_left == 0:  # an entity owns one to four accounts
                entity_left, k = rng.choice((1, 1, 1, 2, 2, 3, 4)), 0
                entity = f"{rng.choice(_WORDS)}-{rng.choice(_SUFFIXES)}-{i:04d}"
            entity_left, k = entity_left - 1, k + 1
            tier = rng.choices([t for t, _ in TIERS], [w for _, w in TIERS])[0]
            kyc = "unverified" if tier == "free" and rng.random() < 0.7 else "verified"
            home_cc = rng.choices(countries, country_w)[0]
            profile = rng.choices(
                ("normal", "cloud", "traveller", "extractor", "embargoed"), (82, 7, 6, 3, 2)
            )[0]
            home = tuple(self._isp_net(home_cc) for _ in range(rng.randint(1, 3)))
            away: tuple[Network, ...] = ()
            away_share, weight = 0.0, min(rng.paretovariate(1.2), 200.0)
            if profile == "cloud":
                home = tuple(self._hosting_net(home_cc) for _ in range(rng.randint(2, 6)))
            elif profile == "traveller":
                away = tuple(self._isp_net(rng.choice(countries)) for _ in range(rng.randint(1, 3)))
                away_share = 0.25
            elif profile == "extractor":
                spread = rng.sample(HOSTING_COUNTRIES, rng.randint(3, 6))
                away = tuple(
                    self._hosting_net(rng.choice(spread)) for _ in range(rng.randint(30, 150))
                )
                away_share, weight = 0.9, weight * 30 + 50
                kyc = "unverified" if rng.random() < 0.6 else kyc
            elif profile == "embargoed":
                cc = rng.choice(list(EMBARGOED))
                away = tuple(self._embargoed_net(cc) for _ in range(rng.randint(1, 4)))
                away_share = 0.8
            name = entity if k == 1 else f"{entity}-{_TEAMS[k]}"
            key_id = f"k_{i:05d}_{rng.getrandbits(24):06x}"
            ident = f'"key_id":"{key_id}","kyc":"{kyc}","kyc_country":"{home_cc}",'
            self.accounts.append(
                Account(name, entity, tier, kyc, home_cc, profile, home, away, away_share, ident)
            )
            weights.append(weight)
        total = 0.0
        self.cum_weights = []
        for w in weights:
            total += w
            self.cum_weights.append(total)
        self.anonymous = tuple(
            self._isp_net(rng.choices(countries, country_w)[0]) for _ in range(50)
        ) + tuple(self._hosting_net(rng.choice(HOSTING_COUNTRIES)) for _ in range(50))

    def _network(self, country: str, asn: int, org: str) -> Network:
        rng = self.rng
        while True:
            if rng.random() < 0.1:
                groups = (
                    0x2001 + rng.randrange(0x1000),
                    rng.randrange(0x10000),
                    rng.randrange(0x10000),
                )
                head = "{:x}:{:x}:{:x}".format(*groups)
                cidr, prefix, v6 = f"{head}::/48", f"{head}::", True
            else:
                a = rng.choice(_FIRST_OCTETS)
                b, c = rng.randrange(256), rng.randrange(256)
                cidr, prefix, v6 = f"{a}.{b}.{c}.0/24", f"{a}.{b}.{c}.", False
            if cidr not in self._nets:
                self._nets.add(cidr)
                break
        head = f'"address_kind":"public","as_org":{json.dumps(org)},"asn":{asn},"client_ip":"'
        mid = f'","client_network":"{cidr}",'
        return Network(cidr, country, v6, head + prefix, mid, f'"country":"{country}",')

    def _isp_net(self, country: str) -> Network:
        asn, org = self.rng.choice(ISPS[country][1])
        return self._network(country, asn, org)

    def _hosting_net(self, country: str) -> Network:
        asn, org = self.rng.choice(HOSTING)
        return self._network(country, asn, org)

    def _embargoed_net(self, country: str) -> Network:
        asn, org = self.rng.choice(EMBARGOED[country])
        return self._network(country, asn, org)


_WORDS = ("acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "tyrell",
          "cyberdyne", "soylent", "aperture", "vandelay", "wonka", "oscorp", "massive", "pied",
          "nakatomi")  # fmt: skip
_SUFFIXES = ("labs", "ai", "research", "corp", "dev", "data", "systems", "io")
_TEAMS = ("", "", "eval", "batch", "ml")  # the first account is named after its entity
_FIRST_OCTETS = tuple(
    a for a in range(1, 224) if a not in {10, 100, 127, 169, 172, 192, 198, 203}
)  # public-looking


class DiurnalTime:
    """Maps the i-th of n records to a time in [start, start + days), busiest at 15:00 UTC.

    The map is monotonic, so records come out in time order, as a sink writes them.
    """

    def __init__(self, start: float, days: float, n: int) -> None:
        self.start, self.n = start, max(n, 1)
        hours = max(1, math.ceil(days * 24))
        first_hour = int(start // 3600)
        weights = [
            1.0 + 0.6 * math.sin(2 * math.pi * ((first_hour + h) % 24 - 9) / 24)
            for h in range(hours)
        ]
        total = sum(weights)
        self.cum = [0.0]
        for w in weights:
            self.cum.append(self.cum[-1] + w / total)
        self.weights = [w / total for w in weights]

    def at(self, i: float) -> float:
        """Epoch seconds of record `i` (fractional i spreads records inside their slot)."""
        u = i / self.n
        h = min(bisect.bisect_right(self.cum, u) - 1, len(self.weights) - 1)
        return self.start + (h + (u - self.cum[h]) / self.weights[h]) * 3600


Common = tuple[str, str, str, str, str]  # time, decision_id, request_id, trace part, rules_version


class Generator:
    """Synthetic records as canonical JSON lines, in time order.

    Lines are rendered from pre-built JSON fragments in sorted key order rather
    than through json.dumps (four times faster); the tests hold every line to
    `json_format.ParseDict` and back. Per record, one 64-bit random word drives
    the small choices and one 48-byte draw gives the ids.
    """

    def __init__(
        self,
        records: int,
        *,
        seed: int = 1,
        start: float,
        days: float = 7.0,
        accounts: int | None = None,
    ) -> None:
        self.records = records
        self.rng = random.Random(seed)
        self.population = Population(self.rng, accounts or max(30, min(5000, records // 400)))
        self.clock = DiurnalTime(start, days, records)
        rng = self.rng
        # (request_bytes, estimated_tokens) drawn ahead: 1024 of each kind of caller.
        self._sizes = {
            extractor: [_size_tokens(rng, 6000 if extractor else 1500) for _ in range(1024)]
            for extractor in (False, True)
        }
        self._minute = -1
        self._prefix = ""

    def _stamp(self, when: float) -> str:
        ms = int(when * 1000)
        seconds, millis = divmod(ms, 1000)
        minute, sec = divmod(seconds, 60)
        if minute != self._minute:
            self._minute = minute
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:", time.gmtime(minute * 60))
        if millis:
            return f"{self._prefix}{sec:02d}.{millis:03d}Z"
        return f"{self._prefix}{sec:02d}Z"

    def lines(self) -> Iterator[str]:
        """The records as canonical JSON lines (without the newline)."""
        rng = self.rng
        pop = self.population
        rand, randbytes = rng.random, rng.randbytes
        at = self.clock.at
        half = self.records // 2
        chunk = 4096
        for first in range(0, self.records, chunk):
            count = min(chunk, self.records - first)
            callers = rng.choices(pop.accounts, cum_weights=pop.cum_weights, k=count)
            for offset, acct in enumerate(callers):
                i = first + offset
                ids = randbytes(48).hex()
                rid = f"{ids[64:72]}-{ids[72:76]}-4{ids[77:80]}-a{ids[81:84]}-{ids[84:96]}"
                common: Common = (
                    self._stamp(at(i + rand())),
                    ids[:32],
                    rid,
                    f',"trace_id":"{ids[32:64]}"' if ids[95] < "c" else "",
                    RULES_VERSIONS[i >= half],
                )
                if rand() < 0.01:
                    yield self._anonymous(common)
                else:
                    yield self._called(acct, common)

    def dicts(self) -> Iterator[dict[str, Any]]:
        """The records as dicts (parsed back from the lines)."""
        for line in self.lines():
            yield json.loads(line)

    def _anonymous(self, common: Common) -> str:
        stamp, did, rid, trace, version = common
        r = self.rng.getrandbits(32)
        nets = self.population.anonymous
        net = nets[r % len(nets)]
        host = f"{(r >> 8) & 0xFFFF:x}" if net.v6 else str((r >> 8) % 254 + 1)
        reason = "key_missing" if (r >> 24) < 100 else "key_unknown"
        return (
            f'{{"action":"deny",{net.head}{host}{net.mid}{net.cc}"decision_id":"{did}",'
            f'"method":"POST","path":"/v1/chat/completions","reason":"{reason}",'
            f'"request_id":"{rid}","rule":"identity:{reason}","rules_version":"{version}",'
            f'"schema":1,"status":401,"time":"{stamp}"{trace}}}'
        )

    def _called(self, acct: Account, common: Common) -> str:
        stamp, did, rid, trace, version = common
        r = self.rng.getrandbits(64)
        u_away, u_deny, u_sig, u_model = r & 0xFFFF, (r >> 16) & 0xFFFF, (r >> 32) & 0xFFFF, r >> 48
        r = self.rng.getrandbits(48)
        away = bool(acct.away) and u_away < acct.away_share * 65536
        nets = acct.away if away else acct.home
        net = nets[r % len(nets)]
        host = f"{(r >> 8) & 0xFFFF:x}" if net.v6 else str((r >> 8) % 254 + 1)
        size, tokens = self._sizes[acct.profile == "extractor"][(r >> 24) & 1023]
        model, path = _MODEL_BY_DRAW[u_model >> 10]
        extractor = acct.profile == "extractor"
        signals: list[str] = []
        rule = f"tier:{acct.tier}"
        matched = f'["{rule}"]'
        if acct.mismatch and net.country != acct.kyc_country:
            signals.append("kyc-mismatch-unverified")
            matched = f'["{rule}","jurisdiction:kyc-mismatch-unverified"]'
        if extractor and u_sig < 9830:  # 15%
            signals.append("volume_spike_account")
            if u_sig < 2949:  # 30% of those
                signals.append("volume_spike_entity")
        elif u_sig > 65400:  # 0.2%
            signals.append("xff_invalid")
        if u_sig == 4242:
            signals.append("meter_degraded")
        reason, status = "ok", 200
        if acct.profile == "embargoed" and away:
            reason, status, rule = "country_denied", 403, "jurisdiction:embargoed-ip"
            matched = '["jurisdiction:embargoed-ip"]'
        elif extractor and u_deny < 7864:  # 12%
            reason, status = ("volume_anomaly", 429) if u_deny < 1966 else ("rate_limited", 429)
        elif not extractor and u_deny < 655:  # 1%
            reason, status = "rate_limited", 429
        limit = LIMITS[acct.tier]
        remaining = (r >> 34) % limit if status == 200 else 0
        rest = f',"remaining":"{remaining}"' if remaining else ""
        counter = f'{{"limit":"{limit}","name":"account-requests-1m"{rest}}}'
        action = "allow" if status == 200 else "deny"
        tok = f'"estimated_tokens":"{tokens}",' if status == 200 else ""
        sigs = ('"signals":["' + '","'.join(signals) + '"],') if signals else ""
        return (
            f'{{"account":"{acct.name}","action":"{action}",{net.head}{host}{net.mid}'
            f'"counters":[{counter}],{net.cc}"decision_id":"{did}","entity":"{acct.entity}",'
            f'{tok}{acct.ident}"matched_rules":{matched},"method":"POST","model":"{model}",'
            f'"path":"{path}","reason":"{reason}","request_bytes":"{size}",'
            f'"request_id":"{rid}","rule":"{rule}","rules_version":"{version}","schema":1,'
            f'{sigs}"status":{status},"tier":"{acct.tier}","time":"{stamp}"{trace}}}'
        )


def _size_tokens(rng: random.Random, mean_bytes: float) -> tuple[int, int]:
    size = int(rng.expovariate(1 / mean_bytes)) + 120
    return size, size // 4 + int(rng.expovariate(1 / 600)) + 1


# 64 slots of a 6-bit draw: 60% frontier-2, 30% frontier-2-mini, 10% embed-1.
_MODEL_BY_DRAW = [(m, p) for m, p, share in MODELS for _ in range(round(share * 64 / 100))]
_MODEL_BY_DRAW += [_MODEL_BY_DRAW[0]] * (64 - len(_MODEL_BY_DRAW))


def write_lines(lines: Iterator[str], out: IO[str]) -> int:
    """Write lines (adding newlines) in large chunks; returns how many."""
    n = 0
    buf: list[str] = []
    for line in lines:
        buf.append(line)
        if len(buf) >= 8192:
            out.write("\n".join(buf) + "\n")
            n += len(buf)
            buf = []
    if buf:
        out.write("\n".join(buf) + "\n")
        n += len(buf)
    return n


def xadd_lines(client: Client, lines: Iterator[str], chunk: int = 2000) -> int:
    """XADD each line as the `record` field of a `dg:audit` entry, pipelined; returns how many."""
    n = 0
    pipe = client.pipeline(transaction=False)
    for line in lines:
        pipe.xadd(STREAM, {RECORD_FIELD: line})
        n += 1
        if n % chunk == 0:
            pipe.execute()
    pipe.execute()
    return n


def _tee(lines: Iterator[str], out: IO[str] | None) -> Iterator[str]:
    buf: list[str] = []
    for line in lines:
        if out is not None:
            buf.append(line)
            if len(buf) >= 8192:
                out.write("\n".join(buf) + "\n")
                buf = []
        yield line
    if out is not None and buf:
        out.write("\n".join(buf) + "\n")


def _start(text: str | None, days: float) -> float:
    from authz.audit.queries import parse_time

    now = SystemClock().now()
    if text:
        return parse_time(text, now)
    return (now - days * 86400) // 3600 * 3600  # whole hours, ending about now


def _generate(ns: argparse.Namespace) -> int:
    if not ns.out and not ns.to_redis:
        print(
            "distill-guard audit generate: give --out FILE and/or --to-redis URL", file=sys.stderr
        )
        return 2
    gen = Generator(ns.records, seed=ns.seed, start=_start(ns.start, ns.days), days=ns.days)
    started = time.monotonic()
    out: IO[str] | None = None
    if ns.out:
        out = sys.stdout if ns.out == "-" else open(ns.out, "w", encoding="utf-8")  # noqa: SIM115 (closed below)
    try:
        if ns.to_redis:
            with redis_client(ns.to_redis) as client:
                n = xadd_lines(client, _tee(gen.lines(), out))
        else:
            assert out is not None
            n = write_lines(gen.lines(), out)
    finally:
        if out is not None and out is not sys.stdout:
            out.close()
    took = time.monotonic() - started
    print(f"generated {n:,} records in {took:.1f}s ({n / took:,.0f}/s)", file=sys.stderr)
    return 0


# --- benchmark -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueryTime:
    """How long one query took (best and median of its runs)."""

    query: str
    buckets: int
    rows: int
    best_ms: float
    median_ms: float


def _timed(runs: int, call: Callable[[], int]) -> tuple[int, float, float]:
    times, rows = [], 0
    for _ in range(runs):
        started = time.perf_counter()
        rows = call()
        times.append((time.perf_counter() - started) * 1000)
    return rows, min(times), statistics.median(times)


def bench_queries(client: redis.Redis, now: float, runs: int = 3) -> list[QueryTime]:
    """Time usage (each dimension, 24h, 72h and 7d), who --country and account queries."""
    from authz.audit import queries as q

    out: list[QueryTime] = []

    def run(name: str, window: q.Window, call: Callable[[], int]) -> None:
        rows, best, median = _timed(runs, call)
        out.append(QueryTime(name, len(window.buckets), rows, best, median))

    for since in ("24h", "72h", "7d"):
        w = q.make_window(since, None, now)
        for dim in DIMENSIONS:
            run(
                f"usage --since {since} --by {dim}",
                w,
                lambda w=w, dim=dim: len(q.usage(client, w, dim, 20).rows),  # type: ignore[misc]
            )
    week = q.make_window("7d", None, now)
    top_country = q.usage(client, week, "country", 1).rows[0].key
    for cc in (top_country, "IR"):
        run(
            f"who --country {cc} --since 7d",
            week,
            lambda cc=cc: q.who(client, week, cc, 0).total_accounts,  # type: ignore[misc]
        )
    busiest = q.usage(client, week, "account", 1).rows[0].key
    for since in ("24h", "7d"):
        w = q.make_window(since, None, now)
        run(
            f"account {busiest} --since {since}",
            w,
            lambda w=w: len(q.account_timeline(client, w, busiest).buckets),  # type: ignore[misc]
        )
    return out


def _start_redis(tmp: Path) -> tuple[Child, str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not on PATH")
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
    argv += ["no", "--dir", str(tmp)]
    server = Child.spawn("redis-server", argv, tmp)
    url = f"redis://127.0.0.1:{port}/0"

    def ping() -> bool:
        try:
            with redis.Redis.from_url(url, socket_timeout=0.5) as c:
                return bool(c.ping())
        except redis.ConnectionError:
            return False

    wait_until(server, "PING", ping)
    return server, url


def _bench(ns: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="dg-audit-bench-") as name:
        tmp = Path(name)
        try:
            server, url = _start_redis(tmp)
        except RuntimeError as exc:
            print(f"distill-guard audit bench: {exc}", file=sys.stderr)
            return 2
        children = [server]
        try:
            report = _bench_run(ns, url, tmp, children)
        finally:
            stop_all(children)
    if ns.json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        sys.stdout.write(_format_bench(report) + "\n")
    return 0


def _bench_run(
    ns: argparse.Namespace, url: str, tmp: Path, children: list[Child]
) -> dict[str, Any]:
    now = SystemClock().now()
    start = (now - ns.days * 86400) // 3600 * 3600 + 3600
    gen = Generator(ns.records, seed=ns.seed, start=start, days=ns.days)
    client = redis.Redis.from_url(url, socket_timeout=300)
    lines = gen.lines()
    gen_s = load_s = 0.0
    while True:
        t0 = time.perf_counter()
        chunk = list(itertools.islice(lines, 20_000))
        t1 = time.perf_counter()
        if not chunk:
            break
        xadd_lines(client, iter(chunk))
        gen_s, load_s = gen_s + t1 - t0, load_s + time.perf_counter() - t1
        print(f"\rloaded {client.xlen(STREAM):,} records", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    stream_mb = int(client.info("memory")["used_memory"]) / 1e6
    argv = [sys.executable, "-m", "authz", "audit", "rollup", "--redis", url, "--drain"]
    argv += ["--batch", str(ns.batch)]
    started = time.perf_counter()
    consumers = [
        Child.spawn(f"rollup-{i}", [*argv, "--consumer", f"bench-{i}"], tmp)
        for i in range(ns.consumers)
    ]
    children += consumers
    for child in consumers:
        if child.proc.wait() != 0:
            raise RuntimeError(f"{child.name} failed:\n{child.tail()}")
    rollup_s = time.perf_counter() - started
    summaries = [child.tail(1) for child in consumers]
    raw_stats: dict[bytes, bytes] = client.hgetall(STATS_KEY)  # type: ignore[assignment]
    stats = {k.decode(): int(v) for k, v in raw_stats.items()}
    pending = client.xpending(STREAM, "rollup")["pending"]
    client.delete(STREAM)
    info = client.info("memory")
    queries = bench_queries(client, SystemClock().now(), ns.runs)
    client.close()
    return {
        "records": ns.records,
        "days": ns.days,
        "generate_per_s": ns.records / gen_s if gen_s else 0.0,
        "xadd_per_s": ns.records / load_s if load_s else 0.0,
        "stream_mb": stream_mb,
        "consumers": ns.consumers,
        "batch": ns.batch,
        "rollup_s": rollup_s,
        "rollup_per_s": ns.records / rollup_s,
        "rolled_up": stats.get("applied", 0),
        "per_consumer": {k[8:]: v for k, v in stats.items() if k.startswith("applied:")},
        "pending_after": pending,
        "consumer_logs": summaries,
        "rollup_keys": client_dbsize(url),
        "rollup_mb": int(info["used_memory"]) / 1e6,
        "queries": [asdict(q) for q in queries],
    }


def client_dbsize(url: str) -> int:
    """How many keys the database holds."""
    with redis.Redis.from_url(url) as c:
        return int(c.dbsize())


def _format_bench(r: dict[str, Any]) -> str:
    from authz.audit.queries import table

    lines = [
        f"records          {r['records']:,} over {r['days']:g} days",
        f"generate         {r['generate_per_s']:,.0f} records/s",
        f"XADD (pipelined) {r['xadd_per_s']:,.0f} records/s ({r['stream_mb']:,.0f} MB stream)",
        f"rollup           {r['rollup_s']:.1f}s with {r['consumers']} consumer(s), batch "
        f"{r['batch']}: {r['rollup_per_s']:,.0f} records/s",
        f"                 applied {r['rolled_up']:,}; per consumer {r['per_consumer']}; "
        f"pending after: {r['pending_after']}",
        *(f"                 {line}" for line in r["consumer_logs"]),
        f"rollups          {r['rollup_keys']:,} keys, {r['rollup_mb']:,.1f} MB (stream deleted)",
        "",
    ]
    rows = [
        [q["query"], q["buckets"], q["rows"], f"{q['best_ms']:.1f}", f"{q['median_ms']:.1f}"]
        for q in r["queries"]
    ]
    lines.append(table(["QUERY", "BUCKETS", "ROWS", "BEST MS", "MEDIAN MS"], rows))
    return "\n".join(lines)


def add_parsers(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `audit generate` and `audit bench`."""
    p = actions.add_parser("generate", help="write synthetic audit records (tests, benchmarks)")
    p.add_argument("--records", type=int, required=True, metavar="N")
    p.add_argument("--out", metavar="FILE", help="JSON-lines file to write (- for stdout)")
    p.add_argument("--to-redis", metavar="URL", help="also XADD the records into dg:audit there")
    p.add_argument("--seed", type=int, default=1, help="random seed (default: 1)")
    p.add_argument("--start", help="time of the first record (RFC 3339; default: DAYS ago)")
    p.add_argument("--days", type=float, default=7.0, help="span of the records (default: 7)")
    p.set_defaults(func=_generate)

    p = actions.add_parser(
        "bench",
        help="benchmark: generate, roll up and query records on a throwaway redis-server",
    )
    p.add_argument("--records", type=int, default=1_000_000, metavar="N")
    p.add_argument("--days", type=float, default=7.0, help="span of the records (default: 7)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--consumers", type=int, default=1, help="rollup consumers (default: 1)")
    p.add_argument("--batch", type=int, default=2000, help="entries per batch (default: 2000)")
    p.add_argument("--runs", type=int, default=3, help="runs of each query (default: 3)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(func=_bench)
