"""The Redis rate store on a real three-master Redis Cluster: limits hold across slots."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from redis.asyncio import RedisCluster

from authz.metering.connect import rate_client
from authz.metering.plan import hash_tag
from authz.metering.redis_store import RedisRateStore
from tests.metering_support import T0, compiled, plan_for

pytestmark = pytest.mark.redis


def _run(url: str, body: Callable[[RedisRateStore, RedisCluster], Awaitable[None]]) -> None:
    async def main() -> None:
        client = rate_client(url)
        assert isinstance(client, RedisCluster)
        store = RedisRateStore(client, max_in_flight=64)
        try:
            await client.initialize()
            await body(store, client)
        finally:
            await store.aclose()

    asyncio.run(main())


def _node(client: RedisCluster, tag: str) -> str:
    node = client.get_node_from_key(tag)
    assert node is not None
    return str(node.name)


def _spread(client: RedisCluster) -> tuple[str, str, str]:
    """Two accounts and an entity whose keys live on three different masters."""
    by_node: dict[str, str] = {}
    for i in range(200):
        by_node.setdefault(_node(client, hash_tag("account", f"acct-{i}")), f"acct-{i}")
    accounts = sorted(by_node.items())
    entity_node = accounts[2][0]
    for i in range(200):
        entity = f"org-{i}"
        if _node(client, hash_tag("entity", entity)) == entity_node:
            return accounts[0][1], accounts[1][1], entity
    raise AssertionError("no entity on the third master")


def test_limits_hold_for_accounts_and_their_entity_on_different_masters(
    redis_cluster_url: str,
) -> None:
    """Account limits and the pooled entity limit are exact though all three live apart."""
    limits = compiled("account: {requests: {1m: 3}}\nentity: {requests: {1m: 5}}")

    async def body(store: RedisRateStore, client: RedisCluster) -> None:
        first, second, entity = _spread(client)
        nodes = {
            _node(client, hash_tag("account", first)),
            _node(client, hash_tag("account", second)),
            _node(client, hash_tag("entity", entity)),
        }
        assert len(nodes) == 3
        a, b = plan_for(limits, first, entity), plan_for(limits, second, entity)
        assert [(await store.hit(a, T0 + 1)).allowed for _ in range(4)] == [True] * 3 + [False]
        assert [(await store.hit(b, T0 + 2)).allowed for _ in range(3)] == [True, True, False]
        refused = await store.hit(b, T0 + 3)
        assert refused.violated is not None
        assert refused.violated.name == "entity-requests-1m"

    _run(redis_cluster_url, body)


def test_a_slot_that_charged_is_refunded_when_another_refuses(redis_cluster_url: str) -> None:
    """The account slot allows, the entity slot refuses: the account's charge is given back."""
    limits = compiled(
        "account: {requests: {1m: 10}, tokens: {1d: 10000}}\nentity: {requests: {1m: 2}}"
    )

    async def body(store: RedisRateStore, client: RedisCluster) -> None:
        first, _, entity = _spread(client)
        plan = plan_for(limits, first, entity, tokens=100)
        assert [(await store.hit(plan, T0 + 1)).allowed for _ in range(5)] == [True] * 2 + [
            False
        ] * 3
        assert await client.hget(f"dg:rl:{hash_tag('account', first)}:req:60", "c") == b"2"
        assert await client.hget(f"dg:rl:{hash_tag('account', first)}:tok:86400", "c") == b"200"
        refused = await store.hit(plan, T0 + 2)
        assert [s.remaining for s in refused.limits] == [8, 9800, 0]

    _run(redis_cluster_url, body)


def test_concurrent_checks_across_slots_never_exceed_any_limit(redis_cluster_url: str) -> None:
    """150 concurrent checks of two accounts sharing an entity never exceed a limit, and after
    refunds every counter equals what was actually allowed."""
    limits = compiled("account: {requests: {1m: 20}}\nentity: {requests: {1m: 30}}")

    async def body(store: RedisRateStore, client: RedisCluster) -> None:
        first, second, entity = _spread(client)
        plans = [plan_for(limits, first, entity), plan_for(limits, second, entity)]
        results = await asyncio.gather(*(store.hit(plans[i % 2], T0 + 1) for i in range(150)))
        allowed = [sum(r.allowed for r in results[i::2]) for i in range(2)]
        assert allowed[0] <= 20 and allowed[1] <= 20 and sum(allowed) <= 30
        # A charge awaiting its refund may refuse a concurrent check (never the reverse);
        # once all is settled, the quota it held is usable again: 30 in all, exactly.
        for _ in range(30):
            for i in range(2):
                allowed[i] += (await store.hit(plans[i], T0 + 2)).allowed
        assert allowed[0] <= 20 and allowed[1] <= 20 and sum(allowed) == 30
        counts = [
            await client.hget(f"dg:rl:{hash_tag('account', a)}:req:60", "c")
            for a in (first, second)
        ]
        assert counts == [str(n).encode() for n in allowed]
        entity_count = await client.hget(f"dg:rl:{hash_tag('entity', entity)}:req:60", "c")
        assert entity_count == str(sum(allowed)).encode()

    _run(redis_cluster_url, body)


def test_script_flush_on_every_master_is_recovered_from(redis_cluster_url: str) -> None:
    """After SCRIPT FLUSH on all masters, each slot's call reloads the script and counts on."""
    limits = compiled("account: {requests: {1m: 5}}\nentity: {requests: {1m: 50}}")

    async def body(store: RedisRateStore, client: RedisCluster) -> None:
        first, _, entity = _spread(client)
        plan = plan_for(limits, first, entity)
        assert (await store.hit(plan, T0)).limits[0].remaining == 4
        for node in client.get_primaries():
            await client.execute_command("SCRIPT", "FLUSH", target_nodes=node)
        assert [s.remaining for s in (await store.hit(plan, T0 + 1)).limits] == [3, 48]

    _run(redis_cluster_url, body)
