"""Store keys of detection, and the sightings one request asks the store for.

Pools are counted with HyperLogLogs (Redis) or sets (memory store), per time
bucket so they forget: accounts per prompt template per hour; accounts per
/24 (or /48), per AS number and per client fingerprint per day; distinct
templates per account per day. The account's timing and the off-path
analysis' verdict on the account live under the account's hash tag, in the slot
of its counters; its verdict on a network under the network's, with the
network's pool counter. Its verdicts on a campaign's own templates are found by the
request's SimHash: one key per 16-bit band of it, holding the owned SimHashes
with that band value, which the detect phase then compares bit by bit. Time
buckets come from the pipeline's clock, never the store's.
"""

from __future__ import annotations

import functools
import re
from urllib.parse import quote

from authz.metering.plan import Observation, Sightings, hash_tag
from authz.metering.window import TIMING_TTL_MS

DETECT_PREFIX = "dg:d:"
VERDICT_PREFIX = "dg:v:"
HOUR = 3600
DAY = 86400
_SAFE = re.compile(r"^[A-Za-z0-9_.:@/-]+$")


@functools.lru_cache(maxsize=65536)  # a network, client or template recurs across requests
def _tag(letter: str, value: str) -> str:
    """A hash tag of one pool; braces and odd characters are encoded so they cannot move it."""
    return "{" + letter + ":" + (value if _SAFE.match(value) else quote(value, safe="")) + "}"


def verdict_key(account: str) -> str:
    """Where the off-path analysis writes its verdict on an account, e.g. `dg:v:{a:alice}`."""
    return VERDICT_PREFIX + hash_tag("account", account)


def network_verdict_key(network: str) -> str:
    """Where a verdict on a network lives, e.g. `dg:v:{n:203.0.113.0/24}`: the slot of the
    network's pool counter, so the request reads it in the call that counts the network."""
    return VERDICT_PREFIX + _tag("n", network)


def simhash_bands(simhash: int) -> tuple[int, ...]:
    """The four 16-bit bands of a SimHash, lowest first."""
    return tuple((simhash >> 16 * band) & 0xFFFF for band in range(4))


def band_key(band: int, value: int) -> str:
    """The template verdict key of one band value, e.g. `dg:v:{b:2.9f2c}` (its own slot)."""
    return VERDICT_PREFIX + _tag("b", f"{band}.{value:04x}")


def template_verdict_keys(simhash: int) -> tuple[str, ...]:
    """The template verdict keys a request with this SimHash reads: one per band."""
    return tuple(band_key(band, value) for band, value in enumerate(simhash_bands(simhash)))


def timing_key(account: str) -> str:
    """An account's request timing (gaps between requests, hours of day)."""
    return f"{DETECT_PREFIX}{hash_tag('account', account)}:tm"


def sightings(
    *,
    account: str,
    template: str,
    network: str,
    asn: int | None,
    client: str,
    now: float,
    simhash: int = 0,
) -> Sightings:
    """The pools one request joins, its account's timing, and the verdicts to read."""
    hour = int(now // HOUR)
    day = int(now // DAY)
    hour_ttl = 2 * HOUR * 1000
    day_ttl = 2 * DAY * 1000
    pools = []
    if template:  # "" when the prompt is too short to be evidence of a template
        pools += [
            Observation(
                "template_accounts",
                f"{DETECT_PREFIX}{_tag('t', template)}:h:{hour}",
                account,
                hour_ttl,
            ),
            Observation(
                "account_templates",
                f"{DETECT_PREFIX}{hash_tag('account', account)}:tpl:d:{day}",
                template,
                day_ttl,
            ),
        ]
    pools += [
        Observation(
            "network_accounts", f"{DETECT_PREFIX}{_tag('n', network)}:d:{day}", account, day_ttl
        ),
    ]
    if client:
        pools.append(
            Observation(
                "client_accounts", f"{DETECT_PREFIX}{_tag('c', client)}:d:{day}", account, day_ttl
            )
        )
    if asn:
        pools.append(
            Observation(
                "asn_accounts", f"{DETECT_PREFIX}{_tag('s', str(asn))}:d:{day}", account, day_ttl
            )
        )
    return Sightings(
        observations=tuple(pools),
        timing_key=timing_key(account),
        timing_ttl_ms=TIMING_TTL_MS,
        verdict_key=verdict_key(account),
        network_verdict_key=network_verdict_key(network),
        template_verdict_keys=template_verdict_keys(simhash) if template and simhash else (),
    )
