"""Helpers shared by the metering tests: compiled limits from YAML, stores by URL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import yaml

from authz.metering.connect import rate_client
from authz.metering.memory import MemoryRateStore
from authz.metering.plan import Plan, build_plan
from authz.metering.redis_store import RedisRateStore
from authz.metering.rules import CompiledLimits, LimitRules, compile_limits

# A UTC midnight: minute, hour and day buckets all start here.
T0 = 1_699_920_000.0

Store = MemoryRateStore | RedisRateStore


def compiled(text: str) -> CompiledLimits:
    """Compile a `limits:` section written in YAML."""
    return compile_limits(LimitRules.model_validate(yaml.safe_load(text)))


def plan_for(
    limits: CompiledLimits,
    account: str = "alice",
    entity: str = "acme",
    model: str | None = None,
    tokens: int = 0,
) -> Plan:
    """A plan with test defaults."""
    return build_plan(limits, account=account, entity=entity, model=model, tokens=tokens)


@asynccontextmanager
async def rate_store(url: str) -> AsyncIterator[Store]:
    """A MemoryRateStore for `memory://`, else a RedisRateStore (no breaker) on the URL."""
    if url.startswith("memory:"):
        yield MemoryRateStore()
        return
    store = RedisRateStore(rate_client(url))
    try:
        yield store
    finally:
        await store.aclose()


def run(url: str, body: Callable[[Store], Awaitable[None]]) -> None:
    """Run an async test body against the store the URL names."""

    async def main() -> None:
        async with rate_store(url) as store:
            await body(store)

    asyncio.run(main())
