"""The RateStore seam (to move into authz.protocols) and its one documented fault."""

from __future__ import annotations

from typing import Protocol

from authz.metering.plan import Plan
from authz.metering.result import MeterResult


class RateStore(Protocol):
    """Checks and charges all counters of one request in one call."""

    async def hit(self, plan: Plan, now: float) -> MeterResult:
        """Allow and charge every counter of the plan, or refuse and charge nothing.

        `now` is epoch seconds from the pipeline's clock (never the store's).
        Raises on a store fault; `BreakerRateStore` turns faults into the tier's
        failure policy.
        """


class StoreUnavailable(Exception):
    """The counter store cannot answer and the tier says `on_store_failure: fail_closed`."""
