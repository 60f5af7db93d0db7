"""The analysis worker and verdict writer on real Redis: keys, expiry, takeover, bad input."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from redis.asyncio import Redis, RedisCluster

from authz.audit.stream import RECORD_FIELD, STREAM
from authz.detect import cli
from authz.detect.keys import template_verdict_keys
from authz.detect.verdicts import MemoryVerdictSink, RedisVerdictSink, Verdict, verdict_key
from authz.detect.worker import LOCK_KEY, OBS_STREAM, AnalysisWorker
from authz.metering.connect import rate_client
from authz.metering.plan import hash_tag
from authz.redistext import text
from tests.test_detect_analyzer import DAY, VARIANTS, campaign, nat_users, record

pytestmark = pytest.mark.redis
T = TypeVar("T")


def run_with(url: str, body: Callable[[Redis], Awaitable[T]]) -> T:
    """Run `body` with an asyncio client of the test's Redis, closed afterwards."""

    async def main() -> T:
        client = Redis.from_url(url)
        try:
            return await body(client)
        finally:
            await client.aclose()

    return asyncio.run(main())


async def xadd_records(client: Redis | RedisCluster, records: list[dict[str, Any]]) -> None:
    """Append records to the audit stream as the Redis sink does (one `record` field)."""
    pipe = client.pipeline(transaction=False)
    for r in sorted(records, key=lambda r: r["time"]):
        pipe.xadd(STREAM, {RECORD_FIELD: json.dumps(r, sort_keys=True, separators=(",", ":"))})
    await pipe.execute()


def recent_campaign() -> list[dict[str, Any]]:
    """The hand-made campaign, ending now (so verdicts expire in the future)."""
    return campaign(time.time() - DAY)


async def pending(client: Redis, group: str = "analyze") -> int:
    """Entries of the audit stream delivered to the group but not acknowledged."""
    info = await client.xpending(STREAM, group)
    return int(info["pending"])


# --- the writer --------------------------------------------------------------------


def test_verdict_key_is_in_the_accounts_slot() -> None:
    """`dg:v:{a:<account>}`: the account's hash tag, so it sits beside its counters."""
    assert verdict_key("alice") == "dg:v:{a:alice}" == "dg:v:" + hash_tag("account", "alice")
    assert verdict_key("we{ird}") == "dg:v:" + hash_tag("account", "we{ird}")


def test_redis_sink_writes_hash_and_expiry(redis_url: str) -> None:
    """HSET of action, cluster, score, until, reasons, and PEXPIREAT at `until`."""
    until = time.time() + 600

    async def body(client: Redis) -> tuple[dict[Any, Any], int, int]:
        sink = RedisVerdictSink(client)
        await sink.put(
            [
                Verdict(
                    "alice", "restrict", "c1234", 0.7312, ("template_spread", "proxy_pool"), until
                ),
                Verdict("bob", "watch", "c1234", 0.4, (), time.time() - 1),  # already over
            ]
        )
        fields = await client.hgetall("dg:v:{a:alice}")
        return (
            fields,
            await client.pexpiretime("dg:v:{a:alice}"),
            await client.exists("dg:v:{a:bob}"),
        )

    fields, expires_ms, bob = run_with(redis_url, body)
    assert fields == {
        b"action": b"restrict",
        b"cluster": b"c1234",
        b"score": b"0.7312",
        b"until": repr(round(until, 3)).encode(),
        b"reasons": b"template_spread,proxy_pool",
    }
    assert expires_ms == int(until * 1000)
    assert bob == 0


def test_redis_sink_renewal_moves_the_expiry(redis_url: str) -> None:
    """Writing the verdict again with a later `until` extends the key's life."""

    async def body(client: Redis) -> tuple[int, int]:
        sink = RedisVerdictSink(client)
        first = time.time() + 100
        await sink.put([Verdict("a", "restrict", "c1", 0.6, ("x",), first)])
        before = await client.pexpiretime("dg:v:{a:a}")
        await sink.put([Verdict("a", "restrict", "c1", 0.6, ("x",), first + 60)])
        return before, await client.pexpiretime("dg:v:{a:a}")

    before, after = run_with(redis_url, body)
    assert after - before == 60_000


def test_redis_sink_in_traffic_time(redis_url: str) -> None:
    """With `now` (a replay's clock) a key lives `until - now` seconds, even for old traffic."""

    async def body(client: Redis) -> int:
        await RedisVerdictSink(client).put([Verdict("a", "deny", "c1", 0.9, (), 1000.0)], now=900.0)
        return await client.pttl("dg:v:{a:a}")

    ttl = run_with(redis_url, body)
    assert 99_000 < ttl <= 100_000


def test_memory_sink_keeps_the_latest_verdict() -> None:
    """The memory sink replaces an account's verdict and forgets expired ones."""
    sink = MemoryVerdictSink()
    asyncio.run(sink.put([Verdict("a", "watch", "c1", 0.4, (), 100.0)]))
    asyncio.run(sink.put([Verdict("a", "deny", "c1", 0.9, (), 200.0)]))
    assert sink.get(verdict_key("a"), 150.0) == Verdict("a", "deny", "c1", 0.9, (), 200.0)
    assert sink.get(verdict_key("a"), 200.0) is None and sink.verdicts == {}


# --- the worker ----------------------------------------------------------------------


def worker(client: Redis, name: str, **options: Any) -> AnalysisWorker:
    """A worker writing verdicts to the same Redis."""
    return AnalysisWorker(client, RedisVerdictSink(client), consumer=name, **options)


def test_drain_writes_verdicts_for_the_campaign_only(redis_url: str) -> None:
    """One worker drains the stream: campaign accounts get verdicts, NAT users none, all acked."""
    records = recent_campaign() + nat_users(time.time() - DAY)

    async def body(client: Redis) -> tuple[set[str], int, Any]:
        await xadd_records(client, records)
        stats = await worker(client, "w1").run(drain=True)
        keys = {k.decode() async for k in client.scan_iter(match="dg:v:*")}
        return keys, await pending(client), stats

    keys, left, stats = run_with(redis_url, body)
    accounts = {f"dg:v:{{a:camp{i:03d}}}" for i in range(30)}
    # ... and the campaign's three templates and the networks of its proxies, which
    # restrict whoever sends them or calls from them next.
    templates = {k for v in VARIANTS for k in template_verdict_keys(v)}
    proxies = {k for k in keys if k.startswith("dg:v:{n:")}
    campaign_networks = {r["client_network"] for r in records if r["account"].startswith("camp")}
    assert keys == accounts | templates | proxies
    assert len(proxies) > 50 and {k[8:-1] for k in proxies} <= campaign_networks
    assert set(stats.template_verdicts) == set(stats.network_verdicts) == {"restrict"}
    assert left == 0
    assert stats.entries == len(records) and stats.bad == {}
    assert stats.analyses >= 1 and set(stats.verdicts) <= {"restrict", "deny"}


def test_takeover_after_a_worker_dies(redis_url: str) -> None:
    """A worker reads a batch and dies before XACK; another claims it and the verdicts appear."""
    records = recent_campaign()

    async def body(client: Redis) -> tuple[int, int, int, set[str]]:
        await xadd_records(client, records)
        doomed = worker(client, "doomed", batch=len(records))
        await doomed.ensure_group()
        taken = await doomed.fetch()  # delivered to "doomed", never acknowledged
        held = await pending(client)
        # claim_idle=0: whatever another consumer holds counts as abandoned at once.
        heir = worker(client, "heir", claim_idle=0.0)
        await heir.run(drain=True)
        keys = {k.decode() async for k in client.scan_iter(match="dg:v:{a:*")}
        return len(taken), held, await pending(client), keys

    taken, held, left, keys = run_with(redis_url, body)
    assert taken == held == len(records)
    assert left == 0
    assert len(keys) == 30


def test_redelivered_entries_count_once(redis_url: str) -> None:
    """An entry ingested twice (crash between append and ack) is one observation in the analysis."""
    records = recent_campaign()[:50]

    async def body(client: Redis) -> tuple[int, int, int]:
        await xadd_records(client, records)
        w = worker(client, "w")
        await w.ensure_group()
        entries = await w.fetch()
        await w.ingest(entries)
        await w.ingest(entries)  # as if claimed and ingested again
        while not await w.follow():
            pass
        return len(entries), await client.xlen(OBS_STREAM), len(w.analyzer)

    entries, logged, counted = run_with(redis_url, body)
    assert logged == 2 * entries
    assert counted == entries


def test_bad_records_are_counted_and_skipped(redis_url: str) -> None:
    """Entries that are not JSON or lack fields are counted by kind, acknowledged, and skipped."""
    good = record("a", time.time())
    no_account = {k: v for k, v in good.items() if k != "account"}

    async def body(client: Redis) -> tuple[Any, int, int]:
        await client.xadd(STREAM, {RECORD_FIELD: "not json {"})
        await client.xadd(STREAM, {RECORD_FIELD: json.dumps(no_account)})
        await client.xadd(STREAM, {RECORD_FIELD: json.dumps([1, 2])})
        await client.xadd(STREAM, {RECORD_FIELD: json.dumps(good)})
        await client.xadd(STREAM, {"other": "field"})
        stats = await worker(client, "w").run(drain=True)
        return stats, await pending(client), await client.xlen(OBS_STREAM)

    stats, left, logged = run_with(redis_url, body)
    assert stats.bad == {"not_json": 3, "missing_field": 1}
    assert stats.entries == 5 and stats.observations == logged == 1
    assert left == 0


def test_group_starts_one_window_back(redis_url: str) -> None:
    """A new group skips entries appended more than a window ago: the analysis would drop them."""
    old = int((time.time() - 2 * DAY) * 1000)

    async def body(client: Redis) -> int:
        for i in range(3):
            await client.xadd(STREAM, {RECORD_FIELD: json.dumps(record("a", 0.0))}, id=f"{old}-{i}")
        await client.xadd(STREAM, {RECORD_FIELD: json.dumps(record("a", time.time()))})
        stats = await worker(client, "w").run(drain=True)
        return stats.entries

    assert run_with(redis_url, body) == 1


def test_verdicts_expired_on_arrival_are_not_written(redis_url: str) -> None:
    """Records older than the verdict lifetime (a backlog) give verdicts that are not written."""

    async def body(client: Redis) -> tuple[Any, int]:
        await xadd_records(client, campaign(time.time() - 3 * DAY))
        stats = await worker(client, "w").run(drain=True)
        return stats, len([k async for k in client.scan_iter(match="dg:v:*")])

    stats, keys = run_with(redis_url, body)
    assert keys == 0
    assert stats.stale >= 30 and stats.verdicts == {}


def test_only_the_lease_holder_writes(redis_url: str) -> None:
    """Every worker analyses; the one holding the lease writes, the other does not."""

    async def body(client: Redis) -> tuple[bool, bool, bool, Any]:
        first, second = worker(client, "first"), worker(client, "second")
        got_first = await first.lead()
        got_second = await second.lead()
        again = await first.lead()  # renewal by the holder
        return got_first, got_second, again, await client.get(LOCK_KEY)

    first, second, again, holder = run_with(redis_url, body)
    assert (first, second, again) == (True, False, True)
    assert holder == b"first"


def test_second_worker_follows_what_the_first_ingested(redis_url: str) -> None:
    """Workers share the ingest, but each follows the whole observation log."""
    records = recent_campaign()

    async def body(client: Redis) -> tuple[int, int, int]:
        await xadd_records(client, records)
        a, b = worker(client, "a", batch=200), worker(client, "b", batch=200)
        await a.ensure_group()
        for w in (a, b, a):
            await w.ingest(await w.fetch())
        while not (await a.follow() and await b.follow()):
            pass
        return a.stats.entries + b.stats.entries, len(a.analyzer), len(b.analyzer)

    ingested, seen_a, seen_b = run_with(redis_url, body)
    assert ingested == 600
    assert seen_a == seen_b == 600


# --- the command --------------------------------------------------------------------------


def analyze_command(*args: str) -> int:
    """Run `distill-guard analyze ARGS` through the subcommand's own parser."""
    parser = argparse.ArgumentParser(prog="distill-guard")
    cli.register(parser.add_subparsers(dest="command", required=True))
    ns = parser.parse_args(["analyze", *args])
    return int(ns.func(ns))


def test_analyze_once_drains_and_writes(redis_url: str, tmp_path: Path) -> None:
    """`analyze --once` drains the stream with settings from a file, writes verdicts, exits 0."""
    settings = tmp_path / "analysis.yaml"
    settings.write_text("verdict_ttl: 900\nlinking:\n  cohort_gap: 120\n")

    async def put(client: Redis) -> None:
        await xadd_records(client, recent_campaign())

    async def check(client: Redis) -> tuple[int, float]:
        keys = [k async for k in client.scan_iter(match="dg:v:{a:*")]
        until = float(await client.hget("dg:v:{a:camp000}", "until") or 0)
        return len(keys), until - await client.pexpiretime("dg:v:{a:camp000}") / 1000

    run_with(redis_url, put)
    status = analyze_command("--once", "--store", redis_url, "--settings", str(settings))
    keys, skew = run_with(redis_url, check)
    assert status == 0
    assert keys == 30
    assert abs(skew) < 0.01  # the key expires at the verdict's `until`


def test_analyze_refuses_bad_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown settings key stops the command with status 2 and names the key."""
    settings = tmp_path / "analysis.yaml"
    settings.write_text("windw: 60\n")
    status = analyze_command(
        "--once", "--store", "redis://127.0.0.1:1/0", "--settings", str(settings)
    )
    assert status == 2
    assert "windw: unknown key" in capsys.readouterr().err


def test_analyze_bench_prints_rates(capsys: pytest.CaptureFixture[str]) -> None:
    """`analyze --bench N` times the stages on synthetic records without Redis."""
    assert analyze_command("--bench", "400") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["records"] == 400 and out["bad"] == {}
    assert out["ingest_records_per_s"] > 0 and out["follow_records_per_s"] > 0


def test_drain_on_redis_cluster(redis_cluster_url: str) -> None:
    """On Redis Cluster: stream, log and lease anywhere, each verdict in its account's slot."""

    async def body() -> tuple[int, set[str]]:
        client = rate_client(redis_cluster_url, timeout=10.0)
        try:
            await xadd_records(client, recent_campaign())
            w = AnalysisWorker(client, RedisVerdictSink(client), consumer="w")
            stats = await w.run(drain=True)
            found = set()
            for i in range(30):
                found.add(text(await client.hget(verdict_key(f"camp{i:03d}"), "action")))
            return stats.entries, found
        finally:
            await client.aclose()

    entries, actions = asyncio.run(body())
    assert entries == 750
    assert actions <= {"restrict", "deny"}
