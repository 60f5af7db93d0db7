"""A batch of audit records summed in memory, as the script operations that update the rollups.

Pure arithmetic, no Redis: `RollupBatch` turns records into increments of the
keys authz.audit.rollup_keys lays out; `chunked` cuts those operations into
pieces small enough for one short script each (authz.audit.roller runs them).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping
from typing import Any

from authz.audit.rollup_keys import (
    ASN_ORG_KEY,
    DAY,
    DIMENSIONS,
    HOUR,
    META_FIELDS,
    NONE,
    PREFIX,
    Retention,
    account_key,
    hour_bucket,
    total_key,
)

# ZSET names of the four dimensions, per measure.
_ZSET_NAMES = {m: tuple(f"{dim}:{m}" for dim in DIMENSIONS) for m in ("req", "deny", "tok")}
# Families of counters a batch accumulates before they become keys (see `_key`).
_TOTAL, _ZSET, _ACCOUNT = "T", "Z", "A"
CounterKey = tuple[str, str, str]  # family, hour bucket, name (see `_key`)
# hour, account, entity, country, asn, network, reason, denied, signals, would_deny
Shape = tuple[str, str, str, str, str, str, str, bool, tuple[str, ...], str]


class RollupBatch:
    """Increments of a batch of records, summed in memory before one trip to Redis.

    `add` only counts each record's shape (hour, who, where, outcome); records of
    the same shape, common in real traffic, are expanded into counters once, in `ops`.
    """

    __slots__ = ("_meta", "_orgs", "_shapes", "_tokens", "invalid")

    def __init__(self) -> None:
        self._shapes: dict[Shape, int] = {}
        self._tokens: dict[Shape, int] = {}
        self._meta: dict[tuple[str, str], tuple[str, ...]] = {}
        self._orgs: dict[str, str] = {}
        self.invalid = 0

    def add(self, rec: Mapping[str, Any]) -> None:
        """Count one record (a dict in the canonical JSON shape); raises on a malformed one."""
        get = rec.get
        asn = str(int(get("asn") or 0))
        signals = tuple(get("signals") or ())
        shape = (
            hour_bucket(rec["time"]),
            get("account") or NONE,
            get("entity") or NONE,
            get("country") or NONE,
            asn,
            get("client_network") or NONE,
            get("reason") or NONE,
            get("action") == "deny",
            signals,
            get("would_deny") or "",
        )
        meta = (shape[2], get("tier") or NONE, get("kyc") or NONE, get("kyc_country") or NONE)
        if not all(isinstance(v, str) for v in (*shape[1:7], *signals, shape[9], *meta)):
            raise TypeError("a text field of the record is not a string")
        shapes = self._shapes
        shapes[shape] = shapes.get(shape, 0) + 1
        tokens = int(get("estimated_tokens") or 0)
        if tokens:
            self._tokens[shape] = self._tokens.get(shape, 0) + tokens
        self._meta[(shape[1], shape[0])] = meta  # the latest record's
        org = get("as_org")
        if org and asn != "0":
            self._orgs[asn] = str(org)

    def _hourly(self) -> dict[CounterKey, dict[str, int]]:
        """Counters per (family, hour, name)."""
        maps: defaultdict[CounterKey, defaultdict[str, int]] = defaultdict(lambda: defaultdict(int))
        tokens_of = self._tokens.get
        for shape, n in self._shapes.items():
            hb, account, entity, country, asn, net, reason, denied, signals, wd = shape
            tok = tokens_of(shape, 0)
            pair = f"{account}|{entity}"
            total = maps[(_TOTAL, hb, "")]
            acct = maps[(_ACCOUNT, hb, account)]
            total["req"] += n
            acct["req"] += n
            acct["cc:" + country] += n
            acct["net:" + net] += n
            acct["asn:" + asn] += n
            acct["reason:" + reason] += n
            measures = [("req", n)]
            if denied:
                measures.append(("deny", n))
                total["deny"] += n
                acct["deny"] += n
            if tok:
                measures.append(("tok", tok))
                total["tok"] += tok
                acct["tok"] += tok
            for measure, amount in measures:
                names = _ZSET_NAMES[measure]
                maps[(_ZSET, hb, names[0])][account] += amount
                maps[(_ZSET, hb, names[1])][entity] += amount
                maps[(_ZSET, hb, names[2])][country] += amount
                maps[(_ZSET, hb, names[3])][asn] += amount
                maps[(_ZSET, hb, f"cc:{country}:{measure}")][pair] += amount
            if signals:
                total["sig"] += n
                acct["sig"] += n
                maps[(_ZSET, hb, f"cc:{country}:sig")][pair] += n
                for name in signals:
                    acct["sig:" + name] += n
            if wd:
                acct["wd:" + wd] += n
        return maps  # type: ignore[return-value]

    def ops(self, retention: Retention, now: float) -> tuple[list[list[Any]], int]:
        """The batch as script operations `[key, kind, expire_at, [field, amount, ...]]`.

        Kinds: `h` HINCRBY, `z` ZINCRBY (member, amount), `s` HSET. Also returns how
        many records were skipped because every bucket they fall in has expired.
        """
        maps = self._hourly()
        expiry: dict[str, tuple[int, str, int]] = {}
        for hb in {hb for _, hb, _ in maps}:
            day = hb[:8]
            expiry[hb] = (retention.expire_at(HOUR, hb), day, retention.expire_at(DAY, day))
        grouped: dict[str, tuple[str, int, dict[str, int]]] = {}
        expired = 0
        for (family, hb, name), counts in maps.items():
            hour_at, day, day_at = expiry[hb]
            if family == _TOTAL and hour_at <= now and day_at <= now:
                expired += counts["req"]
            kind = "z" if family == _ZSET else "h"
            for granularity, bucket, at in ((HOUR, hb, hour_at), (DAY, day, day_at)):
                if at <= now:
                    continue
                key = _key(family, granularity, bucket, name)
                slot = grouped.get(key)
                if slot is None:
                    grouped[key] = (kind, at, dict(counts))
                    continue
                merged = slot[2]
                for member, amount in counts.items():
                    merged[member] = merged.get(member, 0) + amount
        out: list[list[Any]] = [
            [key, kind, at, [x for item in fields.items() for x in item]]
            for key, (kind, at, fields) in grouped.items()
        ]
        for (account, hb), meta in self._meta.items():
            fields_set = [x for item in zip(META_FIELDS, meta, strict=True) for x in item]
            hour_at, day, day_at = expiry[hb]
            for granularity, bucket, at in ((HOUR, hb, hour_at), (DAY, day, day_at)):
                if at > now:
                    out.append([account_key(account, granularity, bucket), "s", at, fields_set])
        if self._orgs:
            at = int(now + retention.days)
            out.append([ASN_ORG_KEY, "s", at, [x for item in self._orgs.items() for x in item]])
        return out, expired


def _key(family: str, granularity: str, bucket: str, name: str) -> str:
    if family == _ACCOUNT:
        return account_key(name, granularity, bucket)
    if family == _TOTAL:
        return total_key(granularity, bucket)
    return f"{PREFIX}:{granularity}:{bucket}:{name}"


def chunked(ops: list[list[Any]], size: int) -> Iterator[list[list[Any]]]:
    """Operations in chunks of about `size` field updates (a big key is split across chunks)."""
    chunk: list[list[Any]] = []
    room = size
    for key, kind, at, args in ops:
        if kind == "s":  # one HSET
            chunk.append([key, kind, at, args])
            room -= 1
        else:
            start = 0
            while start < len(args):
                take = max(1, min(room, (len(args) - start) // 2)) * 2
                chunk.append([key, kind, at, args[start : start + take]])
                start += take
                room -= take // 2
                if room <= 0:
                    yield chunk
                    chunk, room = [], size
        if room <= 0:
            yield chunk
            chunk, room = [], size
    if chunk:
        yield chunk
