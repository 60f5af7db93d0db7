"""Applying batches of audit records to the rollups, exactly once per stream entry.

Exactly once: a batch is taken by one Lua script that checks every entry is
still pending for this consumer, acknowledges them and logs the batch's
increments ahead, atomically (see `Roller`). A batch whose entries were
claimed by (or already acknowledged by) another consumer is re-aggregated
without them, so an entry counts once even when a slow consumer wakes up
after its entries were claimed. `--file` backfills have no entry ids:
loading the same file twice counts it twice.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from authz.audit.client import Client
from authz.audit.record import is_event
from authz.audit.rollup_batch import RollupBatch, chunked
from authz.audit.rollup_keys import STATS_KEY, WAL_INDEX_KEY, WAL_PREFIX, Retention
from authz.audit.rollup_scripts import APPLY_CHUNK_LUA, TAKE_LUA
from authz.audit.stream import STREAM
from authz.clock import SystemClock
from authz.protocols import Clock
from authz.redistext import text

log = logging.getLogger("authz.audit.rollup")


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
            events = 0  # records of reportable events: not decisions, nothing to count
            for _, rec in items:
                if rec is None:
                    batch.invalid += 1
                    continue
                if is_event(rec):
                    events += 1
                    continue
                try:
                    batch.add(rec)
                except (KeyError, ValueError, TypeError, AttributeError) as exc:
                    log.warning("audit record skipped: %s", exc)
                    batch.invalid += 1
            ops, expired = batch.ops(self.retention, self.clock.now())
            stats = RollupStats(
                applied=len(items) - batch.invalid - expired - events,
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
            gone = {text(m) for m in missing}
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
            stats.add_scripts(self.finish(text(wal)))
        return stats


def _id_order(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
