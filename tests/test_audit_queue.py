"""The audit queue: never in the request's way, drops counted, failing sinks isolated,
backlogs written in order when the sink returns, and a graceful drain on shutdown."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2_grpc

from authz.audit import queue
from authz.audit.chain import ChainHead
from authz.audit.queue import AuditTrail
from tests.audit_support import decisions, intact_file, intact_lines, until, write
from tests.checkreq import check_request
from tests.fakes import BOB_KEY
from tests.otel import counter_value, metric_reader
from tests.serverthread import ServerThread, demo_settings

DROPPED = "distill_guard.audit.dropped"
WRITTEN = "distill_guard.audit.written"


class MemorySink:
    """A sink keeping its lines in a list; it can be made to fail, hang or be slow."""

    def __init__(self, name: str = "memory", delay: float = 0.0) -> None:
        self.name = name
        self.lines: list[str] = []
        self.delay = delay
        self.down = False
        self.writes = 0
        self.closed = False

    async def head(self, chain: str) -> ChainHead | None:
        """The last line of the chain, as a real sink reads it back."""
        if self.down:
            raise ConnectionError("sink down")
        for line in reversed(self.lines):
            fields = json.loads(line)
            if fields["chain"] == chain:
                return ChainHead.of(fields)
        return None

    async def write(self, lines: Sequence[str]) -> None:
        """Keep the lines (after `delay`), or fail while down."""
        self.writes += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.down:
            raise ConnectionError("sink down")
        self.lines.extend(lines)

    async def aclose(self) -> None:
        """Remember being closed."""
        self.closed = True


def trail(*sinks: MemorySink, **kw: object) -> AuditTrail:
    """A trail over test sinks, chain `t`."""
    return AuditTrail(list(sinks), chain="t", **kw)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _metrics() -> None:
    """Route the OTel API to the in-memory reader before any counter is touched."""
    metric_reader()


def test_full_queue_drops_and_counts_without_blocking() -> None:
    """Beyond the queue's size, `record` drops at once and counts reason=queue_full.

    `record` is synchronous and nothing drains the queue here: it cannot wait for room.
    """
    before = counter_value(DROPPED, reason="queue_full")
    t = trail(MemorySink(), queue_size=3)
    for f, d in decisions(1) * 10:
        t.record(f, d)
    assert t.depth == 3
    assert counter_value(DROPPED, reason="queue_full") - before == 7


def test_record_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fault while queueing (here reading the trace context) is logged, never raised."""

    def broken(*args: object) -> None:
        raise RuntimeError("tracing broke")

    f, d = decisions(1)[0]
    monkeypatch.setattr("authz.audit.queue.trace.get_current_span", broken)
    t = AuditTrail([MemorySink()], chain="t")
    t.record(f, d)
    assert t.depth == 0


def test_graceful_drain_on_close() -> None:
    """close() writes everything queued, in order and chained, then closes the sinks."""
    sink = MemorySink()
    records = decisions(5) * 200
    write(trail(sink), records)
    assert len(sink.lines) == 1000 and sink.closed
    assert intact_lines(sink.lines).records == 1000
    assert [json.loads(line)["decision_id"] for line in sink.lines] == [
        d.decision_id for _, d in records
    ]


def test_failing_sink_leaves_the_others_alone_and_catches_up() -> None:
    """While one sink is down the other keeps writing; the failing one keeps a backlog and
    writes it, in order and chain intact, once it is back."""
    good, flaky = MemorySink("good"), MemorySink("flaky")
    errors_before = counter_value("distill_guard.audit.sink_errors", sink="flaky")
    records = decisions(30)

    async def run() -> None:
        t = trail(good, flaky)
        t.start()
        for f, d in records[:10]:
            t.record(f, d)
        await until(lambda: len(good.lines) == len(flaky.lines) == 10)
        flaky.down = True
        for f, d in records[10:20]:
            t.record(f, d)
        await until(lambda: len(good.lines) == 20)
        assert len(flaky.lines) == 10 and t.workers[1].failing
        assert t.workers[1].backlog == 10
        flaky.down = False
        for f, d in records[20:]:
            t.record(f, d)
        await until(lambda: len(flaky.lines) == 30)
        await t.close()

    asyncio.run(run())
    assert good.lines == flaky.lines  # same chain name, same records: the same text
    assert intact_lines(flaky.lines).records == 30
    assert counter_value("distill_guard.audit.sink_errors", sink="flaky") > errors_before


def test_backlog_overflow_drops_and_counts_per_sink() -> None:
    """A down sink holds `backlog` records; more are dropped, counted with the sink's name,
    and what it holds is written later with no gap in its chain."""
    down = MemorySink("down")
    down.down = True
    before = counter_value(DROPPED, reason="sink_backlog", sink="down")

    records = decisions(12)

    async def run() -> None:
        t = trail(down, backlog=5)
        t.start()
        for f, d in records:
            t.record(f, d)
        await until(lambda: t.depth == 0 and t.workers[0].backlog == 5)
        down.down = False
        await t.close()

    asyncio.run(run())
    assert counter_value(DROPPED, reason="sink_backlog", sink="down") - before == 7
    assert intact_lines(down.lines).records == 5


def test_a_batch_partly_written_before_a_failure_is_not_written_twice() -> None:
    """When a write fails after part of the batch landed, the retry continues after the part
    the sink holds (it reads its own last record), so nothing repeats and the chain holds."""

    class HalfSink(MemorySink):
        async def write(self, lines: Sequence[str]) -> None:
            if self.writes == 0:
                self.writes += 1
                self.lines.extend(lines[:3])
                raise ConnectionError("connection lost mid-batch")
            await super().write(lines)

    sink = HalfSink()
    records = decisions(8)

    async def run() -> None:
        t = trail(sink)
        for f, d in records:
            t.record(f, d)
        t.start()
        await t.close()

    asyncio.run(run())
    assert [json.loads(x)["decision_id"] for x in sink.lines] == [d.decision_id for _, d in records]
    assert intact_lines(sink.lines).records == 8


def test_stalled_sink_is_not_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that hangs marks its sink failing: the drain goes on for the other sinks."""
    monkeypatch.setattr(queue, "STALL", 0.1)
    good, stuck = MemorySink("good"), MemorySink("stuck", delay=1.0)
    records = decisions(600)

    async def run() -> None:
        t = trail(good, stuck)
        t.start()
        for i, (f, d) in enumerate(records):
            t.record(f, d)
            if i % 100 == 0:
                await asyncio.sleep(0)
        await until(lambda: len(good.lines) == 600, timeout=0.8)
        assert t.workers[1].failing
        await t.close()

    asyncio.run(run())
    assert len(stuck.lines) == 600 and intact_lines(stuck.lines)


def test_shutdown_gives_up_after_the_grace_period_and_counts_the_rest() -> None:
    """A sink still down at shutdown does not hold the process: after the grace period its
    backlog is counted as dropped (reason=shutdown) and logged."""
    down = MemorySink("gone")
    down.down = True
    before = counter_value(DROPPED, reason="shutdown", sink="gone")
    records = decisions(4)

    async def run() -> None:
        t = trail(down, grace=0.3)
        t.start()
        for f, d in records:
            t.record(f, d)
        # Without the grace period close() would wait for the sink forever.
        await asyncio.wait_for(t.close(), timeout=5.0)

    asyncio.run(run())
    assert counter_value(DROPPED, reason="shutdown", sink="gone") - before == 4
    assert down.closed


def test_checks_through_the_server_are_answered_when_the_queue_is_full() -> None:
    """A real gRPC server with a tiny queue and a slow sink answers every Check; the overflow
    is counted as queue_full and what was queued is written, chained, by shutdown."""
    slow = MemorySink("slow", delay=0.2)

    def tiny_queue(app):  # type: ignore[no-untyped-def]
        app.audit = app.pipeline._sink = trail(slow, queue_size=4)

    before = counter_value(DROPPED, reason="queue_full")
    running = ServerThread(demo_settings(), customize=tiny_queue)
    try:

        async def burst() -> list[bool]:
            async with grpc.aio.insecure_channel(running.target) as channel:
                stub = external_auth_pb2_grpc.AuthorizationStub(channel)
                req = check_request({"x-api-key": BOB_KEY})
                answers = await asyncio.gather(*(stub.Check(req, timeout=5) for _ in range(100)))
            return [a.HasField("ok_response") or a.HasField("denied_response") for a in answers]

        # Each Check has a 5 s deadline: 100 writes of 0.2 s would not fit if checks waited.
        assert all(asyncio.run(burst()))
    finally:
        running.close()
    dropped = counter_value(DROPPED, reason="queue_full") - before
    assert dropped > 0
    assert len(slow.lines) + dropped == 100
    assert intact_lines(slow.lines)


def test_server_writes_the_audit_file_and_drains_it_on_stop(tmp_path: Path) -> None:
    """`--audit jsonl:PATH`: the server starts the writer itself and, on stop, every
    decision is in the file, chained; a restarted server continues the same chain."""
    path = tmp_path / "audit.jsonl"
    for _ in range(2):
        running = ServerThread(demo_settings(audit=f"jsonl:{path}", audit_chain="web-1"))
        try:
            with grpc.insecure_channel(running.target) as channel:
                stub = external_auth_pb2_grpc.AuthorizationStub(channel)
                for _ in range(5):
                    stub.Check(check_request({"x-api-key": BOB_KEY}))
        finally:
            running.close()
    checker = intact_file(path)
    assert checker.summary().splitlines()[1] == "  chain web-1: sequence 1-10"


def test_records_after_close_are_counted() -> None:
    """A decision arriving after the trail closed is not silently lost: it is counted."""
    before = counter_value(DROPPED, reason="shutdown")
    t = trail(MemorySink())
    f, d = decisions(1)[0]
    asyncio.run(t.close())
    t.record(f, d)
    assert counter_value(DROPPED, reason="shutdown") - before == 1
