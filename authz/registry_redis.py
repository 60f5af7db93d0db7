"""The Redis key registry: dynamic sign-ups shared by every distill-guard replica.

Layout (all keys under `dg:reg:`; one digest or id per key, so it works on Redis Cluster):
- `dg:reg:key:<digest>`   JSON key record, account fields included, so a lookup is one GET;
- `dg:reg:id:<key id>`     the digest of that key (revoke and list by id);
- `dg:reg:acct:<account>`  JSON account;
- `dg:reg:acct-keys:<account>` set of key ids; `dg:reg:accounts` set of account ids.

Updates of an existing key record (revoking it, or changing its account's
fields) run as small Lua scripts on that one key, so two admins acting at once
cannot undo each other's change (a revocation is never lost to an account edit).

Lookups are cached in-process for `cache_ttl` seconds (bounded LRU), so a
revocation reaches other replicas within that time; the replica that revokes
drops its own cache entry at once.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any

from redis.asyncio import Redis, RedisCluster

from authz.accounts import Account, KeyRecord, Kyc
from authz.protocols import Clock
from authz.redistext import text

PREFIX = "dg:reg:"

# Replace the account copy inside one key record, if the record exists.
_SET_ACCOUNT = """
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local record = cjson.decode(raw)
record['account'] = cjson.decode(ARGV[1])
redis.call('SET', KEYS[1], cjson.encode(record))
return 1
"""

# Mark one key record revoked and return it.
_REVOKE = """
local raw = redis.call('GET', KEYS[1])
if not raw then return false end
local record = cjson.decode(raw)
record['revoked'] = true
local out = cjson.encode(record)
redis.call('SET', KEYS[1], out)
return out
"""


def _account_json(a: Account) -> dict[str, Any]:
    return {
        "account": a.account,
        "entity": a.entity,
        "tier": a.tier,
        "kyc": a.kyc.value,
        "country": a.country,
        "created": a.created,
    }


def _account_from(d: dict[str, Any]) -> Account:
    return Account(
        account=d["account"],
        entity=d["entity"],
        tier=d["tier"],
        kyc=Kyc(d["kyc"]),
        country=d["country"],
        created=d.get("created"),
    )


def encode_record(r: KeyRecord) -> str:
    """The JSON stored for a key (digest and metadata only)."""
    return json.dumps(
        {
            "key_id": r.key_id,
            "digest": r.digest,
            "expires": r.expires,
            "revoked": r.revoked,
            "created": r.created,
            "account": _account_json(r.account),
        },
        separators=(",", ":"),
    )


def decode_record(raw: str | bytes) -> KeyRecord:
    """Inverse of encode_record."""
    d = json.loads(raw)
    return KeyRecord(
        key_id=d["key_id"],
        digest=d["digest"],
        account=_account_from(d["account"]),
        expires=d.get("expires"),
        revoked=bool(d.get("revoked")),
        created=d.get("created"),
    )


class RedisRegistry:
    """KeyRegistry over Redis, with a small in-process lookup cache."""

    read_only = False

    def __init__(
        self,
        client: Redis | RedisCluster,
        *,
        clock: Clock,
        cache_ttl: float = 5.0,
        cache_size: int = 100_000,
    ) -> None:
        self._redis = client
        self._clock = clock
        self._ttl = cache_ttl
        self._size = cache_size
        self._cache: OrderedDict[str, tuple[float, KeyRecord]] = OrderedDict()
        self._set_account = client.register_script(_SET_ACCOUNT)
        self._revoke = client.register_script(_REVOKE)

    async def lookup(self, digest: str) -> KeyRecord | None:
        """The key with this digest: from the cache when fresh, else one GET."""
        now = self._clock.now()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            self._cache.move_to_end(digest)
            return hit[1]
        raw = await self._redis.get(PREFIX + "key:" + digest)
        if raw is None:
            self._cache.pop(digest, None)
            return None
        record = decode_record(raw)
        if self._ttl > 0:
            self._cache[digest] = (now + self._ttl, record)
            self._cache.move_to_end(digest)
            if len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return record

    async def put_account(self, account: Account) -> None:
        """Create or replace an account and rewrite its keys' copies of it.

        Each key record is updated by a script that replaces only its `account`
        part, so a revocation landing meanwhile is kept.
        """
        account_json = json.dumps(_account_json(account))
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.set(PREFIX + "acct:" + account.account, account_json)
            pipe.sadd(PREFIX + "accounts", account.account)
            await pipe.execute()
        for r in await self.list_keys(account.account):
            await self._set_account(keys=[PREFIX + "key:" + r.digest], args=[account_json])
            self._cache.pop(r.digest, None)

    async def get_account(self, account_id: str) -> Account | None:
        """The account, or None."""
        raw = await self._redis.get(PREFIX + "acct:" + account_id)
        return None if raw is None else _account_from(json.loads(raw))

    async def add_key(self, record: KeyRecord) -> None:
        """Store a new key; refuses a key id that exists."""
        if not await self._redis.set(PREFIX + "id:" + record.key_id, record.digest, nx=True):
            raise ValueError(f"key id {record.key_id!r} already exists")
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.set(PREFIX + "key:" + record.digest, encode_record(record))
            pipe.sadd(PREFIX + "acct-keys:" + record.account.account, record.key_id)
            pipe.sadd(PREFIX + "accounts", record.account.account)
            await pipe.execute()

    async def revoke_key(self, key_id: str) -> KeyRecord | None:
        """Mark a key revoked."""
        digest = await self._redis.get(PREFIX + "id:" + key_id)
        if digest is None:
            return None
        digest = text(digest)
        raw = await self._revoke(keys=[PREFIX + "key:" + digest])
        self._cache.pop(digest, None)
        return None if raw is None else decode_record(raw)

    async def list_keys(self, account_id: str | None = None) -> list[KeyRecord]:
        """All keys, or one account's, ordered by key id."""
        if account_id is None:
            accounts = sorted(text(a) for a in await self._redis.smembers(PREFIX + "accounts"))
        else:
            accounts = [account_id]
        async with self._redis.pipeline(transaction=False) as pipe:
            for acct in accounts:
                pipe.smembers(PREFIX + "acct-keys:" + acct)
            ids = sorted(text(i) for members in await pipe.execute() for i in members)
        async with self._redis.pipeline(transaction=False) as pipe:
            for key_id in ids:
                pipe.get(PREFIX + "id:" + key_id)
            digests = [d for d in await pipe.execute() if d is not None]
        async with self._redis.pipeline(transaction=False) as pipe:
            for digest in digests:
                pipe.get(PREFIX + "key:" + text(digest))
            raws = await pipe.execute()
        return [decode_record(raw) for raw in raws if raw is not None]
