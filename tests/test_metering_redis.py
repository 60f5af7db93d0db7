"""The Redis rate store against a real redis-server: keys, expiry, round trips, scripts, races."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from authz.metering.connect import rate_client
from authz.metering.memory import MemoryRateStore
from authz.metering.redis_store import RedisRateStore
from tests.metering_support import T0, compiled, plan_for

pytestmark = pytest.mark.redis

_TYPICAL = compiled(
    """
account: {requests: {1m: 20, 1h: 300, 1d: 2000}, tokens: {1d: 1000000}}
entity: {requests: {1m: 100, 1d: 20000}}
anomaly: {action: record}
"""
)


def _run(url: str, body: object) -> None:
    async def main() -> None:
        client = rate_client(url)
        assert isinstance(client, Redis)
        store = RedisRateStore(client)
        try:
            await body(store, client)  # type: ignore[operator]
        finally:
            await client.aclose()

    asyncio.run(main())


def test_keys_are_the_documented_literal_keys_with_their_fields(redis_url: str) -> None:
    """One request writes exactly the keys plan.py names, hashes of bucket/cur/prev and h/c/v."""

    async def body(store: RedisRateStore, client: Redis) -> None:
        await store.hit(plan_for(_TYPICAL, "alice", "acme", tokens=700), T0 + 61)
        assert sorted(await client.keys("*")) == [
            b"dg:rl:{a:alice}:req:3600",
            b"dg:rl:{a:alice}:req:60",
            b"dg:rl:{a:alice}:req:86400",
            b"dg:rl:{a:alice}:tok:86400",
            b"dg:rl:{a:alice}:vol",
            b"dg:rl:{e:acme}:req:60",
            b"dg:rl:{e:acme}:req:86400",
            b"dg:rl:{e:acme}:vol",
        ]
        minute_bucket = int(T0 + 61) // 60
        assert await client.hgetall("dg:rl:{a:alice}:req:60") == {
            b"b": str(minute_bucket).encode(),
            b"c": b"1",
            b"p": b"0",
        }
        assert await client.hgetall("dg:rl:{a:alice}:tok:86400") == {
            b"b": str(int(T0) // 86400).encode(),
            b"c": b"700",
            b"p": b"0",
        }
        # No baseline yet: hour and count only (`m` appears once an hour has completed).
        assert await client.hgetall("dg:rl:{e:acme}:vol") == {
            b"h": str(int(T0) // 3600).encode(),
            b"c": b"1",
            b"v": b"0",
        }

    _run(redis_url, body)


def test_keys_expire_two_windows_after_their_last_write(redis_url: str) -> None:
    """PEXPIRE is 2 x window + 60 s for counters and 170 h for volume baselines."""

    async def body(store: RedisRateStore, client: Redis) -> None:
        await store.hit(plan_for(_TYPICAL, "alice", "acme", tokens=1), T0)
        expected = {
            "dg:rl:{a:alice}:req:60": 180_000,
            "dg:rl:{a:alice}:req:3600": 7_260_000,
            "dg:rl:{a:alice}:tok:86400": 172_860_000,
            "dg:rl:{a:alice}:vol": 170 * 3_600_000,
        }
        for key, ttl in expected.items():
            left = await client.pttl(key)
            assert ttl - 5_000 < left <= ttl, key

    _run(redis_url, body)


def test_a_check_is_exactly_one_evalsha(redis_url: str) -> None:
    """Account and entity counters together cost one EVALSHA per request, and nothing else."""

    async def body(store: RedisRateStore, client: Redis) -> None:
        plan = plan_for(_TYPICAL, "alice", "acme", tokens=10)
        await store.hit(plan, T0)  # loads the script (NOSCRIPT on a fresh server)
        await client.config_resetstat()
        sent: list[object] = []
        execute = client.execute_command

        async def counting(*args: object, **options: object) -> object:
            sent.append(args[0])
            return await execute(*args, **options)  # type: ignore[no-untyped-call]

        client.execute_command = counting  # type: ignore[method-assign]
        for i in range(3):
            await store.hit(plan, T0 + i)
        client.execute_command = execute  # type: ignore[method-assign]
        assert sent == ["EVALSHA"] * 3
        stats = await client.info("commandstats")
        assert stats["cmdstat_evalsha"]["calls"] == 3
        # Everything else the server ran was inside the script (no EVAL, no SCRIPT LOAD).
        assert not {"cmdstat_eval", "cmdstat_script|load"} & set(stats)

    _run(redis_url, body)


def test_script_flush_is_recovered_from(redis_url: str) -> None:
    """After SCRIPT FLUSH the next check reloads the script (NOSCRIPT) and keeps counting."""

    async def body(store: RedisRateStore, client: Redis) -> None:
        plan = plan_for(compiled("account: {requests: {1m: 5}}"))
        assert (await store.hit(plan, T0)).limits[0].remaining == 4
        await client.script_flush()
        assert (await store.hit(plan, T0 + 1)).limits[0].remaining == 3

    _run(redis_url, body)


def test_concurrent_checks_never_exceed_the_limit(redis_url: str) -> None:
    """200 concurrent checks for one account with 50 per minute: exactly 50 pass."""

    async def body(store: RedisRateStore, client: Redis) -> None:
        plan = plan_for(compiled("account: {requests: {1m: 50}}\nentity: {requests: {1m: 500}}"))
        results = await asyncio.gather(*(store.hit(plan, T0 + 1) for _ in range(200)))
        assert sum(r.allowed for r in results) == 50
        assert await client.hget("dg:rl:{a:alice}:req:60", "c") == b"50"
        assert await client.hget("dg:rl:{e:acme}:req:60", "c") == b"50"

    _run(redis_url, body)


# --- the memory store and the Lua script agree -----------------------------------------

_EQUIV = compiled(
    """
account: {requests: {1m: 5, 1h: 20}, tokens: {1h: 2000}}
entity: {requests: {1m: 8}}
models: {"frontier-*": {account: {requests: {1m: 2}}, entity: {tokens: {1d: 3000}}}}
anomaly: {z_score: 1, multiple: 2, min_baseline: 3, smoothing: 0.3, action: throttle,
          throttle_factor: 0.5}
"""
)
_ACCOUNTS = [("a0", "e0"), ("a1", "e0"), ("a2", "e1")]
_STEP = st.tuples(
    st.integers(0, 2),
    st.sampled_from([None, "small-1", "frontier-2"]),
    st.integers(0, 600),
    st.one_of(
        st.integers(0, 5_000),
        st.sampled_from([59_999, 60_000, 3_599_000, 3_600_000, 7_200_000, 170 * 3_600_000]),
    ),
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(steps=st.lists(_STEP, min_size=1, max_size=40))
def test_memory_and_redis_agree_on_random_sequences(
    redis_url: str, steps: list[tuple[int, str | None, int, int]]
) -> None:
    """Both stores give equal results (decisions, remaining, signals) for any request sequence."""

    async def main() -> None:
        store = RedisRateStore(rate_client(redis_url))
        await store.client.flushall()
        memory = MemoryRateStore()
        now_ms = int(T0 * 1000) + 17
        try:
            for who, model, tokens, dt in steps:
                now_ms += dt
                account, entity = _ACCOUNTS[who]
                plan = plan_for(_EQUIV, account, entity, model, tokens)
                expected = await memory.hit(plan, now_ms / 1000)
                assert await store.hit(plan, now_ms / 1000) == expected
        finally:
            await store.aclose()

    asyncio.run(main())
