"""The breaker and failure policy: budgets, opening, half-open trials, fail_open and fail_closed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

import pytest

from authz.clock import ManualClock
from authz.metering.breaker import BreakerRateStore, BreakerState
from authz.metering.connect import rate_client
from authz.metering.memory import MemoryRateStore
from authz.metering.plan import Plan
from authz.metering.redis_store import RedisRateStore
from authz.metering.result import MeterResult
from authz.metering.store import StoreUnavailable
from authz.protocols import RateStore
from tests.metering_support import T0, compiled, plan_for
from tests.redis_server import RedisServer

T = TypeVar("T")

OPEN_LIMITS = compiled(
    "account: {requests: {1m: 10}}\non_store_failure: fail_open\nfail_open_fraction: 0.5"
)
CLOSED_LIMITS = compiled("account: {requests: {1m: 10}}\non_store_failure: fail_closed")


class Flaky:
    """A RateStore that fails (or hangs) while told to, and counts every call it gets."""

    def __init__(self) -> None:
        self.calls = 0
        self.mode = "fail"  # fail | hang | ok | gate
        self.inner = MemoryRateStore()
        self.gate = asyncio.Event()

    async def hit(self, plan: Plan, now: float) -> MeterResult:
        self.calls += 1
        if self.mode == "fail":
            raise ConnectionError("store down")
        if self.mode == "hang":
            await asyncio.sleep(3600)
        if self.mode == "gate":
            await self.gate.wait()
        return await self.inner.hit(plan, now)


class Counting:
    """Counts the calls that reach a real store."""

    def __init__(self, store: RateStore) -> None:
        self.store = store
        self.calls = 0

    async def hit(self, plan: Plan, now: float) -> MeterResult:
        self.calls += 1
        return await self.store.hit(plan, now)


def _state(breaker: BreakerRateStore) -> BreakerState:
    """The breaker's state, read afresh (the property changes under our feet)."""
    return breaker.state


async def _bounded(call: Awaitable[T]) -> T:
    """Every call must return well within this generous bound: none may hang."""
    return await asyncio.wait_for(call, 5.0)


def _breaker(store: RateStore, mono: ManualClock, **options: float) -> BreakerRateStore:
    settings = {"budget": 0.05, "failures_to_open": 3, "cooldown": 10.0, **options}
    return BreakerRateStore(
        store,
        budget=settings["budget"],
        failures_to_open=int(settings["failures_to_open"]),
        cooldown=settings["cooldown"],
        monotonic=mono.now,
    )


def test_fail_closed_raises_the_documented_exception() -> None:
    """A failing store under fail_closed raises StoreUnavailable, nothing else."""

    async def main() -> None:
        breaker = _breaker(Flaky(), ManualClock())
        with pytest.raises(StoreUnavailable, match="rate store unavailable: ConnectionError"):
            await _bounded(breaker.hit(plan_for(CLOSED_LIMITS), T0))

    asyncio.run(main())


def test_fail_open_counts_locally_with_the_fraction_of_each_limit() -> None:
    """Under fail_open the local limiter allows 10 * 0.5 = 5, and says the answer is degraded."""

    async def main() -> None:
        breaker = _breaker(Flaky(), ManualClock())
        results = [await _bounded(breaker.hit(plan_for(OPEN_LIMITS), T0 + 1)) for _ in range(7)]
        assert [r.allowed for r in results] == [True] * 5 + [False] * 2
        assert all(r.degraded for r in results)
        assert results[-1].limits[0].limit == 5

    asyncio.run(main())


def test_breaker_opens_after_consecutive_failures_and_stops_calling() -> None:
    """After 3 failures no further call reaches the store until the cooldown has passed."""

    async def main() -> None:
        store, mono = Flaky(), ManualClock()
        breaker = _breaker(store, mono)
        for _ in range(10):
            await _bounded(breaker.hit(plan_for(OPEN_LIMITS), T0))
        assert store.calls == 3
        assert _state(breaker) is BreakerState.OPEN
        assert (breaker.stats.attempts, breaker.stats.short_circuits) == (3, 7)
        assert breaker.stats.opened == 1
        mono.advance(9.9)
        await _bounded(breaker.hit(plan_for(OPEN_LIMITS), T0))
        assert store.calls == 3

    asyncio.run(main())


def test_success_in_between_resets_the_failure_count() -> None:
    """Failures must be consecutive: a success in between keeps the breaker closed."""

    async def main() -> None:
        store = Flaky()
        breaker = _breaker(store, ManualClock())
        for mode in ["fail", "fail", "ok", "fail", "fail", "ok"]:
            store.mode = mode
            await _bounded(breaker.hit(plan_for(OPEN_LIMITS), T0))
        assert _state(breaker) is BreakerState.CLOSED
        assert store.calls == 6

    asyncio.run(main())


def test_half_open_trial_closes_on_success_and_reopens_on_failure() -> None:
    """After the cooldown one trial call goes through: a failure re-opens, a success closes."""

    async def main() -> None:
        store, mono = Flaky(), ManualClock()
        breaker = _breaker(store, mono)
        for _ in range(3):
            await _bounded(breaker.hit(plan_for(OPEN_LIMITS), T0))
        mono.advance(10)
        await _bounded(breaker.hit(plan_for(OPEN_LIMITS), T0))  # the trial fails
        assert (store.calls, breaker.state) == (4, BreakerState.OPEN)
        await _bounded(breaker.hit(plan_for(OPEN_LIMITS), T0))
        assert store.calls == 4  # a fresh cooldown began at the failed trial
        mono.advance(10)
        store.mode = "ok"
        result = await _bounded(breaker.hit(plan_for(OPEN_LIMITS), T0))
        assert not result.degraded
        assert (store.calls, breaker.state) == (5, BreakerState.CLOSED)

    asyncio.run(main())


def test_only_one_trial_at_a_time_while_half_open() -> None:
    """While the trial is in flight, other checks use the policy instead of piling on the store."""

    async def main() -> None:
        store, mono = Flaky(), ManualClock()
        breaker = _breaker(store, mono, budget=2.0)
        for _ in range(3):
            await _bounded(breaker.hit(plan_for(OPEN_LIMITS), T0))
        mono.advance(10)
        store.mode = "gate"
        trial = asyncio.ensure_future(breaker.hit(plan_for(OPEN_LIMITS), T0))
        await asyncio.sleep(0)
        assert _state(breaker) is BreakerState.HALF_OPEN
        others = [await _bounded(breaker.hit(plan_for(OPEN_LIMITS), T0)) for _ in range(3)]
        assert all(r.degraded for r in others)
        assert store.calls == 4
        store.gate.set()
        assert not (await _bounded(trial)).degraded
        assert _state(breaker) is BreakerState.CLOSED

    asyncio.run(main())


def test_a_hung_store_costs_one_budget_per_check_then_nothing() -> None:
    """A store that never answers is cut off at the budget; once open, checks skip it at once."""

    async def main() -> None:
        store = Flaky()
        store.mode = "hang"
        breaker = _breaker(store, ManualClock(), budget=0.02)
        results = [await _bounded(breaker.hit(plan_for(OPEN_LIMITS), T0)) for _ in range(5)]
        assert all(r.allowed and r.degraded for r in results)
        assert (store.calls, breaker.stats.failures) == (3, 3)

    asyncio.run(main())


def test_the_callers_cancellation_is_not_swallowed() -> None:
    """Cancelling a check (Envoy gave up) cancels it; the breaker does not count a failure."""

    async def main() -> None:
        store = Flaky()
        store.mode = "hang"
        breaker = _breaker(store, ManualClock(), budget=10.0)
        task = asyncio.ensure_future(breaker.hit(plan_for(OPEN_LIMITS), T0))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert breaker.stats.failures == 0
        assert _state(breaker) is BreakerState.CLOSED

    asyncio.run(main())


def test_any_store_error_is_a_failure_not_an_escape() -> None:
    """Whatever the store raises (here a ValueError) follows the policy; nothing escapes."""

    class Broken:
        async def hit(self, plan: Plan, now: float) -> MeterResult:
            raise ValueError("garbled reply")

    async def main() -> None:
        breaker = _breaker(Broken(), ManualClock())
        result = await _bounded(breaker.hit(plan_for(OPEN_LIMITS), T0))
        assert result.allowed and result.degraded

    asyncio.run(main())


# --- a real Redis, killed, frozen and restarted ----------------------------------------


@pytest.mark.redis
def test_redis_killed_and_restarted_follows_the_policy_then_resumes(own_redis: RedisServer) -> None:
    """Redis dies: fail_open counts locally, fail_closed raises, the breaker stops trying;
    Redis comes back: after the cooldown one trial closes the breaker and Redis counts again."""

    async def main() -> None:
        mono = ManualClock()
        inner = Counting(RedisRateStore(rate_client(own_redis.url, timeout=0.5)))
        breaker = _breaker(inner, mono, budget=1.0, failures_to_open=2)
        opened, closed = plan_for(OPEN_LIMITS, "alice"), plan_for(CLOSED_LIMITS, "bob")
        first = await _bounded(breaker.hit(opened, T0 + 1))
        assert (first.allowed, first.degraded, first.limits[0].remaining) == (True, False, 9)

        own_redis.kill()
        during = [await _bounded(breaker.hit(opened, T0 + 2)) for _ in range(8)]
        assert all(r.degraded for r in during)
        assert sum(r.allowed for r in during) == 5  # the local limit, 10 * 0.5
        assert inner.calls == 1 + 2
        assert _state(breaker) is BreakerState.OPEN
        with pytest.raises(StoreUnavailable):
            await _bounded(breaker.hit(closed, T0 + 3))
        assert inner.calls == 3  # open: Redis is not even tried

        own_redis.restart()  # empty: no persistence
        mono.advance(10)
        back = await _bounded(breaker.hit(opened, T0 + 4))
        assert (back.allowed, back.degraded, back.limits[0].remaining) == (True, False, 9)
        assert _state(breaker) is BreakerState.CLOSED
        assert (await _bounded(breaker.hit(closed, T0 + 5))).allowed
        assert inner.calls == 5
        await breaker.aclose()

    asyncio.run(main())


@pytest.mark.redis
def test_a_frozen_redis_is_cut_off_at_the_budget(own_redis: RedisServer) -> None:
    """Redis stops answering (SIGSTOP): each check returns after the budget, then the breaker
    opens; once Redis answers again the next trial closes it."""

    async def main() -> None:
        mono = ManualClock()
        inner = Counting(RedisRateStore(rate_client(own_redis.url, timeout=5.0)))
        breaker = _breaker(inner, mono, budget=0.1, failures_to_open=2)
        plan = plan_for(OPEN_LIMITS)
        assert not (await _bounded(breaker.hit(plan, T0))).degraded
        own_redis.pause()
        try:
            frozen = [await _bounded(breaker.hit(plan, T0 + 1)) for _ in range(5)]
        finally:
            own_redis.resume()
        assert all(r.degraded for r in frozen)
        assert (inner.calls, breaker.state) == (3, BreakerState.OPEN)
        mono.advance(10)
        assert not (await _bounded(breaker.hit(plan, T0 + 2))).degraded
        assert _state(breaker) is BreakerState.CLOSED
        await breaker.aclose()

    asyncio.run(main())
