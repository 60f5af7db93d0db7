"""First-party fakes for the pipeline's protocols (unit tests only).

Each has a real counterpart exercised elsewhere: WatchedFile (test_reload),
the Redis registry (test_registry_redis), the audit queue (test_audit_queue).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from authz.accounts import Account, KeyRecord, Kyc
from authz.clock import ManualClock
from authz.decision import Decision
from authz.facts import IPAddress, RequestFacts, parse_ip
from authz.keys import KeyHasher
from authz.location import AddressKind, Location
from authz.metering import MemoryRateStore
from authz.pipeline import Pipeline
from authz.protocols import KeyRegistry, RateStore
from authz.registry import MemoryRegistry
from authz.rules import Rules, load_rules, parse_rules

DEMO_DIR = Path(__file__).parents[1] / "authz" / "demo"
DEMO_RULES = DEMO_DIR / "rules.yaml"
DEMO_ACCOUNTS = DEMO_DIR / "accounts.jsonl"

ACME_KEY = "dg_demo_enterprise_acme_0001"
BOB_KEY = "dg_demo_pro_bob_000000001"
BOB_REVOKED = "dg_demo_pro_bob_revoked01"
CAROL_KEY = "dg_demo_free_carol_00001"
DAVE_KEY = "dg_demo_pro_dave_0000001"
DAVE_EXPIRED = "dg_demo_pro_dave_expired1"


class StaticRules:
    """A RulesSource that always hands out the same snapshot."""

    def __init__(self, rules: Rules) -> None:
        self.rules = rules

    def current(self) -> Rules:
        """The fixed snapshot."""
        return self.rules

    @classmethod
    def demo(cls) -> StaticRules:
        """The bundled demo rules."""
        return cls(load_rules(DEMO_RULES))

    @classmethod
    def of(cls, text: str) -> StaticRules:
        """Rules from YAML text."""
        return cls(parse_rules(text.encode(), source="<test>"))


class StaticGeo:
    """A GeoResolver answering from a table; unknown addresses are public and in US."""

    def __init__(self, table: dict[str, Location] | None = None) -> None:
        self.table = table or {}

    def locate(self, ip: IPAddress) -> Location:
        """The table's answer for this address."""
        return self.table.get(str(ip), Location(AddressKind.PUBLIC, "US", 64500, "Example Net"))


class RecordingSink:
    """A DecisionSink that keeps what it is given."""

    def __init__(self) -> None:
        self.records: list[tuple[RequestFacts, Decision]] = []

    def record(self, facts: RequestFacts, decision: Decision) -> None:
        """Keep the pair."""
        self.records.append((facts, decision))


class BrokenRegistry(MemoryRegistry):
    """A registry whose lookups fail like an unreachable store."""

    async def lookup(self, digest: str) -> KeyRecord | None:
        """Always fail."""
        raise ConnectionError("store unreachable")


class SlowRegistry(MemoryRegistry):
    """A registry that answers after a delay (for deadlines and graceful shutdown)."""

    def __init__(self, inner: MemoryRegistry, delay: float) -> None:
        super().__init__()
        self.inner = inner
        self.delay = delay

    async def lookup(self, digest: str) -> KeyRecord | None:
        """Answer from `inner` after `delay` seconds."""
        await asyncio.sleep(self.delay)
        return await self.inner.lookup(digest)


def demo_registry() -> MemoryRegistry:
    """The demo accounts as a registry."""
    from authz.registry import load_file_registry

    return load_file_registry(DEMO_ACCOUNTS, KeyHasher())


def make_pipeline(
    registry: KeyRegistry | None = None,
    rules: StaticRules | None = None,
    clock: ManualClock | None = None,
    geo: StaticGeo | None = None,
    rates: RateStore | None = None,
) -> tuple[Pipeline, RecordingSink]:
    """A pipeline over the demo rules and accounts, with a recording sink."""
    sink = RecordingSink()
    pipeline = Pipeline(
        rules=rules or StaticRules.demo(),
        registry=registry or demo_registry(),
        hasher=KeyHasher(),
        geo=geo or StaticGeo(),
        rates=rates if rates is not None else MemoryRateStore(),
        clock=clock or ManualClock(1_790_000_000.0),
        sink=sink,
    )
    return pipeline, sink


def facts(
    headers: dict[str, str] | None = None,
    *,
    body: bytes | None = None,
    path: str = "/v1/messages",
    method: str = "POST",
    source: str = "79.192.3.4",
    partial: bool = False,
) -> RequestFacts:
    """Request facts as the edge would produce them."""
    return RequestFacts(
        method=method,
        path=path,
        host="api.example",
        headers=headers or {},
        client_ip=parse_ip(source),
        source=source,
        body=body,
        body_partial=partial,
        request_id="req-1",
    )


def account(name: str = "acct", tier: str = "pro", kyc: Kyc = Kyc.VERIFIED) -> Account:
    """An account value for tests."""
    return Account(account=name, entity=name + "-org", tier=tier, kyc=kyc, country="US")
