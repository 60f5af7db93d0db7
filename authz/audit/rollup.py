"""`distill-guard audit rollup`: keep hourly and daily rollups of the `dg:audit` stream.

A consumer group on the stream (authz.audit.rollup_consumer) applies every
entry to the rollups exactly once (authz.audit.roller); `--file` backfills a
JSON-lines file instead (authz.audit.backfill). The layout of the rollups, which
the queries read (authz.audit.queries), is in authz.audit.rollup_keys.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

import redis

from authz.audit.backfill import backfill, read_lines
from authz.audit.client import Client, add_redis_argument, redis_client
from authz.audit.roller import Roller, RollupStats
from authz.audit.rollup_consumer import RollupConsumer
from authz.audit.rollup_keys import DAY_S, Retention


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
