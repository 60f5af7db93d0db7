"""`distill-guard audit bench`: generate, roll up and query records on a throwaway redis-server.

It loads synthetic records (authz.audit.gen_audit) into the stream, runs
`audit rollup --drain` consumers as child processes, and times each query.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import redis

from authz.audit.gen_audit import Generator, hours_back, xadd_lines
from authz.audit.rollup_keys import DIMENSIONS, STATS_KEY
from authz.audit.stream import STREAM
from authz.clock import SystemClock
from authz.procs import Child, free_port, stop_all, wait_until


@dataclass(frozen=True, slots=True)
class QueryTime:
    """How long one query took (best and median of its runs)."""

    query: str
    buckets: int
    rows: int
    best_ms: float
    median_ms: float


def _timed(runs: int, call: Callable[[], int]) -> tuple[int, float, float]:
    times, rows = [], 0
    for _ in range(runs):
        started = time.perf_counter()
        rows = call()
        times.append((time.perf_counter() - started) * 1000)
    return rows, min(times), statistics.median(times)


def bench_queries(client: redis.Redis, now: float, runs: int = 3) -> list[QueryTime]:
    """Time usage (each dimension, 24h, 72h and 7d), who --country and account queries."""
    from authz.audit import queries as q
    from authz.audit.window import Window, make_window

    out: list[QueryTime] = []

    def run(name: str, window: Window, call: Callable[[], int]) -> None:
        rows, best, median = _timed(runs, call)
        out.append(QueryTime(name, len(window.buckets), rows, best, median))

    for since in ("24h", "72h", "7d"):
        w = make_window(since, None, now)
        for dim in DIMENSIONS:
            run(
                f"usage --since {since} --by {dim}",
                w,
                lambda w=w, dim=dim: len(q.usage(client, w, dim, 20).rows),  # type: ignore[misc]
            )
    week = make_window("7d", None, now)
    top_country = q.usage(client, week, "country", 1).rows[0].key
    for cc in (top_country, "IR"):
        run(
            f"who --country {cc} --since 7d",
            week,
            lambda cc=cc: q.who(client, week, cc, 0).total_accounts,  # type: ignore[misc]
        )
    busiest = q.usage(client, week, "account", 1).rows[0].key
    for since in ("24h", "7d"):
        w = make_window(since, None, now)
        run(
            f"account {busiest} --since {since}",
            w,
            lambda w=w: len(q.account_timeline(client, w, busiest).buckets),  # type: ignore[misc]
        )
    return out


def _start_redis(tmp: Path) -> tuple[Child, str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not on PATH")
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
    argv += ["no", "--dir", str(tmp)]
    server = Child.spawn("redis-server", argv, tmp)
    url = f"redis://127.0.0.1:{port}/0"

    def ping() -> bool:
        try:
            with redis.Redis.from_url(url, socket_timeout=0.5) as c:
                return bool(c.ping())
        except redis.ConnectionError:
            return False

    wait_until(server, "PING", ping)
    return server, url


def _bench(ns: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="dg-audit-bench-") as name:
        tmp = Path(name)
        try:
            server, url = _start_redis(tmp)
        except RuntimeError as exc:
            print(f"distill-guard audit bench: {exc}", file=sys.stderr)
            return 2
        children = [server]
        try:
            report = _bench_run(ns, url, tmp, children)
        finally:
            stop_all(children)
    if ns.json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        sys.stdout.write(_format_bench(report) + "\n")
    return 0


def _bench_run(
    ns: argparse.Namespace, url: str, tmp: Path, children: list[Child]
) -> dict[str, Any]:
    now = SystemClock().now()
    start = hours_back(now, ns.days) + 3600
    gen = Generator(ns.records, seed=ns.seed, start=start, days=ns.days)
    client = redis.Redis.from_url(url, socket_timeout=300)
    lines = gen.lines()
    gen_s = load_s = 0.0
    while True:
        t0 = time.perf_counter()
        chunk = list(itertools.islice(lines, 20_000))
        t1 = time.perf_counter()
        if not chunk:
            break
        xadd_lines(client, iter(chunk))
        gen_s, load_s = gen_s + t1 - t0, load_s + time.perf_counter() - t1
        print(f"\rloaded {client.xlen(STREAM):,} records", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    stream_mb = int(client.info("memory")["used_memory"]) / 1e6
    argv = [sys.executable, "-m", "authz", "audit", "rollup", "--redis", url, "--drain"]
    argv += ["--batch", str(ns.batch)]
    started = time.perf_counter()
    consumers = [
        Child.spawn(f"rollup-{i}", [*argv, "--consumer", f"bench-{i}"], tmp)
        for i in range(ns.consumers)
    ]
    children += consumers
    for child in consumers:
        if child.proc.wait() != 0:
            raise RuntimeError(f"{child.name} failed:\n{child.tail()}")
    rollup_s = time.perf_counter() - started
    summaries = [child.tail(1) for child in consumers]
    raw_stats: dict[bytes, bytes] = client.hgetall(STATS_KEY)  # type: ignore[assignment]
    stats = {k.decode(): int(v) for k, v in raw_stats.items()}
    pending = client.xpending(STREAM, "rollup")["pending"]
    client.delete(STREAM)
    info = client.info("memory")
    queries = bench_queries(client, SystemClock().now(), ns.runs)
    client.close()
    return {
        "records": ns.records,
        "days": ns.days,
        "generate_per_s": ns.records / gen_s if gen_s else 0.0,
        "xadd_per_s": ns.records / load_s if load_s else 0.0,
        "stream_mb": stream_mb,
        "consumers": ns.consumers,
        "batch": ns.batch,
        "rollup_s": rollup_s,
        "rollup_per_s": ns.records / rollup_s,
        "rolled_up": stats.get("applied", 0),
        "per_consumer": {k[8:]: v for k, v in stats.items() if k.startswith("applied:")},
        "pending_after": pending,
        "consumer_logs": summaries,
        "rollup_keys": client_dbsize(url),
        "rollup_mb": int(info["used_memory"]) / 1e6,
        "queries": [asdict(q) for q in queries],
    }


def client_dbsize(url: str) -> int:
    """How many keys the database holds."""
    with redis.Redis.from_url(url) as c:
        return int(c.dbsize())


def _format_bench(r: dict[str, Any]) -> str:
    from authz.audit.render import table

    lines = [
        f"records          {r['records']:,} over {r['days']:g} days",
        f"generate         {r['generate_per_s']:,.0f} records/s",
        f"XADD (pipelined) {r['xadd_per_s']:,.0f} records/s ({r['stream_mb']:,.0f} MB stream)",
        f"rollup           {r['rollup_s']:.1f}s with {r['consumers']} consumer(s), batch "
        f"{r['batch']}: {r['rollup_per_s']:,.0f} records/s",
        f"                 applied {r['rolled_up']:,}; per consumer {r['per_consumer']}; "
        f"pending after: {r['pending_after']}",
        *(f"                 {line}" for line in r["consumer_logs"]),
        f"rollups          {r['rollup_keys']:,} keys, {r['rollup_mb']:,.1f} MB (stream deleted)",
        "",
    ]
    rows = [
        [q["query"], q["buckets"], q["rows"], f"{q['best_ms']:.1f}", f"{q['median_ms']:.1f}"]
        for q in r["queries"]
    ]
    lines.append(table(["QUERY", "BUCKETS", "ROWS", "BEST MS", "MEDIAN MS"], rows))
    return "\n".join(lines)


def add_parsers(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `audit bench`."""
    p = actions.add_parser(
        "bench",
        help="benchmark: generate, roll up and query records on a throwaway redis-server",
    )
    p.add_argument("--records", type=int, default=1_000_000, metavar="N")
    p.add_argument("--days", type=float, default=7.0, help="span of the records (default: 7)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--consumers", type=int, default=1, help="rollup consumers (default: 1)")
    p.add_argument("--batch", type=int, default=2000, help="entries per batch (default: 2000)")
    p.add_argument("--runs", type=int, default=3, help="runs of each query (default: 3)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(func=_bench)
