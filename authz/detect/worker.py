"""The analysis worker: a member of a consumer group on the audit stream.

Clustering needs every record, while a consumer group hands each record to
one worker. So the work is split in two stages:

1. **Ingest** (shared): each worker reads its share of `dg:audit` through the
   group `analyze` (created one window back; its own pending entries first,
   then new ones; entries a crashed worker left pending longer than
   `claim_idle` are claimed with XAUTOCLAIM), reduces every record to a
   compact observation, appends the
   observations to the observation log `dg:detect:obs` and acknowledges the
   entries, in one pipeline. Parsing the full record (which can carry a whole
   request) is the expensive part, and it is what the group shares out.
2. **Analysis** (global): every worker follows the whole observation log
   (plain XREAD, no group) into its own Analyzer, so each holds the same
   view; every `interval` seconds of record time each one analyses, and the
   one holding the lease `dg:detect:lock` writes the verdicts. When it dies
   its lease lapses and another writes the next analysis, from a view that is
   already complete.

Delivery is at least once: an entry whose observation was appended but not
acknowledged (a crash between the two) is appended again by whoever claims it,
and the analysis counts it once, since each observation carries its audit
entry id. The log is trimmed to the analysis window (plus an hour) by wall
time as it is appended to; a worker that starts reads what is left of it.

With reportable events on (authz.events), each log entry also carries what the
event detector needs beyond the observation (decision id, jurisdiction denial,
country); every worker feeds its detector from the log as it feeds its
Analyzer, and after each analysis reports what became reportable, through a
Redis gate that lets one worker of several report each incident. Event records
in the audit stream (the events' own chain) are acknowledged and skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import redis
from redis.asyncio import Redis, RedisCluster
from redis.typing import EncodableT, FieldT

from authz.audit.group import Entry, GroupReader, Retry, run_async
from authz.audit.record import is_event, parse_fields
from authz.audit.stream import RECORD_FIELD, STREAM
from authz.detect.analyzer import Analyzer, Observation, RecordError, parse_record
from authz.detect.settings import AnalysisSettings
from authz.detect.verdicts import Verdict, VerdictSink
from authz.events.detector import Sighting, sighting_of
from authz.events.report import Events

log = logging.getLogger("authz.detect.worker")

GROUP = "analyze"
OBS_STREAM = "dg:detect:obs"
LOCK_KEY = "dg:detect:lock"
OBS_FIELD = "o"  # the compact observation, as JSON
SOURCE_FIELD = "s"  # the audit entry it came from: counted once however often appended
SIGHTING_FIELD = "e"  # with events on: the Sighting, as JSON
_RECORD_KEY = RECORD_FIELD.encode()
_OBS_KEY = OBS_FIELD.encode()
_SOURCE_KEY = SOURCE_FIELD.encode()
_SIGHTING_KEY = SIGHTING_FIELD.encode()
_LOG_MARGIN = 3600.0  # seconds the observation log keeps beyond the window

# Take the lease when it is free, renew it when it is ours; 1 when we hold it.
_LEASE = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

Client = Redis | RedisCluster


@dataclass
class WorkerStats:
    """What a worker did."""

    entries: int = 0  # audit entries ingested (acknowledged)
    observations: int = 0  # observations it appended to the log
    followed: int = 0  # observations it read from the log into its analyzer
    bad: Counter[str] = field(default_factory=Counter)  # unusable records by kind
    event_records: int = 0  # records of reportable events (not decisions): skipped
    analyses: int = 0
    verdicts: Counter[str] = field(default_factory=Counter)  # written, by action
    network_verdicts: Counter[str] = field(default_factory=Counter)  # written, by action
    template_verdicts: Counter[str] = field(default_factory=Counter)  # written, by action
    stale: int = 0  # verdicts not written: expired before they were computed (a backlog)
    events: int = 0  # reportable events this worker reported
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """The figures as a JSON-ready dict (for logs)."""
        return {
            "entries": self.entries,
            "observations": self.observations,
            "followed": self.followed,
            "bad": dict(self.bad),
            "event_records": self.event_records,
            "analyses": self.analyses,
            "verdicts": dict(self.verdicts),
            "network_verdicts": dict(self.network_verdicts),
            "template_verdicts": dict(self.template_verdicts),
            "stale": self.stale,
            "events": self.events,
            "seconds": round(self.seconds, 3),
        }


class AnalysisWorker:
    """One worker of the off-path analysis (see the module docstring)."""

    def __init__(
        self,
        client: Client,
        sink: VerdictSink,
        settings: AnalysisSettings | None = None,
        *,
        stream: str = STREAM,
        group: str = GROUP,
        consumer: str | None = None,
        obs_stream: str = OBS_STREAM,
        lock_key: str = LOCK_KEY,
        batch: int = 1000,
        claim_idle: float = 60.0,
        claim_every: float = 10.0,
        lease: float = 30.0,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        events: Events | None = None,
    ) -> None:
        self.client = client
        self.events = events
        self.sink = sink
        self.settings = settings or AnalysisSettings()
        self.analyzer = Analyzer(self.settings)
        self.stream = stream
        self.group = group
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        self.obs_stream = obs_stream
        self.lock_key = lock_key
        self.batch = batch
        self.lease = lease
        self.stats = WorkerStats()
        self._wall = wall
        self._lease_script = client.register_script(_LEASE)
        self._reader = GroupReader(
            stream,
            group,
            self.consumer,
            batch=batch,
            claim_idle=claim_idle,
            claim_every=claim_every,
            monotonic=monotonic,
        )
        self._follow_cursor = "0-0"
        self._due: float | None = None  # record time of the next analysis

    # --- stage 1: ingest ----------------------------------------------------------

    async def ensure_group(self) -> None:
        """Create the group unless it exists, reading from one window ago (by entry id).

        Entry ids are the times the sinks appended the records, so older entries
        hold records the analysis would drop anyway.
        """
        start = max(0, int((self._wall() - self.settings.window) * 1000))
        try:
            await self.client.xgroup_create(self.stream, self.group, id=f"{start}-0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def claim(self) -> list[Entry]:
        """Take over entries other workers left pending for longer than `claim_idle`."""
        return await run_async(self._reader.claim(), self.client)

    async def read(self, block: float | None) -> list[Entry]:
        """Our own pending entries first (after a restart), then new ones."""
        return await run_async(self._reader.read(block), self.client)

    async def fetch(self, block: float | None = None) -> list[Entry]:
        """The next batch: claimed entries when a claim is due and finds some, else `read`."""
        return await run_async(self._reader.fetch(block), self.client)

    def observe_entries(
        self, entries: Sequence[Entry]
    ) -> list[tuple[str, Observation, Sighting | None]]:
        """The usable records of a batch as (entry id, observation, sighting if events are on).

        The others are counted: unusable ones by kind, event records on their own.
        """
        out: list[tuple[str, Observation, Sighting | None]] = []
        for raw_id, fields in entries:
            if not fields:
                self.stats.bad["deleted"] += 1  # trimmed from the stream while pending
                continue
            record = parse_fields(fields.get(_RECORD_KEY))
            if record is None:
                self.stats.bad["not_json"] += 1
                continue
            if is_event(record):
                self.stats.event_records += 1
                continue
            seen = sighting_of(record) if self.events is not None else None
            try:
                out.append((raw_id.decode(), parse_record(record), seen))
            except RecordError as exc:
                self.stats.bad[exc.kind] += 1
        return out

    async def ingest(self, entries: Sequence[Entry]) -> None:
        """Append a batch's observations to the log and acknowledge the batch, in one pipeline."""
        if not entries:
            return
        observed = self.observe_entries(entries)
        keep_after = int((self._wall() - self.settings.window - _LOG_MARGIN) * 1000)
        pipe = self.client.pipeline(transaction=False)
        for n, (source, obs, seen) in enumerate(observed):
            row = json.dumps(obs.to_compact(), separators=(",", ":"))
            entry: dict[FieldT, EncodableT] = {OBS_FIELD: row, SOURCE_FIELD: source}
            if seen is not None:
                entry[SIGHTING_FIELD] = json.dumps(seen.to_compact(), separators=(",", ":"))
            last = n == len(observed) - 1
            # Trimming once per batch is enough; MINID ~ lets Redis trim whole nodes.
            pipe.xadd(self.obs_stream, entry, minid=keep_after if last else None)
        pipe.xack(self.stream, self.group, *[raw_id for raw_id, _ in entries])
        await pipe.execute()
        self.stats.entries += len(entries)
        self.stats.observations += len(observed)

    # --- stage 2: follow and analyse -----------------------------------------------

    async def follow(self) -> bool:
        """Read the observation log into the analyzer; True when caught up with it."""
        reply = await self.client.xread({self.obs_stream: self._follow_cursor}, count=self.batch)
        rows: list[Entry] = list(cast(Any, reply)[0][1]) if reply else []
        for raw_id, fields in rows:
            self._follow_cursor = raw_id.decode()
            if not fields:
                continue
            try:
                obs = Observation.from_compact(json.loads(fields[_OBS_KEY]))
                seen = self._sighting(fields)
            except (KeyError, ValueError, RecordError):
                self.stats.bad["bad_observation"] += 1
                continue
            self.analyzer.add(obs, source=fields.get(_SOURCE_KEY, raw_id).decode())
            if self.events is not None:
                # A redelivered entry (a crash between append and ack) counts twice here:
                # an event's request count may run one high, never its incident.
                self.events.detector.note(obs, seen)
            self.stats.followed += 1
        return len(rows) < self.batch

    def _sighting(self, fields: dict[bytes, bytes]) -> Sighting:
        """The entry's Sighting (an empty one when it was appended with events off)."""
        raw = fields.get(_SIGHTING_KEY)
        return Sighting() if raw is None else Sighting.from_compact(json.loads(raw))

    async def lead(self) -> bool:
        """Take or renew the lease that makes this worker the one that writes verdicts."""
        held = await self._lease_script(
            keys=[self.lock_key], args=[self.consumer, int(self.lease * 1000)]
        )
        return bool(held)

    async def analyze(self, *, force: bool = False) -> list[Verdict] | None:
        """Analyse when `interval` seconds of record time have passed (or `force`); write if leader.

        Returns the verdicts of an analysis that ran, else None.
        """
        latest = self.analyzer.latest
        if latest is None:
            return None
        if self._due is None:
            self._due = latest + self.settings.interval
        if latest < self._due and not force:
            return None
        self._due = latest + self.settings.interval
        started = time.perf_counter()
        verdicts = self.analyzer.analyze(latest)
        self.stats.analyses += 1
        leader = await self.lead()
        # Verdicts last until record time + verdict_ttl. A worker catching up on a
        # backlog older than that would write keys that expire at once: skip them.
        wall = self._wall()
        fresh = [v for v in verdicts if v.until > wall]
        networks = [v for v in self.analyzer.network_verdicts if v.until > wall]
        templates = [v for v in self.analyzer.template_verdicts if v.until > wall]
        if leader and (fresh or networks or templates):
            await self.sink.put([*fresh, *networks, *templates])
            self.stats.verdicts.update(v.action for v in fresh)
            self.stats.network_verdicts.update(v.action for v in networks)
            self.stats.template_verdicts.update(v.action for v in templates)
        self.stats.stale += len(verdicts) - len(fresh)
        self.stats.stale += len(self.analyzer.network_verdicts) - len(networks)
        self.stats.stale += len(self.analyzer.template_verdicts) - len(templates)
        if self.events is not None:
            reported = await self.events.after_analysis(latest, self.analyzer.clusters, verdicts)
            self.stats.events += len(reported)
        self._log_analysis(verdicts, leader, time.perf_counter() - started)
        return verdicts

    def _log_analysis(self, verdicts: Sequence[Verdict], leader: bool, seconds: float) -> None:
        actions = Counter(v.action for v in verdicts)
        log.info(
            "analysis",
            extra={
                "record_time": self.analyzer.latest,
                "lag": round(self._wall() - (self.analyzer.latest or 0.0), 1),
                "accounts": self.analyzer.accounts,
                "clusters": len(self.analyzer.clusters),
                "verdicts": dict(actions),
                "network_verdicts": len(self.analyzer.network_verdicts),
                "template_verdicts": len(self.analyzer.template_verdicts),
                "written": leader,
                "shadow": self.settings.shadow,
                "seconds": round(seconds, 3),
                "bad_records": dict(self.stats.bad),
            },
        )
        for c in self.analyzer.clusters:
            if c.action != "none":
                log.info(
                    "cluster",
                    extra={
                        "cluster": c.cluster,
                        "action": c.action,
                        "score": c.score,
                        "accounts": c.accounts,
                        "identities": c.identities,
                        "reasons": list(c.reasons),
                        "shadow": self.settings.shadow,
                    },
                )

    # --- the loop -------------------------------------------------------------------

    async def step(self, block: float | None = None) -> int:
        """Ingest one batch, follow the log, analyse when due; returns the entries fetched."""
        entries = await self.fetch(block)
        await self.ingest(entries)
        caught_up = False
        while not caught_up:
            caught_up = await self.follow()
        await self.analyze()
        return len(entries)

    async def run(
        self, *, stop: asyncio.Event | None = None, drain: bool = False, block: float = 2.0
    ) -> WorkerStats:
        """Work until `stop` is set; with `drain`, until the stream is empty, then analyse once."""
        stop = stop or asyncio.Event()
        started = time.monotonic()
        retry = Retry()
        grouped = False
        while not stop.is_set():
            try:
                if not grouped:
                    await self.ensure_group()
                    grouped = True
                fetched = await self.step(None if drain else block)
                if drain and fetched == 0:
                    await self.analyze(force=True)
                    break
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                delay = retry.failed(drain=drain)
                if delay is None:
                    raise
                log.warning("analysis: redis unavailable (%s); retrying in %.1fs", exc, delay)
                self._reader.backlog = True  # what we read but did not acknowledge is still ours
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                continue
            retry.succeeded()
        self.stats.seconds = time.monotonic() - started
        return self.stats
