"""BreakerRateStore: a time budget and a circuit breaker around the shared store.

Closed: every hit goes to the store within `budget` seconds. After
`failures_to_open` consecutive faults (error or budget exceeded) the breaker
opens: hits no longer touch the store at all. After `cooldown` seconds one hit
is let through as a trial (half-open); success closes the breaker, failure
re-opens it for another cooldown.

Whenever the store is not used or fails, the plan's tier policy decides:
`fail_open` counts in a local MemoryRateStore with the plan's limits times
`fail_open_fraction` (results say `degraded=True`); `fail_closed` raises
StoreUnavailable, the one exception this wrapper lets out (besides the caller's
own cancellation).

The cooldown is measured on `monotonic` (a callable returning seconds), injected
so tests and replays can drive it; the budget itself is real time (asyncio.timeout),
because a hung store hangs in real time.

Metrics (OpenTelemetry API, labelled by the breaker's `name`): store failures by
kind, short circuits, fallbacks by policy, and the circuit state as a gauge.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from authz.metering.memory import MemoryRateStore
from authz.metering.plan import Plan
from authz.metering.result import ALLOWED, MeterResult
from authz.metering.store import StoreUnavailable
from authz.protocols import RateStore

log = logging.getLogger("distill_guard.metering")


class BreakerState(enum.StrEnum):
    """Where the breaker stands."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(slots=True)
class BreakerStats:
    """Counters for metrics and tests (no timing in them)."""

    attempts: int = 0  # hits passed to the store
    failures: int = 0  # of those, the ones that failed or ran out of budget
    short_circuits: int = 0  # hits answered without trying the store
    fallbacks: int = 0  # hits answered by the policy (local limiter or StoreUnavailable)
    opened: int = 0  # times the breaker opened


# The circuit-state gauge's values (alert on anything but 0).
STATE_VALUE = {BreakerState.CLOSED: 0, BreakerState.OPEN: 1, BreakerState.HALF_OPEN: 2}

_meter = metrics.get_meter("distill_guard")
_failures = _meter.create_counter(
    "distill_guard.rate_store.failures",
    unit="{failure}",
    description="Rate store calls that failed (kind=error) or ran out of budget (kind=timeout)",
)
_short_circuits = _meter.create_counter(
    "distill_guard.rate_store.short_circuits",
    unit="{hit}",
    description="Hits answered without trying the rate store (circuit open or trial in flight)",
)
_fallbacks = _meter.create_counter(
    "distill_guard.rate_store.fallbacks",
    unit="{hit}",
    description="Hits decided by the tier's failure policy (fail_open: local limiter, "
    "fail_closed: refused)",
)
_live: weakref.WeakSet[BreakerRateStore] = weakref.WeakSet()


def _observe_states(options: CallbackOptions) -> Iterable[Observation]:
    for breaker in list(_live):
        yield Observation(STATE_VALUE[breaker.state], {"store": breaker.name})


_meter.create_observable_gauge(
    "distill_guard.rate_store.circuit_state",
    callbacks=[_observe_states],
    unit="1",
    description="Rate store circuit breaker: 0 closed, 1 open, 2 half-open",
)


class BreakerRateStore:
    """A RateStore that never hangs and never raises except StoreUnavailable."""

    def __init__(
        self,
        store: RateStore,
        *,
        local: MemoryRateStore | None = None,
        budget: float = 0.05,
        failures_to_open: int = 5,
        cooldown: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
        name: str = "redis",
    ) -> None:
        self.name = name  # the `store` label of its metrics
        self._store = store
        self._local = local if local is not None else MemoryRateStore()
        self._budget = budget
        self._threshold = max(1, failures_to_open)
        self._cooldown = cooldown
        self._monotonic = monotonic
        self._state = BreakerState.CLOSED
        self._consecutive = 0
        self._opened_at = 0.0
        self.stats = BreakerStats()
        _live.add(self)

    @property
    def state(self) -> BreakerState:
        """The breaker's state as of the last hit."""
        return self._state

    async def hit(self, plan: Plan, now: float) -> MeterResult:
        """The store's answer within the budget, else the tier's failure policy."""
        if plan.empty:
            return ALLOWED
        if not self._may_try():
            self.stats.short_circuits += 1
            _short_circuits.add(1, {"store": self.name})
            return self._fallback(plan, now, "circuit open")
        self.stats.attempts += 1
        trial = self._state is BreakerState.HALF_OPEN
        try:
            async with asyncio.timeout(self._budget):
                result = await self._store.hit(plan, now)
        except asyncio.CancelledError:
            if trial:
                self._state = BreakerState.OPEN  # the next hit may try again at once
            raise
        except Exception as exc:
            self._failed(exc)
            return self._fallback(plan, now, repr(exc))
        self._succeeded()
        return result

    async def aclose(self) -> None:
        """Close the wrapped store's connections, if it has any."""
        close = getattr(self._store, "aclose", None)
        if close is not None:
            await close()

    def _may_try(self) -> bool:
        if self._state is BreakerState.CLOSED:
            return True
        if self._state is BreakerState.HALF_OPEN:
            return False  # one trial at a time
        if self._monotonic() - self._opened_at >= self._cooldown:
            self._state = BreakerState.HALF_OPEN
            return True
        return False

    def _failed(self, exc: Exception) -> None:
        self.stats.failures += 1
        kind = "timeout" if isinstance(exc, TimeoutError) else "error"
        _failures.add(1, {"store": self.name, "kind": kind})
        self._consecutive += 1
        if self._state is BreakerState.HALF_OPEN or self._consecutive >= self._threshold:
            if self._state is not BreakerState.OPEN:
                self.stats.opened += 1
                log.warning(
                    "rate store circuit opened",
                    extra={"failures": self._consecutive, "error": repr(exc)},
                )
            self._state = BreakerState.OPEN
            self._opened_at = self._monotonic()

    def _succeeded(self) -> None:
        if self._state is not BreakerState.CLOSED:
            log.warning("rate store circuit closed")
        self._state = BreakerState.CLOSED
        self._consecutive = 0

    def _fallback(self, plan: Plan, now: float, why: str) -> MeterResult:
        self.stats.fallbacks += 1
        _fallbacks.add(1, {"store": self.name, "policy": plan.on_store_failure})
        if plan.on_store_failure == "fail_closed":
            raise StoreUnavailable(f"rate store unavailable: {why}")
        return self._local.hit_now(plan.local(), now)._replace(degraded=True)
