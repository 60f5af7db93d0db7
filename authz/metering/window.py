"""The counting arithmetic, shared by the memory store and mirrored line for line in Lua.

Sliding-window counter: each counter keeps the fixed bucket it last counted in
(`bucket` = floor(now / window)), that bucket's count and the previous bucket's.
The count over the last window is estimated as

    used = prev * (window - elapsed) / window + cur

and a request of cost c passes when used + c <= limit. Volume baselines keep an
hourly EWMA of request counts (see docs/limits.md for both).

All arithmetic is on IEEE doubles in the same order as `authz/metering/lua.py`,
with times in integer milliseconds, so the two implementations agree exactly.
Views and spikes are NamedTuples: several are made per request, and tuples are
the cheapest immutable values Python builds (a frozen dataclass costs several
times as much to construct, one guarded setattr per field).
"""

from __future__ import annotations

import math
from typing import NamedTuple

from authz.metering.rules import AnomalySettings

HOUR_MS = 3_600_000
# After this many idle hours the baseline is forgotten; keys outlive it, so expiry
# never changes a decision (the memory store and Redis agree whatever their clocks).
MAX_IDLE_HOURS = 168
COUNTER_SLACK_MS = 60_000
VOLUME_TTL_MS = (MAX_IDLE_HOURS + 2) * HOUR_MS


def to_ms(now: float) -> int:
    """Epoch seconds to the integer milliseconds both implementations count in."""
    return math.floor(now * 1000)


def counter_ttl_ms(window_ms: int) -> int:
    """How long a counter key lives after its last write: two windows and some slack."""
    return 2 * window_ms + COUNTER_SLACK_MS


class CounterView(NamedTuple):
    """A counter as seen by one request, before its cost is added."""

    bucket: int
    cur: int
    prev: int
    elapsed: int  # ms since `bucket` began (0 when a faster clock already moved it on)


class VolumeView(NamedTuple):
    """A volume baseline as seen by one request, before it is counted."""

    hour: int
    requests: int  # counted in `hour` so far (`count` would shadow tuple.count)
    mean: float | None
    var: float


def roll(stored: tuple[int, int, int] | None, now_ms: int, window_ms: int) -> CounterView:
    """The counter at `now_ms` from its stored (bucket, cur, prev)."""
    bucket = now_ms // window_ms
    if stored is None:
        return CounterView(bucket, 0, 0, now_ms - bucket * window_ms)
    b, c, p = stored
    if b < bucket - 1:
        cur, prev = 0, 0
    elif b == bucket - 1:
        cur, prev = 0, c
    else:
        # b > bucket: another replica's clock is ahead; count in its bucket, from its start.
        cur, prev = c, p
        bucket = max(b, bucket)
    return CounterView(bucket, cur, prev, max(0, now_ms - bucket * window_ms))


def used(view: CounterView, window_ms: int, added: int = 0) -> float:
    """The sliding-window estimate of units counted over the last window (`added` more in cur)."""
    return float(view.prev) * float(window_ms - view.elapsed) / float(window_ms) + float(
        view.cur + added
    )


def fits(view: CounterView, window_ms: int, limit: int, cost: int) -> bool:
    """Whether `cost` more units keep the estimate within `limit`."""
    return used(view, window_ms) + float(cost) <= float(limit)


def retry_after_ms(view: CounterView, window_ms: int, limit: int, cost: int) -> float | None:
    """Milliseconds until `cost` fits if nothing else is counted; None if it never can."""
    if cost > limit:
        return None
    room = float(limit - cost)
    w = float(window_ms)
    if view.cur <= room:
        if view.prev == 0:
            return 0.0
        needed = w - (room - view.cur) * w / view.prev
        return max(0.0, needed - view.elapsed)
    # Only once this bucket is the previous one, weighing less and less.
    into_next = max(0.0, w - room * w / view.cur)
    return (w - view.elapsed) + into_next


def remaining(view: CounterView, window_ms: int, limit: int, added: int = 0) -> int:
    """Whole units still available (once `added` more are counted in the current bucket)."""
    return max(0, math.floor(float(limit) - used(view, window_ms, added)))


# --- volume baselines -------------------------------------------------------------------


def _ewma(mean: float | None, var: float, x: float, alpha: float) -> tuple[float, float]:
    if mean is None:
        return x, 0.0
    d = x - mean
    return mean + alpha * d, (1.0 - alpha) * (var + alpha * d * d)


def fold(
    stored: tuple[int, int, float | None, float] | None, now_ms: int, alpha: float
) -> VolumeView:
    """The baseline at `now_ms`: completed hours (idle ones as zeros) folded into the EWMA."""
    hour = now_ms // HOUR_MS
    if stored is None:
        return VolumeView(hour, 0, None, 0.0)
    h, count, mean, var = stored
    if h >= hour:
        # Same hour, or a replica whose clock is ahead already opened the next one.
        return VolumeView(h, count, mean, var)
    if hour - h > MAX_IDLE_HOURS:
        return VolumeView(hour, 0, None, 0.0)
    mean, var = _ewma(mean, var, float(count), alpha)
    for _ in range(hour - h - 1):
        mean, var = _ewma(mean, var, 0.0, alpha)
    return VolumeView(hour, 0, mean, var)


class Spike(NamedTuple):
    """How this hour's count (this request included) compares with the baseline."""

    requests: int
    baseline: float
    z: float
    multiple: float
    fired: bool


def spike(view: VolumeView, settings: AnomalySettings) -> Spike:
    """Score the hour's count plus this request against the floored baseline."""
    x = float(view.requests + 1)
    base = max(view.mean if view.mean is not None else 0.0, settings.min_baseline)
    z = (x - base) / math.sqrt(max(view.var, base))
    multiple = x / base
    fired = z >= settings.z_score and multiple >= settings.multiple
    return Spike(view.requests + 1, base, z, multiple, fired)


# --- request timing (detection) ------------------------------------------------------------

TIMING_TTL_MS = 2 * 24 * HOUR_MS


def observe_timing(
    stored: tuple[int, int, float, float, int] | None, now_ms: int
) -> tuple[int, int, float, float, int]:
    """Fold one request into an account's timing: (gaps, last_ms, mean_ms, m2, hours mask).

    Welford's running mean and squared deviations of the gaps between requests;
    a request older than the last one seen counts as a zero gap. Lua mirrors it.
    """
    hour_bit = 1 << ((now_ms // HOUR_MS) % 24)
    if stored is None:
        return 0, now_ms, 0.0, 0.0, hour_bit
    n, last, mean, m2, hours = stored
    gap = float(max(0, now_ms - last))
    n += 1
    d = gap - mean
    mean = mean + d / float(n)
    m2 = m2 + d * (gap - mean)
    return n, max(last, now_ms), mean, m2, hours | hour_bit
