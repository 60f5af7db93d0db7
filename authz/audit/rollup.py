"""Audit rollups: hourly and daily counters in Redis, kept by a consumer of the `dg:audit` stream.

The queries (authz.audit.queries) read only these keys, never the records, so
their cost depends on the window and on how many distinct accounts, entities,
countries and networks it saw, not on how many records there were.

Layout (g is `h` or `d`; bucket is UTC `YYYYMMDDHH` or `YYYYMMDD`; "(none)"
stands for an empty value; `asn` 0 means unknown):

    {dg:audit}:roll:<g>:<bucket>:total        HASH  req deny tok sig
    {dg:audit}:roll:<g>:<bucket>:<dim>:<m>    ZSET  member = the dimension's value
        dim: account | entity | country | asn;  m: req | deny | tok
    {dg:audit}:roll:<g>:<bucket>:cc:<CC>:<m>  ZSET  member = "<account>|<entity>"
        m: req | deny | tok | sig             (who used the model from country CC)
    {dg:audit}:acct:<account>:<g>:<bucket>    HASH  req deny tok sig cc:<CC> net:<network>
        asn:<n> reason:<r> sig:<name> wd:<would_deny>, and, overwritten by the
        latest record, @entity @tier @kyc @kyc_country
    {dg:audit}:roll:asn-org                   HASH  asn -> as_org (kept as long as days)
    {dg:audit}:roll:stats                     HASH  applied invalid deleted expired
                                                    applied:<consumer> (never expires)

`req` counts records, `deny` those whose action is deny (allowed = req - deny;
dry-run allows count as allowed and carry `wd:`), `tok` sums estimated tokens,
`sig` counts records that raised at least one signal.

Every key expires at its bucket's end plus the retention of its granularity
(hours 14 days, days 400 days by default), so TTLs follow the records' time,
not the time they were rolled up; records older than both retentions are
counted as `expired` and skipped.

Exactly once per stream entry: a batch is applied by one Lua script that
checks every entry is still pending for this consumer, acknowledges them and
applies the batch's increments, atomically. A batch whose entries were
claimed by (or already acknowledged by) another consumer is re-aggregated
without them, so an entry counts once even when a slow consumer wakes up
after its entries were claimed. `--file` backfills have no entry ids: loading
the same file twice counts it twice.

On Redis Cluster every rollup key carries the stream's hash tag, `{dg:audit}`,
so they all live in the stream's slot: the script that acknowledges entries
and updates rollups runs on one node, atomically.
"""

from __future__ import annotations

import argparse
import calendar
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import redis
from redis.cluster import RedisCluster

from authz.clock import SystemClock
from authz.protocols import Clock
from authz.settings import ENV_PREFIX

log = logging.getLogger(__name__)

STREAM = "dg:audit"
# The hash tag puts every rollup key in the stream's slot ("dg:audit" hashes as itself), so
# on Redis Cluster the batch script can touch them all on the node that holds the stream.
PREFIX = "{dg:audit}:roll"
ACCOUNT_PREFIX = "{dg:audit}:acct"
ASN_ORG_KEY = f"{PREFIX}:asn-org"
STATS_KEY = f"{PREFIX}:stats"
WAL_PREFIX = f"{PREFIX}:wal"
WAL_INDEX_KEY = f"{PREFIX}:wal-index"
RECORD_FIELD = b"record"
DIMENSIONS = ("account", "entity", "country", "asn")
META_FIELDS = ("@entity", "@tier", "@kyc", "@kyc_country")
NONE = "(none)"
HOUR, DAY = "h", "d"
BUCKET_FORMAT = {HOUR: "%Y%m%d%H", DAY: "%Y%m%d"}
BUCKET_SECONDS = {HOUR: 3600, DAY: 86400}
DAY_S = 86400

# ZSET names of the four dimensions, per measure.
_ZSET_NAMES = {m: tuple(f"{dim}:{m}" for dim in DIMENSIONS) for m in ("req", "deny", "tok")}
# Families of counters a batch accumulates before they become keys (see `_key`).
_TOTAL, _ZSET, _ACCOUNT = "T", "Z", "A"

Client = redis.Redis | RedisCluster
_CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
Entry = tuple[bytes, dict[bytes, bytes] | None]
CounterKey = tuple[str, str, str]  # family, hour bucket, name (see `_key`)
# hour, account, entity, country, asn, network, reason, denied, signals, would_deny
Shape = tuple[str, str, str, str, str, str, str, bool, tuple[str, ...], str]


def bucket_name(granularity: str, when: float) -> str:
    """The bucket (UTC) of an epoch time: YYYYMMDDHH for hours, YYYYMMDD for days."""
    return time.strftime(BUCKET_FORMAT[granularity], time.gmtime(when))


def bucket_start(granularity: str, name: str) -> int:
    """Epoch seconds at which a bucket begins."""
    return calendar.timegm(time.strptime(name, BUCKET_FORMAT[granularity]))


def total_key(granularity: str, bucket: str) -> str:
    """The per-bucket totals hash."""
    return f"{PREFIX}:{granularity}:{bucket}:total"


def dim_key(granularity: str, bucket: str, dim: str, measure: str) -> str:
    """The per-bucket ZSET of one dimension (account, entity, country, asn) and measure."""
    return f"{PREFIX}:{granularity}:{bucket}:{dim}:{measure}"


def country_key(granularity: str, bucket: str, country: str, measure: str) -> str:
    """The per-bucket ZSET of `account|entity` pairs seen from one country."""
    return f"{PREFIX}:{granularity}:{bucket}:cc:{country}:{measure}"


def account_key(account: str, granularity: str, bucket: str) -> str:
    """The per-bucket detail hash of one account."""
    return f"{ACCOUNT_PREFIX}:{account}:{granularity}:{bucket}"


def hour_bucket(stamp: str) -> str:
    """The hour bucket of an RFC 3339 time; the canonical `...Z` form needs no parsing."""
    if len(stamp) >= 20 and stamp[-1] == "Z" and stamp[10] == "T":
        name = stamp[0:4] + stamp[5:7] + stamp[8:10] + stamp[11:13]
        if name.isdigit():
            return name
    when = datetime.fromisoformat(stamp)
    if when.tzinfo is None:
        raise ValueError(f"time without a UTC offset: {stamp!r}")
    return when.astimezone(UTC).strftime(BUCKET_FORMAT[HOUR])


@dataclass(frozen=True, slots=True)
class Retention:
    """How long rollups are kept after their bucket ends, in seconds."""

    hours: float = 14 * DAY_S
    days: float = 400 * DAY_S

    def expire_at(self, granularity: str, bucket: str) -> int:
        """Epoch second at which a bucket's keys expire."""
        keep = self.hours if granularity == HOUR else self.days
        return int(bucket_start(granularity, bucket) + BUCKET_SECONDS[granularity] + keep)


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


# Taking a batch. KEYS: stream, WAL index, this batch's WAL list. ARGV: group,
# consumer, entry ids (JSON, ascending), then the batch's operations in chunks (JSON).
# With ids, every id must still be pending for this consumer, else the ids that are
# not are returned and nothing is done (the caller drops them and retries). One
# XPENDING over the batch's id range answers for all of them unless the consumer
# holds more entries in that range than the batch (then one XPENDING per id).
# Otherwise, atomically: the chunks go into the WAL list, the list into the index,
# and the entries are acknowledged.
TAKE_LUA = """
local ids = cjson.decode(ARGV[3])
if #ids > 0 then
  local mine = {}
  local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ids[1], ids[#ids], #ids, ARGV[2])
  for _, entry in ipairs(pending) do mine[entry[1]] = true end
  local missing = {}
  for _, id in ipairs(ids) do
    if not mine[id] and (#pending < #ids or
        #redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1, ARGV[2]) == 0) then
      missing[#missing + 1] = id
    end
  end
  if #missing > 0 then return missing end
  for i = 1, #ids, 1000 do
    redis.call('XACK', KEYS[1], ARGV[1], unpack(ids, i, math.min(i + 999, #ids)))
  end
end
if #ARGV > 3 then
  for i = 4, #ARGV, 1000 do
    redis.call('RPUSH', KEYS[3], unpack(ARGV, i, math.min(i + 999, #ARGV)))
  end
  redis.call('SADD', KEYS[2], KEYS[3])
end
return {}
"""

# Applying one chunk of a WAL list. KEYS: the list, the WAL index. Pops a chunk and
# applies its operations `[key, kind, expire_at, [field, amount, ...]]` (kinds: h
# HINCRBY, z ZINCRBY member amount, s HSET) atomically; returns the chunks left.
APPLY_CHUNK_LUA = """
local chunk = redis.call('LPOP', KEYS[1])
if chunk then
  for _, op in ipairs(cjson.decode(chunk)) do
    local key, kind, at, args = op[1], op[2], op[3], op[4]
    if kind == 'h' then
      for i = 1, #args, 2 do redis.call('HINCRBY', key, args[i], args[i + 1]) end
    elseif kind == 'z' then
      for i = 1, #args, 2 do redis.call('ZINCRBY', key, args[i + 1], args[i]) end
    else
      redis.call('HSET', key, unpack(args))
    end
    if at > 0 then redis.call('EXPIREAT', key, at) end
  end
end
local left = redis.call('LLEN', KEYS[1])
if left == 0 then redis.call('SREM', KEYS[2], KEYS[1]) end
return left
"""


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


@dataclass(slots=True)
class RollupStats:
    """What a consumer or a backfill did."""

    applied: int = 0  # records counted into rollups
    invalid: int = 0  # entries or lines that are not an audit record (acknowledged, skipped)
    deleted: int = 0  # pending entries trimmed from the stream before they were read
    expired: int = 0  # records older than every retention (skipped)
    batches: int = 0
    seconds: float = 0.0
    scripts: int = 0  # take and chunk scripts run
    script_seconds: float = 0.0  # time in them (Redis busy, plus round trips)
    longest_script: float = 0.0  # the longest of them

    def note_script(self, seconds: float) -> None:
        """Count one script call that took `seconds`."""
        self.scripts += 1
        self.script_seconds += seconds
        self.longest_script = max(self.longest_script, seconds)

    def add_scripts(self, other: RollupStats) -> None:
        """Count another's script calls."""
        self.scripts += other.scripts
        self.script_seconds += other.script_seconds
        self.longest_script = max(self.longest_script, other.longest_script)

    def add(self, other: RollupStats) -> None:
        """Accumulate another batch's figures."""
        self.applied += other.applied
        self.invalid += other.invalid
        self.deleted += other.deleted
        self.expired += other.expired
        self.batches += other.batches
        self.add_scripts(other)

    def rate(self) -> float:
        """Records (applied or not) handled per second."""
        total = self.applied + self.invalid + self.deleted + self.expired
        return total / self.seconds if self.seconds > 0 else 0.0


@dataclass
class Roller:
    """Applies batches of records to the rollups, exactly once per stream entry.

    A batch is first *taken*: one short script checks its entries are still
    pending for this consumer, writes the batch's increments to a write-ahead
    list (the WAL) and acknowledges the entries, atomically. The WAL is then
    applied chunk by chunk, each chunk popped and applied by one script, so no
    script holds Redis for long however big the batch. A WAL left behind by a
    crash is finished by `recover` (any consumer, at start and with each claim).
    """

    client: Client
    clock: Clock = field(default_factory=SystemClock)
    retention: Retention = field(default_factory=Retention)
    stream: str = STREAM
    group: str = ""
    consumer: str = ""
    chunk_ops: int = 500  # field updates per chunk script

    def __post_init__(self) -> None:
        self._take = self.client.register_script(TAKE_LUA)
        self._apply_chunk = self.client.register_script(APPLY_CHUNK_LUA)

    def apply(
        self,
        items: list[tuple[str, Mapping[str, Any] | None]],
        deleted: Iterable[str] = (),
        trimmed: int = 0,
    ) -> RollupStats:
        """Count `(entry id or "", record)` items; entry ids are acknowledged exactly once.

        A None record is an entry or line that is not an audit record: acknowledged
        and counted as invalid. `deleted` are ids of pending entries trimmed from
        the stream: only acknowledged. `trimmed` counts such entries XAUTOCLAIM
        already dropped (only reported). Entries another consumer claimed
        meanwhile are left to it.
        """
        gone_ids = list(deleted)
        while True:
            batch = RollupBatch()
            for _, rec in items:
                if rec is None:
                    batch.invalid += 1
                    continue
                try:
                    batch.add(rec)
                except (KeyError, ValueError, TypeError, AttributeError) as exc:
                    log.warning("audit record skipped: %s", exc)
                    batch.invalid += 1
            ops, expired = batch.ops(self.retention, self.clock.now())
            stats = RollupStats(
                applied=len(items) - batch.invalid - expired,
                invalid=batch.invalid,
                deleted=len(gone_ids) + trimmed,
                expired=expired,
                batches=1,
            )
            counts = {
                "applied": stats.applied,
                "invalid": stats.invalid,
                "deleted": stats.deleted,
                "expired": stats.expired,
            }
            if self.consumer:
                counts[f"applied:{self.consumer}"] = stats.applied
            tally = [x for k, v in counts.items() if v for x in (k, v)]
            if tally:
                ops.append([STATS_KEY, "h", 0, tally])
            ids = sorted([entry_id for entry_id, _ in items if entry_id] + gone_ids, key=_id_order)
            if not ops and not ids:
                return stats
            wal = f"{WAL_PREFIX}:{uuid.uuid4().hex}"
            chunks = [json.dumps(c) for c in chunked(ops, self.chunk_ops)]
            args = [self.group, self.consumer, json.dumps(ids), *chunks]
            started = time.perf_counter()
            missing = self._take(keys=[self.stream, WAL_INDEX_KEY, wal], args=args)
            stats.note_script(time.perf_counter() - started)
            if not missing:
                if chunks:
                    stats.add_scripts(self.finish(wal))
                return stats
            gone = {m.decode() if isinstance(m, bytes) else str(m) for m in missing}
            log.info("%d entries were claimed by another consumer; applying the rest", len(gone))
            items = [item for item in items if item[0] not in gone]
            gone_ids = [i for i in gone_ids if i not in gone]

    def finish(self, wal: str) -> RollupStats:
        """Apply what is left of one WAL list, a chunk per script."""
        stats = RollupStats()
        while True:
            started = time.perf_counter()
            left = self._apply_chunk(keys=[wal, WAL_INDEX_KEY])
            stats.note_script(time.perf_counter() - started)
            if not left:
                return stats

    def recover(self) -> RollupStats:
        """Finish every WAL a crashed consumer left (each chunk still applies exactly once)."""
        stats = RollupStats()
        wals: Any = self.client.smembers(WAL_INDEX_KEY)
        for wal in wals:
            stats.add_scripts(self.finish(wal.decode() if isinstance(wal, bytes) else wal))
        return stats


def _id_order(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def parse_record(raw: bytes | str | None) -> Mapping[str, Any] | None:
    """A record's canonical JSON as a dict, or None when it is not a JSON object."""
    if raw is None:
        return None
    try:
        rec = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    except ValueError:  # UnicodeDecodeError and JSONDecodeError alike
        return None
    return rec if isinstance(rec, dict) else None


class RollupConsumer:
    """One member of a consumer group on `dg:audit` that keeps the rollups.

    Each step handles one batch: entries of crashed consumers idle for longer
    than `claim_idle` seconds (XAUTOCLAIM, checked every `claim_every` seconds),
    else this consumer's own pending entries left by an earlier run, else new ones.
    """

    def __init__(
        self,
        client: Client,
        *,
        group: str = "rollup",
        consumer: str | None = None,
        clock: Clock | None = None,
        retention: Retention | None = None,
        stream: str = STREAM,
        batch: int = 2000,
        chunk_ops: int = 500,
        claim_idle: float = 60.0,
        claim_every: float = 10.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.group = group
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        self.stream = stream
        self.batch = batch
        self.claim_idle = claim_idle
        self.claim_every = claim_every
        self._monotonic = monotonic
        self._next_claim = 0.0
        self._claim_cursor = "0-0"
        self._backlog = True  # first re-read our own pending entries (id 0)
        self._trimmed = 0
        self._recovered = RollupStats()  # scripts run finishing others' WALs
        self.roller = Roller(
            client,
            clock=clock or SystemClock(),
            retention=retention or Retention(),
            stream=stream,
            group=group,
            consumer=self.consumer,
            chunk_ops=chunk_ops,
        )

    def ensure_group(self) -> None:
        """Create the group (from the start of the stream) unless it exists."""
        try:
            self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def claim(self) -> list[Entry]:
        """Take over entries other consumers left pending for longer than `claim_idle`."""
        entries: list[Entry] = []
        while not entries:
            reply = self.client.xautoclaim(
                self.stream,
                self.group,
                self.consumer,
                int(self.claim_idle * 1000),
                start_id=self._claim_cursor,
                count=self.batch,
            )
            cursor = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
            entries = list(reply[1])
            self._trimmed += len(reply[2]) if len(reply) > 2 else 0  # dropped from the PEL
            self._claim_cursor = cursor
            if cursor == "0-0":
                break
        return entries

    def read(self, block: float | None) -> list[Entry]:
        """Our own pending entries first (after a restart), then new ones."""
        start = "0" if self._backlog else ">"
        reply = self.client.xreadgroup(
            self.group,
            self.consumer,
            {self.stream: start},
            count=self.batch,
            block=None if self._backlog or block is None else max(1, int(block * 1000)),
        )
        entries: list[Entry] = list(cast(Any, reply)[0][1]) if reply else []
        if self._backlog and not entries:
            self._backlog = False
            return self.read(block)
        return entries

    def fetch(self, block: float | None = None) -> list[Entry]:
        """The next batch of entries to apply (see the class docstring).

        When a claim is due, first finishes any WAL a crashed consumer left.
        """
        now = self._monotonic()
        if now >= self._next_claim:
            self._recovered.add_scripts(self.roller.recover())
            entries = self.claim()
            if entries:
                return entries
            self._next_claim = now + self.claim_every
        return self.read(block)

    def apply(self, entries: list[Entry]) -> RollupStats:
        """Apply and acknowledge a batch; entries claimed away meanwhile are left to their owner."""
        items: list[tuple[str, Mapping[str, Any] | None]] = []
        deleted: list[str] = []
        for raw_id, fields in entries:
            entry_id = raw_id.decode()
            if fields:
                items.append((entry_id, parse_record(fields.get(RECORD_FIELD))))
            else:
                deleted.append(entry_id)
        trimmed, self._trimmed = self._trimmed, 0
        return self.roller.apply(items, deleted, trimmed)

    def step(self, block: float | None = None) -> tuple[int, RollupStats]:
        """Fetch and apply one batch; returns how many entries were fetched and the figures."""
        entries = self.fetch(block)
        stats = self.apply(entries) if entries or self._trimmed else RollupStats()
        stats.add_scripts(self._recovered)
        self._recovered = RollupStats()
        return len(entries), stats

    def run(
        self, *, stop: threading.Event | None = None, drain: bool = False, block: float = 2.0
    ) -> RollupStats:
        """Consume until `stop` is set, or with `drain` until the stream has nothing new."""
        stop = stop or threading.Event()
        total = RollupStats()
        started = time.monotonic()
        backoff = 0.1
        grouped = False
        while not stop.is_set():
            try:
                if not grouped:
                    self.ensure_group()
                    grouped = True
                fetched, stats = self.step(None if drain else block)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if drain and backoff >= 5.0:
                    raise  # a one-off drain gives up after ~10 s of failures; a service waits
                log.warning("audit rollup: redis unavailable (%s); retrying in %.1fs", exc, backoff)
                self._backlog = True  # what we read but did not apply is still pending for us
                stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.1
            total.add(stats)
            if drain and fetched == 0:
                total.add_scripts(self.roller.recover())
                break
        total.seconds = time.monotonic() - started
        return total


def read_lines(path: Path) -> Iterator[Mapping[str, Any] | None]:
    """The records of a JSON-lines file (None for a line that is not a JSON object)."""
    with path.open("rb") as lines:
        for line in lines:
            if line.strip():
                yield parse_record(line)


def backfill(
    roller: Roller, records: Iterable[Mapping[str, Any] | None], batch: int = 5000
) -> RollupStats:
    """Roll up records from a file (no stream, no acknowledgement: not idempotent)."""
    total = RollupStats()
    started = time.monotonic()
    chunk: list[tuple[str, Mapping[str, Any] | None]] = []
    for rec in records:
        chunk.append(("", rec))
        if len(chunk) >= batch:
            total.add(roller.apply(chunk))
            chunk = []
    if chunk:
        total.add(roller.apply(chunk))
    total.seconds = time.monotonic() - started
    return total


# --- command line ---------------------------------------------------------------------


def redis_client(url: str | None, *, timeout: float = 30.0) -> Client:
    """A client for the Redis holding the stream and rollups; `url` defaults to DISTILL_GUARD_STORE.

    redis://, rediss:// and unix:// name a standalone Redis; redis+cluster:// and
    rediss+cluster:// any node of a Cluster.
    """
    url = url or os.environ.get(ENV_PREFIX + "STORE", "")
    if not url:
        raise ValueError(f"give --redis redis://HOST:PORT/DB (or set {ENV_PREFIX}STORE)")
    scheme = url.split("://", 1)[0]
    options: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": 5.0}
    if scheme in _CLUSTER_SCHEMES:
        return RedisCluster.from_url(_CLUSTER_SCHEMES[scheme] + url[len(scheme) :], **options)
    if scheme not in {"redis", "rediss", "unix"}:
        raise ValueError(
            f"not a Redis URL (redis://, rediss://, unix://, redis+cluster://): {url!r}"
        )
    return redis.Redis.from_url(url, **options)


def add_redis_argument(parser: argparse.ArgumentParser) -> None:
    """`--redis URL`, defaulting to DISTILL_GUARD_STORE."""
    parser.add_argument(
        "--redis",
        metavar="URL",
        help=f"Redis holding the audit stream and rollups (default: ${ENV_PREFIX}STORE)",
    )


def _days(text: str) -> float:
    return float(text) * DAY_S


def _rollup(ns: argparse.Namespace) -> int:
    retention = Retention(hours=ns.keep_hours, days=ns.keep_days)
    try:
        client = redis_client(ns.redis, timeout=ns.block + 30.0)
    except ValueError as exc:
        print(f"distill-guard audit rollup: {exc}", file=sys.stderr)
        return 2
    try:
        stats = _roll(ns, client, retention)
    except (redis.RedisError, OSError) as exc:
        print(f"distill-guard audit rollup: {exc}", file=sys.stderr)
        return 1
    print(
        f"rolled up {stats.applied} records ({stats.invalid} invalid, {stats.deleted} deleted, "
        f"{stats.expired} past retention) in {stats.seconds:.1f}s: {stats.rate():,.0f} records/s; "
        f"{stats.scripts} scripts, {stats.script_seconds * 1000 / max(stats.scripts, 1):.1f} ms "
        f"on average, {stats.longest_script * 1000:.1f} ms at most",
        file=sys.stderr,
    )
    return 0


def _roll(ns: argparse.Namespace, client: Client, retention: Retention) -> RollupStats:
    with client:
        if ns.file:
            roller = Roller(client, retention=retention, chunk_ops=ns.chunk)
            stats = backfill(roller, read_lines(Path(ns.file)), batch=ns.batch)
        else:
            consumer = RollupConsumer(
                client,
                group=ns.group,
                consumer=ns.consumer,
                retention=retention,
                batch=ns.batch,
                chunk_ops=ns.chunk,
                claim_idle=ns.claim_idle,
                claim_every=max(1.0, ns.claim_idle / 2),
            )
            stop = threading.Event()
            previous = {
                sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)
            }
            try:
                stats = consumer.run(stop=stop, drain=ns.drain, block=ns.block)
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
    return stats


def add_parsers(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `audit rollup`."""
    p = actions.add_parser(
        "rollup",
        help="keep hourly/daily rollups from the dg:audit stream (or backfill from a file)",
        description="Consume dg:audit in a consumer group and keep the rollups the audit "
        "queries read (see docs/audit-queries.md). With --file, roll up a JSON-lines file "
        "instead (not idempotent: load a file once).",
    )
    add_redis_argument(p)
    p.add_argument("--file", metavar="FILE", help="backfill from a JSON-lines file and exit")
    p.add_argument("--group", default="rollup", help="consumer group (default: rollup)")
    p.add_argument("--consumer", help="consumer name (default: HOSTNAME-PID)")
    p.add_argument("--batch", type=int, default=2000, help="entries per batch (default: 2000)")
    p.add_argument(
        "--chunk",
        type=int,
        default=500,
        help="field updates per script, which bounds how long one holds Redis (default: 500)",
    )
    p.add_argument("--block", type=float, default=2.0, help="seconds one read waits (default: 2)")
    p.add_argument(
        "--claim-idle",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="claim other consumers' entries pending this long (default: 60)",
    )
    p.add_argument(
        "--keep-hours",
        type=_days,
        default=14 * DAY_S,
        metavar="DAYS",
        help="days hourly rollups are kept after their hour (default: 14)",
    )
    p.add_argument(
        "--keep-days",
        type=_days,
        default=400 * DAY_S,
        metavar="DAYS",
        help="days daily rollups are kept after their day (default: 400)",
    )
    p.add_argument("--drain", action="store_true", help="exit once the stream has nothing new")
    p.set_defaults(func=_rollup)
