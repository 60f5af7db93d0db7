"""Audit rollups on real Redis: literal keys, TTLs, consumer group, exactly-once; the generator."""

from __future__ import annotations

import json
from calendar import timegm
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from google.protobuf import json_format

from authz.audit import queries
from authz.audit.backfill import backfill
from authz.audit.client import redis_client
from authz.audit.gen_audit import Generator
from authz.audit.group import Retry
from authz.audit.record import to_json
from authz.audit.roller import Roller
from authz.audit.rollup_batch import chunked
from authz.audit.rollup_consumer import RollupConsumer
from authz.audit.rollup_keys import STATS_KEY, WAL_INDEX_KEY, Retention, hour_bucket
from authz.audit.stream import STREAM
from authz.audit.window import make_window
from authz.cli import main
from authz.clock import ManualClock
from authz.gen.distill_guard.audit.v1.audit_pb2 import AuditRecord
from tests.audit_support import KNOWN_RECORDS, NOW, load_known, xadd, xadd_lines
from tests.redis_server import free_port

DAY = 86400


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    """A client of the test's empty Redis."""
    with redis.Redis.from_url(redis_url) as c:
        yield c


def zset(client: redis.Redis, key: str) -> dict[str, float]:
    """A sorted set as {member: score}."""
    raw: Any = client.zrange(key, 0, -1, withscores=True)
    return {m.decode(): s for m, s in raw}


def hash_of(client: redis.Redis, key: str) -> dict[str, str]:
    """A hash as text."""
    raw: dict[bytes, bytes] = client.hgetall(key)  # type: ignore[assignment]
    return {k.decode(): v.decode() for k, v in raw.items()}


def consumer(client: redis.Redis, name: str, **options: Any) -> RollupConsumer:
    """A consumer of the `rollup` group at NOW (claims checked on every fetch)."""
    options.setdefault("claim_every", 0.0)
    return RollupConsumer(client, consumer=name, clock=ManualClock(NOW), **options)


def requests_total(client: redis.Redis) -> int:
    """Requests counted in all day buckets of the known set's days."""
    days = ("20991118", "20991120", "20991121")
    return sum(
        int(hash_of(client, f"{{dg:audit}}:roll:d:{day}:total").get("req", 0)) for day in days
    )


# --- layout and TTLs ------------------------------------------------------------------


def test_known_records_give_literal_keys(client: redis.Redis) -> None:
    """Each record lands in its hour and day: totals, dimension ZSETs, country pairs, accounts."""
    load_known(client)
    assert hash_of(client, "{dg:audit}:roll:h:2099112010:total") == {
        "req": "4", "deny": "2", "tok": "300", "sig": "2",
    }  # fmt: skip
    assert zset(client, "{dg:audit}:roll:h:2099112010:account:req") == {"a1": 3, "(none)": 1}
    assert zset(client, "{dg:audit}:roll:d:20991120:account:tok") == {"a1": 300, "a2": 120}
    assert zset(client, "{dg:audit}:roll:d:20991120:asn:deny") == {
        "16509": 1,
        "3215": 1,
        "58224": 1,
    }
    assert zset(client, "{dg:audit}:roll:d:20991120:cc:US:req") == {"a1|e1": 2, "a2|e1": 2}
    assert zset(client, "{dg:audit}:roll:d:20991120:cc:DE:sig") == {"a1|e1": 1}
    assert zset(client, "{dg:audit}:roll:d:20991120:cc:FR:deny") == {"(none)|(none)": 1}
    assert hash_of(client, "{dg:audit}:acct:a1:h:2099112010") == {
        "req": "3",
        "deny": "1",
        "tok": "300",
        "sig": "2",
        "cc:US": "2",
        "cc:DE": "1",
        "net:1.1.1.0/24": "2",
        "net:2.2.2.0/24": "1",
        "asn:7922": "2",
        "asn:16509": "1",
        "reason:ok": "2",
        "reason:rate_limited": "1",
        "sig:volume_spike_account": "2",
        "sig:kyc-mismatch-unverified": "1",
        "@entity": "e1",
        "@tier": "(none)",
        "@kyc": "(none)",
        "@kyc_country": "(none)",
    }
    assert hash_of(client, "{dg:audit}:acct:a1:d:20991121")["wd:rate_limited"] == "1"
    assert hash_of(client, "{dg:audit}:roll:asn-org")["16509"] == "AMAZON-02"
    assert hash_of(client, STATS_KEY) == {"applied": "9"}


def test_ttls_follow_the_bucket_not_the_rollup_time(client: redis.Redis) -> None:
    """Hour keys expire 14 days after their hour, day keys 400 days after their day (EXPIREAT).

    The ASN names are kept 400 days from the last rollup; the stats hash never expires.
    """
    load_known(client)
    hour_end = timegm((2099, 11, 20, 11, 0, 0))
    day_end = timegm((2099, 11, 21, 0, 0, 0))
    for key in ("{dg:audit}:roll:h:2099112010:account:req", "{dg:audit}:acct:a1:h:2099112010"):
        assert client.expiretime(key) == hour_end + 14 * DAY
    for key in ("{dg:audit}:roll:d:20991120:total", "{dg:audit}:roll:d:20991120:cc:US:tok"):
        assert client.expiretime(key) == day_end + 400 * DAY
    assert client.expiretime("{dg:audit}:roll:asn-org") == NOW + 400 * DAY
    assert client.expiretime(STATS_KEY) == -1


def test_records_past_retention_are_skipped(client: redis.Redis) -> None:
    """With short retentions, old hours are not written, older days neither; skips are counted."""
    roller = Roller(client, clock=ManualClock(NOW), retention=Retention(hours=DAY, days=2 * DAY))
    stats = backfill(roller, KNOWN_RECORDS)
    assert (stats.applied, stats.expired) == (8, 1)  # 2099-11-18 ended more than 2 days ago
    assert client.exists("{dg:audit}:roll:h:2099112010:total") == 0  # past 1 day
    assert client.exists("{dg:audit}:roll:h:2099112109:total") == 1
    assert client.exists("{dg:audit}:roll:d:20991120:total") == 1
    assert client.exists("{dg:audit}:roll:d:20991118:total") == 0


def test_hour_bucket_reads_rfc3339_with_or_without_offsets() -> None:
    """The canonical `Z` form is sliced; other offsets become UTC; naive times are refused."""
    assert hour_bucket("2099-11-20T10:59:59.999Z") == "2099112010"
    assert hour_bucket("2099-11-20T01:30:00+02:00") == "2099111923"
    with pytest.raises(ValueError, match="without a UTC offset"):
        hour_bucket("2099-11-20T10:00:00")


def test_invalid_entries_are_acknowledged_and_counted(client: redis.Redis) -> None:
    """Entries that are not records (bad JSON, no time) are acknowledged, not retried."""
    xadd(client, KNOWN_RECORDS[:2])
    xadd_lines(client, ["not json", json.dumps({"account": "a9"})])
    for wrong in ({"country": 5}, {"signals": [1]}, {"estimated_tokens": "many"}, {"time": 3}):
        xadd(client, [{**KNOWN_RECORDS[0], **wrong}])
    stats = consumer(client, "c1").run(drain=True)
    assert (stats.applied, stats.invalid) == (2, 6)
    assert client.xpending(STREAM, "rollup")["pending"] == 0
    assert hash_of(client, STATS_KEY) == {"applied": "2", "invalid": "6", "applied:c1": "2"}


# --- the consumer group -----------------------------------------------------------------


def test_two_consumers_share_the_stream(client: redis.Redis) -> None:
    """Two consumers of one group take turns on batches; each entry is counted once."""
    xadd(client, KNOWN_RECORDS)
    a, b = consumer(client, "a", batch=2), consumer(client, "b", batch=2)
    a.ensure_group()
    while True:
        fetched_a, _ = a.step()
        fetched_b, _ = b.step()
        if not fetched_a and not fetched_b:
            break
    stats = hash_of(client, STATS_KEY)
    assert int(stats["applied:a"]) > 0
    assert int(stats["applied:b"]) > 0
    assert int(stats["applied:a"]) + int(stats["applied:b"]) == int(stats["applied"]) == 9
    assert requests_total(client) == 9
    assert client.xpending(STREAM, "rollup")["pending"] == 0


def test_crashed_consumers_entries_are_claimed_and_applied_once(client: redis.Redis) -> None:
    """A consumer dies holding entries; another claims them after the idle time and applies them.

    When the dead one comes back and applies what it held, nothing is counted twice.
    """
    xadd(client, KNOWN_RECORDS)
    crashed = consumer(client, "crashed", batch=4)
    crashed.ensure_group()
    held = crashed.fetch()  # read, never applied: the process died here
    assert len(held) == 4
    patient = consumer(client, "patient", claim_idle=60.0)
    assert patient.claim() == []  # not idle long enough yet
    rescuer = consumer(client, "rescuer", claim_idle=0.0)
    assert rescuer.claim() == held
    rescuer.apply(held)
    rescuer.run(drain=True)
    assert requests_total(client) == 9
    late = crashed.apply(held)  # the crashed process wakes up with its old batch
    assert late.applied == 0
    assert requests_total(client) == 9
    stats = hash_of(client, STATS_KEY)
    assert (stats["applied"], stats["applied:rescuer"]) == ("9", "9")
    assert client.xpending(STREAM, "rollup")["pending"] == 0


def test_partly_claimed_batch_applies_only_what_is_still_ours(client: redis.Redis) -> None:
    """When another consumer claimed part of a batch, the slow owner applies the rest only."""
    xadd(client, KNOWN_RECORDS[:4])
    slow = consumer(client, "slow", batch=4)
    slow.ensure_group()
    held = slow.fetch()
    fast = consumer(client, "fast", claim_idle=0.0, batch=2)
    claimed = fast.claim()
    assert claimed == held[:2]
    assert slow.apply(held).applied == 2
    assert fast.apply(claimed).applied == 2
    assert hash_of(client, "{dg:audit}:roll:d:20991120:total")["req"] == "4"


def test_restarted_consumer_first_applies_its_own_pending_entries(client: redis.Redis) -> None:
    """A consumer restarted under the same name re-reads what it held (id 0) before new entries."""
    xadd(client, KNOWN_RECORDS)
    first = consumer(client, "c1", batch=5)
    first.ensure_group()
    assert len(first.fetch()) == 5  # died before applying
    again = consumer(client, "c1", batch=5)
    stats = again.run(drain=True)
    assert stats.applied == 9
    assert requests_total(client) == 9


def test_entries_trimmed_while_pending_are_acknowledged(client: redis.Redis) -> None:
    """Pending entries deleted from the stream (MAXLEN trimming) leave the PEL and count as deleted.

    Re-read by their owner they come back as ids without fields; a claim scan
    (XAUTOCLAIM) drops them by itself. Either way each is counted once.
    """
    xadd(client, KNOWN_RECORDS[:5])
    owner = consumer(client, "c1", batch=3)
    owner.ensure_group()
    held = owner.fetch()
    client.xdel(STREAM, held[0][0])
    stats = owner.apply([(held[0][0], {}), *held[1:]])  # as XREADGROUP 0 returns them
    assert (stats.applied, stats.deleted) == (2, 1)
    held = consumer(client, "c2", batch=2).fetch()
    client.xdel(STREAM, held[1][0])
    stats = consumer(client, "c3", claim_idle=0.0).run(drain=True)
    assert (stats.applied, stats.deleted) == (1, 1)
    assert hash_of(client, STATS_KEY)["deleted"] == "2"
    assert client.xpending(STREAM, "rollup")["pending"] == 0


def test_small_chunks_give_the_same_rollups(client: redis.Redis, redis_url: str) -> None:
    """Applying a batch in chunks of 3 field updates (many short scripts) gives the same keys."""
    load_known(client)
    expected = {k: client.dump(k) for k in client.keys("*")}
    client.flushall()
    stats = backfill(Roller(client, clock=ManualClock(NOW), chunk_ops=3), KNOWN_RECORDS)
    assert stats.scripts > 40
    assert {k: client.dump(k) for k in client.keys("*")} == expected
    assert chunk_sizes(chunked([["k", "z", 1, ["m1", 1, "m2", 2, "m3", 3]]], 2)) == [2, 1]


def chunk_sizes(chunks: Iterator[list[list[Any]]]) -> list[int]:
    """Field updates per chunk."""
    return [sum(len(op[3]) // 2 for op in chunk) for chunk in chunks]


def test_batch_taken_but_not_applied_is_finished_by_another_consumer(
    client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A consumer that dies after taking a batch (acknowledged, WAL written) loses nothing.

    Another consumer finishes the WAL once; the entries are not re-read.
    """
    xadd(client, KNOWN_RECORDS)
    doomed = consumer(client, "doomed", batch=100)
    doomed.ensure_group()
    entries = doomed.fetch()

    def crash(self: Roller, wal: str) -> None:
        raise SystemExit("killed between take and apply")

    with monkeypatch.context() as patch:
        patch.setattr(Roller, "finish", crash)
        with pytest.raises(SystemExit):
            doomed.apply(entries)
    assert client.xpending(STREAM, "rollup")["pending"] == 0
    assert len(client.smembers(WAL_INDEX_KEY)) == 1
    assert requests_total(client) == 0
    stats = consumer(client, "heir").run(drain=True)
    assert stats.applied == 0  # nothing left to read ...
    assert requests_total(client) == 9  # ... but the batch was finished
    assert hash_of(client, STATS_KEY)["applied:doomed"] == "9"
    assert client.keys("{dg:audit}:roll:wal*") == []
    consumer(client, "late").run(drain=True)
    assert requests_total(client) == 9


def test_file_backfill_from_the_command_line(
    client: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    """`audit rollup --file` rolls a JSON-lines file up; loading it twice counts it twice."""
    path = tmp_path / "audit.jsonl"
    lines = [json.dumps(r, sort_keys=True) for r in KNOWN_RECORDS] + ["", "garbage"]
    path.write_text("\n".join(lines) + "\n")
    argv = ["audit", "rollup", "--file", str(path), "--redis", redis_url]
    assert main(argv) == 0
    assert requests_total(client) == 9
    assert hash_of(client, STATS_KEY) == {"applied": "9", "invalid": "1"}
    assert main(argv) == 0
    assert requests_total(client) == 18  # a backfill has no entry ids: not idempotent


def test_rollup_command_drains_the_stream(client: redis.Redis, redis_url: str) -> None:
    """`audit rollup --drain` consumes the stream in the named group and exits."""
    xadd(client, KNOWN_RECORDS)
    argv = ["audit", "rollup", "--redis", redis_url, "--drain", "--consumer", "cli"]
    assert main([*argv, "--group", "g2"]) == 0
    assert hash_of(client, STATS_KEY)["applied:cli"] == "9"
    assert client.xinfo_groups(STREAM)[0]["name"] == b"g2"


def test_redis_url_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --redis or DISTILL_GUARD_STORE, or given a non-Redis URL, the error says so."""
    monkeypatch.delenv("DISTILL_GUARD_STORE", raising=False)
    with pytest.raises(ValueError, match=r"give --redis redis://HOST:PORT/DB"):
        redis_client(None)
    with pytest.raises(ValueError, match=r"not a Redis URL .*: 'memory://'"):
        redis_client("memory://")


def test_rollups_and_queries_on_redis_cluster(redis_cluster_url: str) -> None:
    """On a 3-master Cluster the consumer and the queries work: all keys share the stream's slot."""
    client = redis_client(redis_cluster_url)
    try:
        xadd(client, KNOWN_RECORDS)
        stats = RollupConsumer(client, consumer="c1", clock=ManualClock(NOW)).run(drain=True)
        assert stats.applied == 9
        window = make_window("2099-11-18", "2099-11-22", NOW)
        usage = queries.usage(client, window, "account", top=1)
        assert [(r.key, r.requests) for r in usage.rows] == [("a1", 4)]
        assert usage.totals.requests == 9
        assert queries.who(client, window, "US").total_accounts == 2
        assert queries.account_timeline(client, window, "a1").totals.requests == 4
        slots = {client.keyslot(k) for k in client.keys("*")}  # type: ignore[union-attr]
        assert slots == {client.keyslot(STREAM)}  # type: ignore[union-attr]
    finally:
        client.close()


# --- the generator -----------------------------------------------------------------------


def test_generated_lines_are_canonical_audit_records() -> None:
    """Every generated line parses as an AuditRecord and prints back to the very same text."""
    start = timegm((2099, 11, 14, 0, 0, 0))
    lines = list(Generator(3000, seed=5, start=start, days=7).lines())
    assert len(lines) == 3000
    for line in lines:
        message = json_format.ParseDict(json.loads(line), AuditRecord())
        assert to_json(message) == line
    times = [json.loads(line)["time"] for line in lines]
    assert times == sorted(times)
    assert times[0] >= "2099-11-14T00:00:00" and times[-1] < "2099-11-21T00:00:00"


def test_generator_is_seeded_and_varied() -> None:
    """The same seed gives the same records; the mix has denials, signals, countries and ASNs."""
    start = timegm((2099, 11, 14, 0, 0, 0))
    first = list(Generator(5000, seed=9, start=start).dicts())
    assert first == list(Generator(5000, seed=9, start=start).dicts())
    assert {r["action"] for r in first} == {"allow", "deny"}
    reasons = {r["reason"] for r in first}
    assert {"ok", "rate_limited", "key_unknown"} <= reasons
    signals = {s for r in first for s in r.get("signals", ())}
    assert "volume_spike_account" in signals
    assert len({r["country"] for r in first}) >= 10
    assert len({r.get("account") for r in first}) >= 20


def test_generate_to_redis_feeds_the_consumer(
    client: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    """`audit generate --to-redis --out` writes the same records to the stream and the file."""
    out = tmp_path / "gen.jsonl"
    argv = ["audit", "generate", "--records", "500", "--seed", "3", "--out", str(out)]
    assert main([*argv, "--to-redis", redis_url, "--start", "2099-11-20T00:00:00Z"]) == 0
    assert client.xlen(STREAM) == 500
    entries: Any = client.xrange(STREAM, count=1)
    first = entries[0][1][b"record"].decode()
    assert out.read_text().splitlines()[0] == first
    stats = consumer(client, "c1").run(drain=True)
    assert stats.applied == 500
    totals = [
        hash_of(client, f"{{dg:audit}}:roll:d:209911{d}:total")
        for d in (20, 21, 22, 23, 24, 25, 26)
    ]
    assert sum(int(t.get("req", 0)) for t in totals) == 500


def test_retry_waits_double_up_to_the_cap_and_a_drain_gives_up() -> None:
    """While Redis is away the wait doubles from 0.1 s to 5 s; a service keeps waiting 5 s,
    a drain gives up once the wait has reached the cap; a success starts again at 0.1 s."""
    service = Retry()
    assert [service.failed(drain=False) for _ in range(8)] == [
        0.1,
        0.2,
        0.4,
        0.8,
        1.6,
        3.2,
        5.0,
        5.0,
    ]
    drain = Retry()
    waits = []
    while (wait := drain.failed(drain=True)) is not None:
        waits.append(wait)
    assert waits == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2]
    drain.succeeded()
    assert drain.failed(drain=True) == 0.1


def test_a_drain_against_no_redis_raises_after_its_retries() -> None:
    """`run(drain=True)` with nothing listening retries, then raises the connection error."""
    client = redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.2)
    with pytest.raises(redis.ConnectionError):
        consumer(client, "c-away").run(drain=True)
