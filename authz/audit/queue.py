"""The audit trail's DecisionSink: a bounded queue in front of the sinks.

Back-pressure policy: the request path never waits for audit. `record` only
appends to an in-memory queue; when the queue is full the record is dropped
and counted (`distill_guard.audit.dropped`, reason `queue_full`) and a warning
is logged. A background task drains the queue in batches: it builds the
records, then hands each batch to every sink's worker and waits for the
healthy ones, so a slow sink slows the drain and, in the end, fills the queue.

A sink that fails (Redis down, disk full) or stalls is no longer waited for:
its worker keeps the records in a bounded backlog of its own and retries with
backoff, writing them in order, chain intact, once the sink answers again.
When the backlog is full, new records for that sink are dropped and counted
(reason `sink_backlog`, attribute `sink`); the other sinks are unaffected.

`close` drains the queue and the backlogs within the grace period; records
still unwritten then are counted (reason `shutdown`) and logged.

With a ContentPolicy (--audit-request-content) records also keep the request
itself. The queue holds the RequestFacts it was given either way (no copy on
the request path); the body is cut and copied only when the drain builds the
record.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation

from authz.audit.chain import ChainHead, seal
from authz.audit.record import ContentPolicy, build_record, to_dict
from authz.decision import Decision
from authz.facts import RequestFacts
from authz.protocols import AuditSink

log = logging.getLogger("distill_guard.audit")

BATCH = 256
# Records built or chained between two yields to the event loop (about 2 ms of work),
# so a batch never holds up the checks sharing the loop.
SLICE = 16
_RETRY_FIRST = 0.2
_RETRY_MAX = 15.0
# A write that takes longer marks its sink as failing (the drain stops waiting for it).
STALL = 5.0
_DROP_LOG_EVERY = 10.0

_trails: weakref.WeakSet[AuditTrail] = weakref.WeakSet()
_workers: weakref.WeakSet[SinkWorker] = weakref.WeakSet()


def _observe_depth(options: CallbackOptions) -> Iterable[Observation]:
    yield Observation(sum(t.depth for t in _trails))


def _observe_backlog(options: CallbackOptions) -> Iterable[Observation]:
    for w in _workers:
        yield Observation(w.backlog, {"sink": w.sink.name})


_meter = metrics.get_meter("distill_guard")
_dropped = _meter.create_counter(
    "distill_guard.audit.dropped",
    description="Audit records lost, by reason (queue_full, sink_backlog, shutdown) and sink",
)
_written = _meter.create_counter(
    "distill_guard.audit.written", description="Audit records written, by sink"
)
_errors = _meter.create_counter(
    "distill_guard.audit.sink_errors", description="Failed or stalled sink writes, by sink"
)
_meter.create_observable_gauge(
    "distill_guard.audit.queue_depth",
    callbacks=[_observe_depth],
    description="Decisions waiting to become audit records",
)
_meter.create_observable_gauge(
    "distill_guard.audit.backlog",
    callbacks=[_observe_backlog],
    description="Records a failing sink holds for its retry, by sink",
)


@dataclass(frozen=True, slots=True)
class _Pending:
    facts: RequestFacts
    decision: Decision
    trace_id: str


class _DropLog:
    """Logs drops as a warning at most every few seconds, with the count since the last one."""

    def __init__(self, message: str, **extra: str) -> None:
        self._message = message
        self._extra = extra
        self._count = 0
        self._last = 0.0

    def add(self, n: int) -> None:
        self._count += n
        now = time.monotonic()
        if now - self._last >= _DROP_LOG_EVERY:
            log.warning(self._message, extra={**self._extra, "dropped": self._count})
            self._count, self._last = 0, now


class SinkWorker:
    """Chains and writes records to one sink, in order; holds a backlog while the sink fails.

    The drain waits for a worker (`settled`) only while it keeps up: at most one
    batch waiting besides the one being written. A worker that failed is
    `behind` until it has caught up again, and is not waited for meanwhile.
    """

    def __init__(self, sink: AuditSink, *, chain: str, backlog: int, batch: int = BATCH) -> None:
        self.sink = sink
        self.chain = chain
        self.failing = False  # the last write failed
        self.behind = False  # failed since it last caught up
        self._limit = backlog
        self._batch = batch
        self._pending: deque[dict[str, Any]] = deque()  # unchained records, oldest first
        self._head: ChainHead | None = None
        self._resumed = False  # the head was read from the sink since the last failure
        self._started = False  # the head was read from the sink at least once
        self._closing = False
        self._wake = asyncio.Event()
        self._hurry = asyncio.Event()  # cuts a retry wait short (on close)
        self._settled = asyncio.Event()
        self._empty = asyncio.Event()
        self._settled.set()
        self._empty.set()
        self._drops = _DropLog("audit sink backlog full; records dropped", sink=sink.name)
        _workers.add(self)

    @property
    def backlog(self) -> int:
        """Records accepted and not yet written."""
        return len(self._pending)

    def offer(self, records: Sequence[dict[str, Any]]) -> None:
        """Queue records for writing; what does not fit in the backlog is dropped and counted."""
        room = max(0, self._limit - len(self._pending))
        if len(records) > room:
            lost = len(records) - room
            _dropped.add(lost, {"reason": "sink_backlog", "sink": self.sink.name})
            self._drops.add(lost)
            records = records[:room]
        if records:
            self._pending.extend(records)
            self._wake.set()
        self._update()

    def _update(self) -> None:
        if self.behind and len(self._pending) <= self._batch and not self.failing:
            self.behind = False
        if self.behind or len(self._pending) <= self._batch:
            self._settled.set()
        else:
            self._settled.clear()
        if self._pending:
            self._empty.clear()
        else:
            self._empty.set()

    async def settled(self) -> None:
        """Return once the worker keeps up (or is behind, and not to be waited for)."""
        await self._settled.wait()

    async def empty(self) -> None:
        """Return once everything offered is written."""
        await self._empty.wait()

    def hurry(self) -> None:
        """Retry without backing off from now on (shutdown)."""
        self._closing = True
        self._hurry.set()

    def unwritten(self) -> int:
        """Forget the backlog (shutdown); how many records it held."""
        n = len(self._pending)
        self._pending.clear()
        self._update()
        return n

    async def run(self) -> None:
        """Write until cancelled; on failure, back off and retry the same records."""
        delay = _RETRY_FIRST
        while True:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                await self._write_next()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failed(exc)
                await self._backoff(delay)
                delay = min(delay * 2, _RETRY_MAX)
                continue
            if self.failing:
                self.failing = False
                log.info(
                    "audit sink recovered",
                    extra={"sink": self.sink.name, "backlog": len(self._pending)},
                )
            delay = _RETRY_FIRST
            self._update()

    async def _write_next(self) -> None:
        if not self._resumed:
            self._resume(await self.sink.head(self.chain))
        batch = list(islice(self._pending, self._batch))
        head = self._head
        lines = []
        for i, body in enumerate(batch, start=1):
            line, head = seal(body, head, self.chain)
            lines.append(line)
            if i % SLICE == 0:
                await asyncio.sleep(0)
        write = asyncio.ensure_future(self.sink.write(lines))
        done, _ = await asyncio.wait({write}, timeout=STALL)
        if not done:
            self._failed(TimeoutError(f"a write took over {STALL:.0f}s"))
        await write  # the same write: a batch is never written twice at once
        for _ in batch:
            self._pending.popleft()
        self._head = head
        _written.add(len(batch), {"sink": self.sink.name})

    def _resume(self, found: ChainHead | None) -> None:
        """Continue from the sink's own last record of our chain.

        On start that continues the chain of an earlier process. After a failure
        it tells whether part of the failed batch was written after all (those
        records are not written again). A sink that lost records (a Redis
        restarted empty) does not move the chain back: the gap stays visible.
        """
        if not self._started:
            self._head = found
        elif found is not None:
            ids = [body.get("decision_id", "") for body in islice(self._pending, self._batch)]
            if found.decision_id in ids:
                done = ids.index(found.decision_id) + 1
                for _ in range(done):
                    self._pending.popleft()
                self._head = found
                _written.add(done, {"sink": self.sink.name})
        self._started = self._resumed = True

    def _failed(self, exc: BaseException) -> None:
        _errors.add(1, {"sink": self.sink.name})
        self._resumed = False
        self.behind = True
        if not self.failing:
            self.failing = True
            log.warning(
                "audit sink failing; keeping records in its backlog and retrying",
                extra={"sink": self.sink.name, "error": repr(exc), "backlog": len(self._pending)},
            )
        self._update()

    async def _backoff(self, delay: float) -> None:
        if self._closing:
            delay = _RETRY_FIRST
        self._hurry.clear()
        try:
            async with asyncio.timeout(delay):
                await self._hurry.wait()
        except TimeoutError:
            pass


class AuditTrail:
    """The pipeline's DecisionSink: queues decisions and writes them to every sink, chained."""

    def __init__(
        self,
        sinks: Sequence[AuditSink],
        *,
        chain: str,
        queue_size: int = 10_000,
        backlog: int = 100_000,
        grace: float = 5.0,
        content: ContentPolicy | None = None,
    ) -> None:
        self.sinks = list(sinks)
        self.content = content
        # A small queue gets small batches: a slow sink may lag a batch, not a whole BATCH.
        self._batch = max(1, min(BATCH, queue_size))
        self.workers = [
            SinkWorker(s, chain=chain, backlog=backlog, batch=self._batch) for s in sinks
        ]
        self._queue: deque[_Pending] = deque()
        self._size = queue_size
        self._grace = grace
        self._ready = asyncio.Event()
        self._closing = False
        self._closed = False
        self._tasks: list[asyncio.Task[None]] = []
        self._drain_task: asyncio.Task[None] | None = None
        self._drops = _DropLog("audit queue full; records dropped")
        _trails.add(self)

    @property
    def depth(self) -> int:
        """Decisions waiting in the queue."""
        return len(self._queue)

    def record(self, facts: RequestFacts, decision: Decision) -> None:
        """Queue one decision; never blocks or raises (a full queue drops and counts it)."""
        if not self.workers:
            return
        try:
            if self._closed:
                _dropped.add(1, {"reason": "shutdown"})
                return
            if len(self._queue) >= self._size:
                _dropped.add(1, {"reason": "queue_full"})
                self._drops.add(1)
                return
            context = trace.get_current_span().get_span_context()
            trace_id = format(context.trace_id, "032x") if context.is_valid else ""
            self._queue.append(_Pending(facts, decision, trace_id))
            self._ready.set()
        except Exception:
            log.exception("audit record not queued", extra={"decision_id": decision.decision_id})

    def start(self) -> None:
        """Start the drain and sink tasks on the running loop (idempotent)."""
        if self._drain_task is not None:
            return
        self._tasks = [asyncio.create_task(w.run()) for w in self.workers]
        self._drain_task = asyncio.create_task(self._drain())

    async def _drain(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._ready.clear()
                await self._ready.wait()
                continue
            batch = [self._queue.popleft() for _ in range(min(self._batch, len(self._queue)))]
            bodies = []
            for i, pending in enumerate(batch, start=1):
                body = self._build(pending)
                if body is not None:
                    bodies.append(body)
                if i % SLICE == 0:
                    await asyncio.sleep(0)  # let checks run between slices of the batch
            for worker in self.workers:
                worker.offer(bodies)
            await asyncio.gather(*(w.settled() for w in self.workers))

    def _build(self, p: _Pending) -> dict[str, Any] | None:
        try:
            record = build_record(p.facts, p.decision, trace_id=p.trace_id, content=self.content)
            return to_dict(record)
        except Exception:
            # A bug, not a fault of the sinks: count it as a loss and keep draining.
            _dropped.add(1, {"reason": "build_error"})
            log.exception("audit record not built", extra={"decision_id": p.decision.decision_id})
            return None

    async def close(self, grace: float | None = None) -> None:
        """Write what is queued and backlogged within the grace period, then stop."""
        if self._closing:
            return
        self._closing = True
        self._ready.set()
        self.start()
        assert self._drain_task is not None
        for worker in self.workers:
            worker.hurry()
        try:
            async with asyncio.timeout(self._grace if grace is None else grace):
                await asyncio.shield(self._drain_task)
                await asyncio.gather(*(w.empty() for w in self.workers))
        except TimeoutError:
            pass
        self._drain_task.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(self._drain_task, *self._tasks, return_exceptions=True)
        self._closed = True
        self._account_for_leftovers()
        for sink in self.sinks:
            try:
                await sink.aclose()
            except Exception as exc:
                log.warning(
                    "audit sink close failed", extra={"sink": sink.name, "error": repr(exc)}
                )

    def _account_for_leftovers(self) -> None:
        queued = len(self._queue)
        self._queue.clear()
        if queued:
            _dropped.add(queued, {"reason": "shutdown"})
        unwritten = {w.sink.name: w.unwritten() for w in self.workers}
        for name, n in unwritten.items():
            if n:
                _dropped.add(n, {"reason": "shutdown", "sink": name})
        if queued or any(unwritten.values()):
            log.error(
                "audit records not written before shutdown",
                extra={"queued": queued, "unwritten": unwritten},
            )
