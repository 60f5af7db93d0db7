"""The seams of the pipeline, gathered in one place.

The pipeline depends only on these protocols; the gRPC server, the replay
command and the tests plug in real or fake implementations. The audit trail's
own seam, `AuditSink`, is here too: authz.audit.sinks has the real sinks, the
tests a memory one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Sequence

    from authz.accounts import Account, KeyRecord
    from authz.audit.chain import ChainHead
    from authz.decision import Decision
    from authz.facts import IPAddress, RequestFacts
    from authz.location import Location
    from authz.metering.plan import Plan
    from authz.metering.result import MeterResult
    from authz.rules import Rules


class Clock(Protocol):
    """A source of time in epoch seconds (real, or replayed from traffic)."""

    def now(self) -> float:
        """Return the current time."""


class RulesSource(Protocol):
    """Hands out the current rules snapshot; reloads swap it atomically."""

    def current(self) -> Rules:
        """Return the snapshot a new request should use."""


class KeyRegistry(Protocol):
    """Maps key digests to accounts; some registries also accept writes."""

    read_only: bool

    async def lookup(self, digest: str) -> KeyRecord | None:
        """The key with this digest, or None. Raises on a dependency fault."""

    async def put_account(self, account: Account) -> None:
        """Create or replace an account."""

    async def get_account(self, account_id: str) -> Account | None:
        """The account, or None."""

    async def add_key(self, record: KeyRecord) -> None:
        """Store a new key (its digest, never its secret)."""

    async def revoke_key(self, key_id: str) -> KeyRecord | None:
        """Mark a key revoked; the updated record, or None when unknown."""

    async def list_keys(self, account_id: str | None = None) -> list[KeyRecord]:
        """All keys, or those of one account, ordered by key id."""


class GeoResolver(Protocol):
    """Locates client addresses (country, network); lookups are synchronous and fast."""

    def locate(self, ip: IPAddress) -> Location:
        """The address's kind, and its country and network when known."""


class RateStore(Protocol):
    """Checks and charges all rate counters of one request in one call."""

    async def hit(self, plan: Plan, now: float) -> MeterResult:
        """Allow and charge every counter of the plan, or refuse and charge nothing.

        `now` is epoch seconds from the pipeline's clock (never the store's).
        Raises on a store fault; `BreakerRateStore` turns faults into the tier's
        failure policy (StoreUnavailable under fail_closed).
        """

    async def aclose(self) -> None:
        """Release connections."""


class DecisionSink(Protocol):
    """Receives every decision once it is made (the record phase)."""

    def record(self, facts: RequestFacts, decision: Decision) -> None:
        """Take a decision; must not block the request path."""


class AuditSink(Protocol):
    """One destination of audit records (the chain is kept by its worker, not by the sink)."""

    name: str

    async def head(self, chain: str) -> ChainHead | None:
        """The last record of `chain` this sink holds, or None. Raises when unreachable."""

    async def write(self, lines: Sequence[str]) -> None:
        """Write chained records (canonical JSON, in order) durably enough to count. Raises."""

    async def aclose(self) -> None:
        """Release the file or connection."""
