"""Synthetic audit records for tests and benchmarks: `audit generate`.

Records are built as dicts already in the canonical JSON shape of AuditRecord
(proto3 JSON mapping: snake_case names, uint64 as strings, defaults and empty
lists left out, keys sorted), so no protobuf message is made per record; the
tests check that every line parses with `json_format.ParseDict` and prints back
unchanged. Generated records carry no hash chain (`sequence`, `prev_hash`,
`hash`): they feed rollups and queries, not `audit verify`.

The population (authz.audit.population): accounts of entities across
countries, a few of them behaving like extraction, a few calling from embargoed
countries; some requests carry no valid key. Extractors raise volume-spike
signals and draw rate-limit denials; embargoed calls are denied. Traffic
follows a daily cycle (busiest around 15:00 UTC). `audit bench`
(authz.audit.bench) feeds its records through the rollups and the queries.
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import random
import sys
import time
from collections.abc import Iterator
from typing import IO, Any

from authz.audit.client import Client, redis_client
from authz.audit.population import Account, Population
from authz.audit.stream import RECORD_FIELD, STREAM
from authz.clock import SystemClock

LIMITS = {"free": 60, "pro": 600, "enterprise": 6000}  # account-requests-1m
MODELS = (
    ("frontier-2", "/v1/chat/completions", 60),
    ("frontier-2-mini", "/v1/chat/completions", 30),
    ("embed-1", "/v1/embeddings", 10),
)
RULES_VERSIONS = ("prod@3f9a1c2e7b10", "prod@8d41e07c55a2")  # the rules change halfway


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
    return sum(1 for _ in _tee(lines, out))


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
    """The lines, passed on as they come, and also written to `out` in large chunks."""
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


def hours_back(now: float, days: float) -> float:
    """The whole hour about `days` before `now`: where generated records start by default."""
    return (now - days * 86400) // 3600 * 3600


def _start(text: str | None, days: float) -> float:
    from authz.audit.window import parse_time

    now = SystemClock().now()
    if text:
        return parse_time(text, now)
    return hours_back(now, days)  # whole hours, ending about now


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


def add_parsers(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `audit generate`."""
    p = actions.add_parser("generate", help="write synthetic audit records (tests, benchmarks)")
    p.add_argument("--records", type=int, required=True, metavar="N")
    p.add_argument("--out", metavar="FILE", help="JSON-lines file to write (- for stdout)")
    p.add_argument("--to-redis", metavar="URL", help="also XADD the records into dg:audit there")
    p.add_argument("--seed", type=int, default=1, help="random seed (default: 1)")
    p.add_argument("--start", help="time of the first record (RFC 3339; default: DAYS ago)")
    p.add_argument("--days", type=float, default=7.0, help="span of the records (default: 7)")
    p.set_defaults(func=_generate)
