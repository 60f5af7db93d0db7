"""Events on the worker path with real Redis: two workers report each incident once between
them, event records on their own verified chain, skipped by the consumers; `analyze` flags."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis as sync_redis
from redis.asyncio import Redis

from authz.audit.chain import ChainHead, seal
from authz.audit.roller import Roller
from authz.audit.sinks import RedisStreamSink
from authz.audit.stream import RECORD_FIELD, STREAM
from authz.clock import ManualClock
from authz.detect import cli
from authz.detect.settings import AnalysisSettings
from authz.detect.verdicts import RedisVerdictSink
from authz.detect.worker import AnalysisWorker
from authz.events.report import INCIDENT_PREFIX, StreamSink, worker_events
from authz.events.rules import EventRules
from authz.events.webhook import TIMESTAMP_HEADER, verify
from authz.procs import Child, free_port, http_request, stop_all, wait_tcp, wait_until
from tests.test_detect_analyzer import DAY, campaign
from tests.test_events import denial
from tests.test_events_webhook import SECRET, Receiver, event, receiver

pytestmark = pytest.mark.redis
__all__ = ["receiver"]  # the fixture, imported for the analyze command's webhook

RULES = EventRules.model_validate({"campaign_cluster": {"min_accounts": 5}})


def chained(records: list[dict[str, Any]], chain: str = "api-1") -> list[str]:
    """The records as one API server's sink writes them: sorted by time, chained."""
    head: ChainHead | None = None
    lines = []
    for r in sorted(records, key=lambda r: r["time"]):
        line, head = seal(r, head, chain)
        lines.append(line)
    return lines


def traffic() -> list[str]:
    """A day of the hand-made campaign ending now, and three denials from one network."""
    start = time.time() - DAY
    denials = [denial(f"x{i}", start + DAY - 600 + i, network="203.0.113.0/24") for i in range(3)]
    return chained(campaign(start) + denials)


async def xadd_lines(client: Redis, lines: list[str]) -> None:
    """Append record lines to the audit stream, as the Redis sink does."""
    pipe = client.pipeline(transaction=False)
    for line in lines:
        pipe.xadd(STREAM, {RECORD_FIELD: line})
    await pipe.execute()


async def stream_records(client: Redis) -> list[dict[str, Any]]:
    """Every record in the audit stream, oldest first."""
    entries: Any = await client.xrange(STREAM)
    return [json.loads(fields[RECORD_FIELD.encode()]) for _, fields in entries]


def worker(client: Redis, name: str) -> AnalysisWorker:
    """A worker with event reporting to the same Redis (stream, gate), chain events-<name>."""
    settings = AnalysisSettings()
    events = worker_events(
        RULES,
        settings,
        version="t@1",
        stream_client=client,
        stream=STREAM,
        gate_client=client,
        chain=f"events-{name}",
    )
    return AnalysisWorker(client, RedisVerdictSink(client), settings, consumer=name, events=events)


def test_two_workers_report_each_incident_once(redis_url: str) -> None:
    """Two workers share the stream and both see every incident; one report per incident."""

    async def body(client: Redis) -> tuple[int, int, list[dict[str, Any]], int, int, int]:
        await xadd_lines(client, traffic())
        w1, w2 = worker(client, "w1"), worker(client, "w2")
        await w1.ensure_group()
        while True:  # the group shares the entries out between the two
            e1 = await w1.fetch()
            await w1.ingest(e1)
            e2 = await w2.fetch()
            await w2.ingest(e2)
            if not e1 and not e2:
                break
        for w in (w1, w2):
            while not await w.follow():
                pass
        # Both analyse the same view at once: the gate lets one report each incident.
        await asyncio.gather(w1.analyze(force=True), w2.analyze(force=True))
        records = [r for r in await stream_records(client) if "event" in r]
        keys = [k async for k in client.scan_iter(match=INCIDENT_PREFIX + "*")]
        ttl = min([await client.pttl(k) for k in keys])
        # The workers read their own event records back, and skip them.
        for w in (w1, w2):
            await w.ingest(await w.fetch())
        skipped = w1.stats.event_records + w2.stats.event_records
        return w1.stats.events, w2.stats.events, records, len(keys), ttl, skipped

    first, second, records, keys, ttl, skipped = run(redis_url, body)
    kinds = sorted(r["event"]["kind"] for r in records)
    assert kinds == ["campaign_cluster", "restricted_jurisdiction"]
    assert first + second == 2 and keys == 2 and ttl > 0
    assert {r["chain"] for r in records} <= {"events-w1", "events-w2"}
    assert skipped == 2


def test_stream_with_events_verifies_and_rolls_up(
    redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`audit verify --redis` passes with an events chain; the rollup skips event records."""

    async def body(client: Redis) -> None:
        await xadd_lines(client, traffic())
        w = worker(client, "w1")
        await w.run(drain=True)

    run(redis_url, body)
    capsys.readouterr()
    assert main_audit("verify", "--redis", redis_url) == 0
    out = capsys.readouterr().out
    assert "chain events-w1: sequence 1-2" in out and "every chain intact" in out
    items = [("", r) for r in run(redis_url, stream_records)]
    with sync_redis.Redis.from_url(redis_url) as client:
        stats = Roller(client, clock=ManualClock(time.time())).apply(items)
    assert stats.invalid == 0 and stats.applied == len(items) - 2


def main_audit(*args: str) -> int:
    """`distill-guard audit ARGS`."""
    from authz.cli import main

    return main(["audit", *args])


def analyze_command(*args: str) -> int:
    """Run `distill-guard analyze ARGS` through the subcommand's own parser."""
    parser = argparse.ArgumentParser(prog="distill-guard")
    cli.register(parser.add_subparsers(dest="command", required=True))
    ns = parser.parse_args(["analyze", *args])
    return int(ns.func(ns))


def rules_file(tmp_path: Path) -> Path:
    """A rules file with one tier and an `events` section."""
    path = tmp_path / "rules.yaml"
    path.write_text(
        "version: ev\ntiers:\n  free: {}\nevents:\n  campaign_cluster: {min_accounts: 5}\n"
    )
    return path


def test_analyze_once_posts_signed_events(
    redis_url: str, tmp_path: Path, receiver: tuple[Receiver, str]
) -> None:
    """`analyze --once --rules ... --events-webhook` POSTs both incidents, signed."""
    state, url = receiver
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)

    async def put(client: Redis) -> None:
        await xadd_lines(client, traffic())

    run(redis_url, put)
    status = analyze_command(
        *("--once", "--store", redis_url, "--rules", str(rules_file(tmp_path))),
        *("--events-webhook", url, "--events-webhook-secret-file", str(secret)),
        *("--events-chain", "events-test"),
    )
    assert status == 0
    bodies = [json.loads(b) for _, b in state.received]
    assert sorted(b["kind"] for b in bodies) == ["campaign_cluster", "restricted_jurisdiction"]
    assert all(b["rules_version"].startswith("ev@") for b in bodies)
    for headers, body in state.received:
        # Freshness is the receiver's test (test_events_webhook); here, the signature.
        assert verify(SECRET, headers, body, now=float(headers[TIMESTAMP_HEADER]))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--events-webhook", "http://127.0.0.1:9/"), "needs --events-webhook-secret-file"),
        (("--events-webhook-secret-file", "/nonexistent"), "needs --events-webhook"),
        (
            ("--events-webhook", "http://h/", "--events-webhook-secret-file", "/nonexistent"),
            "/nonexistent: cannot read the webhook secret",
        ),
    ],
)
def test_analyze_refuses_bad_event_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: tuple[str, ...], message: str
) -> None:
    """Webhook flags that cannot work stop `analyze` with status 2 and say why."""
    status = analyze_command(
        "--once", "--store", "redis://127.0.0.1:1/0", "--rules", str(rules_file(tmp_path)), *flags
    )
    assert status == 2
    assert message in capsys.readouterr().err


def test_analyze_webhook_needs_an_events_section(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A webhook without a rules file that has `events` is refused: nothing would be reported."""
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)
    status = analyze_command(
        *("--once", "--store", "redis://127.0.0.1:1/0"),
        *("--events-webhook", "http://h/", "--events-webhook-secret-file", str(secret)),
    )
    assert status == 2
    assert "needs a rules file with an `events` section" in capsys.readouterr().err


def run(url: str, body: Any) -> Any:
    """Run `body(client)` with an asyncio client of the test's Redis, closed afterwards."""

    async def main() -> Any:
        client = Redis.from_url(url)
        try:
            return await body(client)
        finally:
            await client.aclose()

    return asyncio.run(main())


def test_a_restarted_worker_continues_its_events_chain(redis_url: str) -> None:
    """A new StreamSink on the same chain links after the last event record in the stream."""

    async def body(client: Redis) -> list[dict[str, Any]]:
        for n in (1, 2):  # two processes, one after the other
            stream = RedisStreamSink(client, name="events", stream=STREAM, maxlen=1000)
            await StreamSink(stream, "events-host").emit([event(n), event(n + 10)], now=1.0e9)
        return await stream_records(client)

    records = run(redis_url, body)
    assert [int(r["sequence"]) for r in records] == [1, 2, 3, 4]
    assert all(b["prev_hash"] == a["hash"] for a, b in itertools.pairwise(records))


def test_analyze_serves_event_metrics_from_zero(redis_url: str, tmp_path: Path) -> None:
    """`analyze --metrics-listen` serves the event counters, at 0 before any event, then 1."""
    port = free_port()
    argv = [sys.executable, "-m", "authz", "analyze", "--store", redis_url, "--block", "0.2"]
    argv += ["--rules", str(rules_file(tmp_path)), "--metrics-listen", f"127.0.0.1:{port}"]
    child = Child.spawn("analyze", argv, tmp_path)
    emitted = 'distill_guard_events_emitted_total{kind="%s",severity="%s"}'
    try:
        wait_tcp(child, "127.0.0.1", port)
        before = http_request(f"http://127.0.0.1:{port}/metrics").body.decode().splitlines()
        run(redis_url, lambda client: xadd_lines(client, traffic()))
        wait_until(
            child,
            "the campaign event in /metrics",
            lambda: (
                emitted % ("campaign_cluster", "high") + " 1.0"
                in http_request(f"http://127.0.0.1:{port}/metrics").body.decode().splitlines()
            ),
        )
    finally:
        stop_all([child])
    assert emitted % ("campaign_cluster", "high") + " 0.0" in before
    assert emitted % ("unverified_signup_burst", "medium") + " 0.0" in before
