"""When benign accounts send requests: sessions in the user's own day, CI cron jobs, eval batches.

Times are integer milliseconds since the epoch. Each function returns one
account's request times inside [the account's first active moment, end).
"""

from __future__ import annotations

import random

from authz.sim.draw import cumulative, weighted
from authz.sim.population import DAY, SimAccount

# Relative activity by local hour: quiet nights, a morning rise, busy afternoons and evenings.
PERSONAL_HOURS = (
    1,
    0.6,
    0.4,
    0.3,
    0.3,
    0.5,
    1.2,
    2.5,
    4,
    5.5,
    6.5,
    6.5,
    5.5,
    6,
    6.5,
    6.5,
    6,
    5.5,
    5.5,
    6,
    6.5,
    6,
    4,
    2,
)
WORK_HOURS = (
    0.1,
    0.1,
    0.1,
    0.1,
    0.1,
    0.2,
    0.5,
    2,
    6,
    9,
    10,
    9,
    6,
    8,
    10,
    10,
    9,
    7,
    4,
    2,
    1,
    0.6,
    0.4,
    0.2,
)
_HOURS = tuple(range(24))


_PERSONAL_CUM = cumulative(PERSONAL_HOURS)
_WORK_CUM = cumulative(WORK_HOURS)


def _local_days(acct: SimAccount, start: int, days: int) -> list[tuple[int, int]]:
    """(local midnight in UTC seconds, weekday 0=Monday) of every local day the period touches."""
    offset = int(acct.tz * 3600)
    first = start + offset
    out = []
    for d in range(-1, days + 1):
        local_midnight = first - first % DAY + d * DAY  # start is midnight UTC in practice
        out.append((local_midnight - offset, ((local_midnight // DAY) + 3) % 7))
    return out


def sessions(
    rng: random.Random, acct: SimAccount, start: int, end: int, *, work: bool
) -> list[int]:
    """A person's requests: active days, a daily volume, sessions at plausible local hours."""
    days = (end - start) // DAY
    cum = _WORK_CUM if work else _PERSONAL_CUM
    weekend = 0.15 if work else 0.8
    cap = 15 if acct.tier == "free" else 400  # a free user stays within the free tier
    lo = max(acct.active_from, start) * 1000
    out: list[int] = []
    for midnight, weekday in _local_days(acct, start, days):
        p = acct.p_active * (weekend if weekday >= 5 else 1.0)
        if rng.random() >= p:
            continue
        n = min(cap, max(1, round(rng.lognormvariate(0, acct.spread) * acct.median)))
        while n > 0:
            size = min(n, 1 + int(rng.expovariate(0.5)))
            hour = weighted(rng, _HOURS, cum)
            t = midnight + hour * 3600 + rng.random() * 3600
            for _ in range(size):
                out.append(int(t * 1000))
                t += 15 + rng.expovariate(1 / 90)
            n -= size
    return sorted(t for t in out if lo <= t < end * 1000)


def researcher(rng: random.Random, acct: SimAccount, start: int, end: int) -> list[int]:
    """Sessions of a researcher, plus now and then an evaluation batch at a fixed pace."""
    out = sessions(rng, acct, start, end, work=True)
    days = (end - start) // DAY
    for midnight, weekday in _local_days(acct, start, days):
        if weekday >= 5 or rng.random() >= 0.08:
            continue
        pace = rng.uniform(3, 10)
        t = midnight + rng.uniform(9, 20) * 3600
        for _ in range(rng.randint(20, 100)):
            out.append(int(t * 1000))
            t += pace + rng.uniform(-0.2, 0.2)
    lo = max(acct.active_from, start) * 1000
    return sorted(t for t in out if lo <= t < end * 1000)


def ci(rng: random.Random, acct: SimAccount, start: int, end: int) -> list[int]:
    """CI jobs: on a fixed interval through the working day, bursts on pushes, a nightly run."""
    out: list[int] = []
    days = (end - start) // DAY
    phase = rng.uniform(0, acct.ci_interval)
    for midnight, weekday in _local_days(acct, start, days):
        if weekday < 5:
            t = midnight + 7 * 3600 + phase
            while t < midnight + 19 * 3600:
                out.append(int((t + rng.uniform(-2, 8)) * 1000))  # cron fires, a runner picks up
                t += acct.ci_interval
            for _ in range(rng.randint(3, 15)):  # pushes trigger the pipeline
                t = midnight + rng.uniform(8, 19) * 3600
                for _ in range(rng.randint(2, 8)):
                    out.append(int(t * 1000))
                    t += rng.uniform(2, 6)
        for _ in range(rng.randint(1, 3)):  # the nightly run
            out.append(int((midnight + 2 * 3600 + rng.uniform(0, 600)) * 1000))
    lo = max(acct.active_from, start) * 1000
    return sorted(t for t in out if lo <= t < end * 1000)
