"""What a RateStore answers, and the one function both stores use to compute it.

A store reads the counters of a plan (`CounterView`s, `VolumeView`s), decides
atomically, and hands the views to `assess` and `to_result`; the memory store and
the Lua script make the same decision from the same views.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, NamedTuple

from authz.metering.plan import Plan
from authz.metering.window import (
    HOUR_MS,
    CounterView,
    Spike,
    VolumeView,
    fits,
    remaining,
    retry_after_ms,
    spike,
)


class LimitState(NamedTuple):
    """One limit after the request: what is left of it."""

    name: str
    scope: str
    kind: str
    window: int  # seconds
    limit: int  # in force for this request (lowered while a throttle signal fires)
    remaining: int
    reset: int  # seconds: until one unit is back when none is left, else until the bucket ends


@dataclass(frozen=True, slots=True)
class Violation:
    """Why a request was refused: the limit (or volume signal) it would break."""

    name: str
    scope: str
    kind: Literal["requests", "tokens", "volume"]
    window: int
    limit: int
    retry_after: float | None  # seconds; None when the request can never fit (cost > limit)


@dataclass(frozen=True, slots=True)
class Signal:
    """A volume spike that fired for this request."""

    name: str
    value: float  # count / baseline
    z: float
    count: int
    baseline: float
    action: str


class Timing(NamedTuple):
    """An account's request timing as the store keeps it (this request included).

    Timing and Sighted are NamedTuples for the reason the views are: one per request.
    """

    gaps: int  # gaps between requests counted so far
    mean_ms: float  # their mean
    m2: float  # sum of squared deviations (Welford)
    hours: int  # bit h set: the account was active in UTC hour-of-day h

    @property
    def cv(self) -> float | None:
        """Coefficient of variation of the gaps (None below two gaps or a zero mean)."""
        if self.gaps < 2 or self.mean_ms <= 0:
            return None
        return math.sqrt(max(self.m2, 0.0) / (self.gaps - 1)) / self.mean_ms

    @property
    def active_hours(self) -> int:
        """Distinct hours of the day the account was seen in."""
        return self.hours.bit_count()


# The widest near-duplicate distance a template verdict may carry (a stored wider one,
# which would match nearly anything, is ignored).
MAX_NEAR_BITS = 11


@dataclass(frozen=True, slots=True)
class VerdictView:
    """The off-path analysis' verdict on an account, a network or a template, as read."""

    action: str  # watch | restrict | deny
    cluster: str
    score: float
    until: float  # epoch seconds
    bits: int = 0  # template verdicts: SimHashes this many bits apart are near-duplicates
    # template verdicts: the owned SimHashes of this band value, each with its cluster
    simhashes: tuple[tuple[int, str], ...] = ()


class Sighted(NamedTuple):
    """What the store answered for a plan's sightings."""

    observed: tuple[tuple[str, int], ...] = ()  # (signal, distinct count after this request)
    timing: Timing | None = None
    verdict: VerdictView | None = None  # on the account
    network_verdict: VerdictView | None = None  # on the request's network
    template_verdicts: tuple[VerdictView, ...] = ()  # on the request's SimHash bands, in force


class MeterResult(NamedTuple):
    """The answer of `RateStore.hit`: one per request."""

    allowed: bool
    violated: Violation | None = None
    limits: tuple[LimitState, ...] = ()
    signals: tuple[Signal, ...] = ()
    violations: tuple[Violation, ...] = ()
    degraded: bool = False  # decided by the fail-open local limiter, not the shared store
    sighted: Sighted | None = None


ALLOWED = MeterResult(allowed=True)


class Assessment(NamedTuple):
    """The decision the views imply, before anything is written (made once per hit)."""

    allowed: bool
    spikes: tuple[Spike, ...]
    limits: tuple[int, ...]  # the limit in force for each counter
    fits: tuple[bool, ...]
    volume_deny: tuple[bool, ...]


def assess(
    plan: Plan, views: tuple[CounterView, ...], volumes: tuple[VolumeView, ...]
) -> Assessment:
    """Decide from the views: spikes first (they may lower limits), then every counter."""
    spikes: list[Spike] = []
    throttled: set[str] = set()
    deny: list[bool] = []
    for view, watch in zip(volumes, plan.volumes, strict=True):
        s = spike(view, watch.settings)
        spikes.append(s)
        if s.fired and watch.settings.action == "throttle":
            throttled.add(watch.scope)
        deny.append(s.fired and watch.settings.action == "deny")
    limits: list[int] = []
    ok: list[bool] = []
    for v, c in zip(views, plan.counters, strict=True):
        limit = c.throttled if throttled and c.scope in throttled else c.limit
        limits.append(limit)
        ok.append(fits(v, c.window * 1000, limit, c.cost))
    return Assessment(
        all(ok) and not any(deny), tuple(spikes), tuple(limits), tuple(ok), tuple(deny)
    )


def to_result(
    plan: Plan,
    now_ms: int,
    views: tuple[CounterView, ...],
    a: Assessment,
    *,
    allowed: bool,
    sighted: Sighted | None = None,
) -> MeterResult:
    """The MeterResult of a decision; `allowed` says whether the costs were charged."""
    states: list[LimitState] = []
    for c, v, lim in zip(plan.counters, views, a.limits, strict=True):
        w = c.window * 1000
        charged = c.cost if allowed else 0
        left = remaining(v, w, lim, charged)
        if left > 0:
            reset = math.ceil((w - v.elapsed) / 1000)
        else:
            after = CounterView(v.bucket, v.cur + charged, v.prev, v.elapsed)
            wait = retry_after_ms(after, w, lim, 1)
            reset = c.window if wait is None else math.ceil(wait / 1000)
        states.append(LimitState(c.name, c.scope, c.kind, c.window, lim, left, reset))
    signals = tuple(
        Signal(w.signal, s.multiple, s.z, s.requests, s.baseline, w.settings.action)
        for s, w in zip(a.spikes, plan.volumes, strict=True)
        if s.fired
    )
    if allowed:  # the common case: nothing was violated
        return MeterResult(True, limits=tuple(states), signals=signals, sighted=sighted)
    violations = _violations(plan, now_ms, views, a)
    violated = max(violations, key=_severity) if violations else None
    if violated is None:
        # The store refused but the views show no reason: never report a denial without one.
        violated = Violation("unknown", "account", "requests", 0, 0, 1.0)
        violations.append(violated)
    return MeterResult(
        False,
        violated,
        limits=tuple(states),
        signals=signals,
        violations=tuple(violations),
        sighted=sighted,
    )


def _violations(
    plan: Plan, now_ms: int, views: tuple[CounterView, ...], a: Assessment
) -> list[Violation]:
    """What a refused request broke: the counters it did not fit, and denying spikes."""
    violations: list[Violation] = []
    for c, v, lim, ok in zip(plan.counters, views, a.limits, a.fits, strict=True):
        if not ok:
            wait = retry_after_ms(v, c.window * 1000, lim, c.cost)
            violations.append(
                Violation(
                    c.name, c.scope, c.kind, c.window, lim, None if wait is None else wait / 1000
                )
            )
    for watch, denied in zip(plan.volumes, a.volume_deny, strict=True):
        if denied:
            until_hour_end = (HOUR_MS - now_ms % HOUR_MS) / 1000
            violations.append(
                Violation(watch.signal, watch.scope, "volume", 3600, 0, until_hour_end)
            )
    return violations


def _severity(v: Violation) -> float:
    """The longest wait names the violation (never-fits first): Retry-After must cover all."""
    return math.inf if v.retry_after is None else v.retry_after


def describe(v: Violation) -> str:
    """A sentence for the deny body and logs, e.g. `account-requests-1m: limit 20 reached`."""
    if v.kind == "volume":
        return f"{v.name}: request volume far above this {v.scope}'s usual hourly volume"
    if v.retry_after is None:
        return f"{v.name}: this request alone exceeds the limit of {v.limit} {v.kind}"
    return f"{v.name}: limit of {v.limit} {v.kind} reached; retry in {math.ceil(v.retry_after)} s"
