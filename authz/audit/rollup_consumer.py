"""The rollup consumer: one member of a consumer group on the audit stream.

It reads batches (XREADGROUP: its own pending entries first, then new ones),
takes over entries of crashed consumers (XAUTOCLAIM), and hands each batch to
a Roller, which applies it exactly once (authz.audit.roller).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import redis

from authz.audit.client import Client
from authz.audit.group import Entry, GroupReader, Retry, run
from authz.audit.record import parse_fields
from authz.audit.roller import Roller, RollupStats
from authz.audit.rollup_keys import Retention
from authz.audit.stream import RECORD_FIELD, STREAM
from authz.clock import SystemClock
from authz.protocols import Clock

log = logging.getLogger("authz.audit.rollup")
_RECORD_KEY = RECORD_FIELD.encode()  # entries come back with bytes keys


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
        self._reader = GroupReader(
            stream,
            group,
            self.consumer,
            batch=batch,
            claim_idle=claim_idle,
            claim_every=claim_every,
            monotonic=monotonic,
        )
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
        return run(self._reader.claim(), self.client)

    def read(self, block: float | None) -> list[Entry]:
        """Our own pending entries first (after a restart), then new ones."""
        return run(self._reader.read(block), self.client)

    def fetch(self, block: float | None = None) -> list[Entry]:
        """The next batch of entries to apply (see the class docstring).

        When a claim is due, first finishes any WAL a crashed consumer left.
        """

        def recover() -> None:
            self._recovered.add_scripts(self.roller.recover())

        return run(self._reader.fetch(block, recover), self.client)

    def apply(self, entries: list[Entry]) -> RollupStats:
        """Apply and acknowledge a batch; entries claimed away meanwhile are left to their owner."""
        items: list[tuple[str, Mapping[str, Any] | None]] = []
        deleted: list[str] = []
        for raw_id, fields in entries:
            entry_id = raw_id.decode()
            if fields:
                items.append((entry_id, parse_fields(fields.get(_RECORD_KEY))))
            else:
                deleted.append(entry_id)
        trimmed, self._reader.trimmed = self._reader.trimmed, 0
        return self.roller.apply(items, deleted, trimmed)

    def step(self, block: float | None = None) -> tuple[int, RollupStats]:
        """Fetch and apply one batch; returns how many entries were fetched and the figures."""
        entries = self.fetch(block)
        stats = self.apply(entries) if entries or self._reader.trimmed else RollupStats()
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
        retry = Retry()
        grouped = False
        while not stop.is_set():
            try:
                if not grouped:
                    self.ensure_group()
                    grouped = True
                fetched, stats = self.step(None if drain else block)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                delay = retry.failed(drain=drain)
                if delay is None:
                    raise
                log.warning("audit rollup: redis unavailable (%s); retrying in %.1fs", exc, delay)
                self._reader.backlog = True  # what we read but did not apply is still ours
                stop.wait(delay)
                continue
            retry.succeeded()
            total.add(stats)
            if drain and fetched == 0:
                total.add_scripts(self.roller.recover())
                break
        total.seconds = time.monotonic() - started
        return total
