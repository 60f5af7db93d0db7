"""The Redis stream sink on a real Redis: chains across restarts and writers, trimming, and
outages (killed, paused) during which the JSON lines file goes on unaffected."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from authz.audit.queue import AuditTrail
from authz.audit.sinks import JsonlSink, open_sinks
from authz.audit.stream import STREAM
from authz.audit.verify import ChainChecker, file_entries, stream_entries
from authz.cli import main
from tests.audit_support import Records, decisions, intact, intact_file, until, write
from tests.redis_server import RedisServer

pytestmark = pytest.mark.redis


def open_trail(spec: str, url: str, chain: str = "web-1", **kw: object) -> AuditTrail:
    """A trail over the sinks `--audit spec` names, with `url` as the --store."""
    sinks = open_sinks(spec, store=url, stream=STREAM, maxlen=int(kw.pop("maxlen", 1000)))  # type: ignore[call-overload]
    return AuditTrail(sinks, chain=chain, **kw)  # type: ignore[arg-type]


def stream_check(url: str) -> ChainChecker:
    """Verify the stream; it must be intact."""
    with redis.Redis.from_url(url) as client:
        return intact(stream_entries(client, STREAM))


def test_stream_entries_and_chain_across_restarts(
    redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each record is one entry (field `record`, canonical JSON); a restarted process reads
    the stream's last record of its chain and continues it."""
    records = decisions(4)
    write(open_trail("redis", redis_url), records)
    write(open_trail("redis", redis_url), records)
    with redis.Redis.from_url(redis_url) as client:
        entries = client.xrange(STREAM)
    assert len(entries) == 8
    first = json.loads(entries[0][1][b"record"])
    assert (first["decision_id"], first["sequence"], first["chain"]) == (
        records[0][1].decision_id,
        "1",
        "web-1",
    )
    assert main(["audit", "verify", "--redis", redis_url]) == 0
    assert capsys.readouterr().out.splitlines()[1] == "  chain web-1: sequence 1-8"


def test_replicas_share_one_stream(redis_url: str) -> None:
    """Several writers (one chain each) append to one stream; every chain verifies."""
    records = decisions(3)

    async def run() -> None:
        trails = [open_trail("redis", redis_url, chain=c) for c in ("pod-a", "pod-b")]
        for t in trails:
            t.start()
        for f, d in records * 3:
            for t in trails:
                t.record(f, d)
            await asyncio.sleep(0)
        for t in trails:
            await t.close()

    asyncio.run(run())
    checker = stream_check(redis_url)
    assert {name: c.records for name, c in checker.chains.items()} == {"pod-a": 9, "pod-b": 9}


def test_stream_is_trimmed_and_still_verifies(redis_url: str) -> None:
    """MAXLEN ~ trims the oldest entries; the rest verifies, starting mid-chain."""
    # A redis:// URL of its own (here the same server) instead of the --store one.
    write(open_trail(redis_url, "memory://", maxlen=10), decisions(1) * 1500)
    with redis.Redis.from_url(redis_url) as client:
        length = client.xlen(STREAM)
    assert 10 <= length < 1500
    checker = stream_check(redis_url)
    (chain,) = checker.chains.values()
    assert chain.last.sequence == 1500 and chain.first.sequence == 1500 - length + 1


def _outage(
    tmp_path: Path,
    own_redis: RedisServer,
    stop: Callable[[], None],
    start: Callable[[], None],
) -> tuple[Path, AuditTrail]:
    """Write 5 records, stop Redis, write 5 (the file gets them at once), start Redis, write 5."""
    path = tmp_path / "audit.jsonl"
    records = decisions(15)
    loop = asyncio.new_event_loop()
    trail = open_trail(f"jsonl:{path},redis", own_redis.url)

    def feed(batch: Records) -> None:
        async def go() -> None:
            for f, d in batch:
                trail.record(f, d)

        loop.run_until_complete(go())

    def lines() -> int:
        return len(path.read_text().splitlines()) if path.exists() else 0

    def run_until(condition: Callable[[], bool]) -> None:
        loop.run_until_complete(until(condition, timeout=20.0, poll=0.05))

    loop.run_until_complete(_start(trail))
    feed(records[:5])
    run_until(lambda: lines() == 5 and trail.workers[1].backlog == 0)
    stop()
    feed(records[5:10])
    run_until(lambda: lines() == 10 and trail.workers[1].failing)
    assert trail.workers[1].backlog == 5
    start()
    feed(records[10:])
    run_until(lambda: lines() == 15 and trail.workers[1].backlog == 0)
    loop.run_until_complete(trail.close())
    loop.close()
    return path, trail


async def _start(trail: AuditTrail) -> None:
    trail.start()


def test_redis_killed_then_restarted_empty(tmp_path: Path, own_redis: RedisServer) -> None:
    """Redis killed: the file sink goes on; the stream sink keeps its records and, once a
    (fresh, empty) Redis is back, writes them in order: the stream starts where the lost
    data ended (sequence 6), chain intact, and nothing the process held was lost."""
    path, _ = _outage(tmp_path, own_redis, own_redis.kill, own_redis.restart)
    assert intact_file(path).summary().splitlines()[1] == "  chain web-1: sequence 1-15"
    checker = stream_check(own_redis.url)
    (chain,) = checker.chains.values()
    assert (chain.first.sequence, chain.last.sequence, checker.records) == (6, 15, 10)


def test_redis_paused_then_resumed(tmp_path: Path, own_redis: RedisServer) -> None:
    """Redis frozen (writes time out; some may land late): after it resumes, the stream
    holds every record exactly once, sequence 1-15, and equals the file record for record."""
    path, _ = _outage(tmp_path, own_redis, own_redis.pause, own_redis.resume)
    checker = stream_check(own_redis.url)
    assert checker.summary().splitlines()[1] == "  chain web-1: sequence 1-15"
    with redis.Redis.from_url(own_redis.url) as client:
        stream = [values[b"record"].decode() for _, values in client.xrange(STREAM)]
    assert stream == path.read_text().splitlines()


def test_file_sink_continues_its_chain_and_survives_a_torn_line(tmp_path: Path) -> None:
    """A new process continues the file's chain from its last complete record; a line torn
    by a crash stays visible to verify, and the new records start on a line of their own."""
    path = tmp_path / "audit.jsonl"
    records = decisions(3)
    write(AuditTrail([JsonlSink(path)], chain="c"), records)
    with open(path, "ab") as f:
        f.write(b'{"account":"torn')
    write(AuditTrail([JsonlSink(path)], chain="c"), records)
    lines = path.read_text().splitlines()
    assert len(lines) == 7 and lines[3] == '{"account":"torn'
    assert [json.loads(x)["sequence"] for x in lines[4:]] == ["4", "5", "6"]
    checker = ChainChecker()
    with open(path, "rb") as f:
        problem = checker.check(file_entries(f))
    assert str(problem) == "unreadable: line 4 is not an audit record (not a JSON object)"
