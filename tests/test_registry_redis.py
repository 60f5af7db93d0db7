"""The Redis key registry against a real redis-server: layout, writes, and the lookup cache."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from redis.asyncio import Redis

from authz.accounts import Account, KeyRecord, Kyc
from authz.clock import ManualClock
from authz.registry_redis import RedisRegistry, decode_record

pytestmark = pytest.mark.redis

ALICE = Account("alice", "alice-org", "free", Kyc.UNVERIFIED, "FR", created=1.0)
BOB = Account("bob", "bob", "pro", Kyc.VERIFIED, "DE")


def _record(key_id: str, account: Account = ALICE, **changes: object) -> KeyRecord:
    digest = (key_id.encode().hex() * 64)[:64]
    return dataclasses.replace(KeyRecord(key_id, digest, account), **changes)  # type: ignore[arg-type]


@asynccontextmanager
async def _client(url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(url)
    try:
        yield client
    finally:
        await client.aclose()


def _run(url: str, body: Callable[[Redis], Awaitable[None]]) -> None:
    async def main() -> None:
        async with _client(url) as client:
            await body(client)

    asyncio.run(main())


def test_add_then_lookup_uses_the_documented_layout(redis_url: str) -> None:
    """A stored key is found by digest, and Redis holds it under the keys docs/accounts.md names."""

    async def body(client: Redis) -> None:
        registry = RedisRegistry(client, clock=ManualClock(100.0))
        record = _record("k_1", expires=500.0, created=90.0)
        await registry.add_key(record)
        assert await registry.lookup(record.digest) == record
        assert await registry.lookup("0" * 64) is None
        stored = await client.get(f"dg:reg:key:{record.digest}")
        assert stored is not None
        assert decode_record(stored) == record
        assert await client.get("dg:reg:id:k_1") == record.digest.encode()
        assert await client.smembers("dg:reg:acct-keys:alice") == {b"k_1"}
        assert await client.smembers("dg:reg:accounts") == {b"alice"}

    _run(redis_url, body)


def test_add_refuses_a_key_id_that_exists(redis_url: str) -> None:
    """Two keys can never share an id, even with different digests."""

    async def body(client: Redis) -> None:
        registry = RedisRegistry(client, clock=ManualClock())
        await registry.add_key(_record("k_1"))
        with pytest.raises(ValueError, match="key id 'k_1' already exists"):
            await registry.add_key(dataclasses.replace(_record("k_1"), digest="f" * 64))

    _run(redis_url, body)


def test_revoke_marks_the_record_and_unknown_ids_give_none(redis_url: str) -> None:
    """Revoking keeps the record, flagged revoked; an unknown key id is not an error."""

    async def body(client: Redis) -> None:
        registry = RedisRegistry(client, clock=ManualClock())
        record = _record("k_1")
        await registry.add_key(record)
        revoked = await registry.revoke_key("k_1")
        assert revoked == dataclasses.replace(record, revoked=True)
        assert await registry.lookup(record.digest) == revoked
        assert await registry.revoke_key("k_nope") is None

    _run(redis_url, body)


def test_list_keys_all_and_per_account_in_key_id_order(redis_url: str) -> None:
    """list_keys returns every key, or one account's, sorted by key id."""

    async def body(client: Redis) -> None:
        registry = RedisRegistry(client, clock=ManualClock())
        for record in (_record("k_c"), _record("k_a", BOB), _record("k_b")):
            await registry.add_key(record)
        assert [r.key_id for r in await registry.list_keys()] == ["k_a", "k_b", "k_c"]
        assert [r.key_id for r in await registry.list_keys("alice")] == ["k_b", "k_c"]
        assert await registry.list_keys("nobody") == []

    _run(redis_url, body)


def test_put_account_is_read_back_and_reaches_its_keys(redis_url: str) -> None:
    """Changing an account (a tier upgrade) changes what its keys resolve to, other accounts not."""

    async def body(client: Redis) -> None:
        registry = RedisRegistry(client, clock=ManualClock())
        await registry.put_account(ALICE)
        assert await registry.get_account("alice") == ALICE
        assert await registry.get_account("nobody") is None
        alice_key, bob_key = _record("k_1"), _record("k_2", BOB)
        await registry.add_key(alice_key)
        await registry.add_key(bob_key)
        assert await registry.lookup(alice_key.digest) is not None  # now cached
        upgraded = dataclasses.replace(ALICE, tier="pro", kyc=Kyc.VERIFIED)
        await registry.put_account(upgraded)
        assert await registry.get_account("alice") == upgraded
        found = await registry.lookup(alice_key.digest)
        assert found is not None
        assert found.account == upgraded
        assert await registry.lookup(bob_key.digest) == bob_key

    _run(redis_url, body)


def test_revocation_reaches_the_revoking_instance_at_once(redis_url: str) -> None:
    """The replica that revokes drops its cached entry, so it denies the key immediately."""

    async def body(client: Redis) -> None:
        registry = RedisRegistry(client, clock=ManualClock(), cache_ttl=60.0)
        record = _record("k_1")
        await registry.add_key(record)
        assert await registry.lookup(record.digest) == record
        await registry.revoke_key("k_1")
        found = await registry.lookup(record.digest)
        assert found is not None
        assert found.revoked

    _run(redis_url, body)


def test_revocation_reaches_other_instances_after_the_cache_ttl(redis_url: str) -> None:
    """Another replica keeps its cached record until the TTL passes, then sees the revocation."""

    async def body(client: Redis) -> None:
        clock = ManualClock(1000.0)
        writer = RedisRegistry(client, clock=clock, cache_ttl=5.0)
        reader = RedisRegistry(client, clock=clock, cache_ttl=5.0)
        record = _record("k_1")
        await writer.add_key(record)
        assert await reader.lookup(record.digest) == record
        await writer.revoke_key("k_1")
        clock.advance(4.9)
        cached = await reader.lookup(record.digest)
        assert cached is not None
        assert not cached.revoked  # the documented revocation delay
        clock.advance(0.2)
        fresh = await reader.lookup(record.digest)
        assert fresh is not None
        assert fresh.revoked

    _run(redis_url, body)


def test_no_cache_reads_redis_every_time(redis_url: str) -> None:
    """With cache_ttl 0 (the CLI's setting) every lookup sees the store as it is."""

    async def body(client: Redis) -> None:
        writer = RedisRegistry(client, clock=ManualClock())
        reader = RedisRegistry(client, clock=ManualClock(), cache_ttl=0)
        record = _record("k_1")
        await writer.add_key(record)
        assert await reader.lookup(record.digest) == record
        await writer.revoke_key("k_1")
        found = await reader.lookup(record.digest)
        assert found is not None
        assert found.revoked

    _run(redis_url, body)


@pytest.mark.redis
def test_account_edit_keeps_a_revocation_made_meanwhile(redis_url: str) -> None:
    """put_account changes only the account part of each key record: a revoke is never undone."""
    from authz.registry_redis import PREFIX

    async def body(client: Redis) -> None:
        registry = RedisRegistry(client, clock=ManualClock(0), cache_ttl=0)
        acct = Account("race", "race-org", "free", Kyc.VERIFIED, "US")
        await registry.put_account(acct)
        await registry.add_key(KeyRecord("k_race", "d" * 64, acct))
        # Another admin revokes while this put_account's list_keys answer is in hand.
        original = registry.list_keys

        async def list_then_revoke(account_id: str | None = None) -> list[KeyRecord]:
            records = await original(account_id)
            await registry.revoke_key("k_race")
            return records

        registry.list_keys = list_then_revoke  # type: ignore[method-assign]
        await registry.put_account(Account("race", "race-org", "pro", Kyc.VERIFIED, "US"))
        record = decode_record(await client.get(PREFIX + "key:" + "d" * 64))
        assert record.revoked and record.account.tier == "pro"

    _run(redis_url, body)
