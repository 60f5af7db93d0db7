"""`distill-guard analyze`: the off-path analysis worker (authz.detect.worker).

    distill-guard analyze --stream redis://audit:6379/0 --store redis://rate:6379/0
    distill-guard analyze --bench 100000          # records/s per core, no Redis needed

The settings come from the rules file's `detection.analysis` section
(`--rules`), or from a YAML file holding AnalysisSettings alone (`--settings`),
else the defaults. They are read once, at start. When the rules file has an
`events` section, the worker also reports events (authz.events; where to:
authz.events.options), and `--metrics-listen` serves its metrics.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis

from authz import logs
from authz.audit.client import redis_url
from authz.audit.record import parse_fields
from authz.audit.stream import RECORD_FIELD, STREAM
from authz.detect.analyzer import Analyzer, Observation, RecordError, parse_record
from authz.detect.settings import AnalysisSettings, load_settings
from authz.detect.verdicts import MemoryVerdictSink, RedisVerdictSink, VerdictSink
from authz.detect.worker import GROUP, AnalysisWorker
from authz.errors import ConfigError
from authz.events import options as event_options
from authz.events.rules import EventRules
from authz.events.webhook import WebhookSettings
from authz.metering.connect import rate_client
from authz.settings import ENV_PREFIX

if TYPE_CHECKING:
    from authz.rules import Rules


def rules_from(ns: argparse.Namespace) -> Rules | None:
    """The rules file `--rules` names, loaded once (None without one); ConfigError if bad."""
    if ns.rules is None:
        return None
    from authz.rules import load_rules  # the rules loader pulls in the whole pipeline

    return load_rules(ns.rules)


def settings_from(ns: argparse.Namespace, rules: Rules | None) -> AnalysisSettings:
    """The analysis settings the flags name (see the module docstring); ConfigError if bad."""
    if ns.settings is not None:
        settings = load_settings(ns.settings)
    elif rules is not None:
        section = getattr(rules.detection, "analysis", None)
        settings = section if isinstance(section, AnalysisSettings) else AnalysisSettings()
    else:
        settings = AnalysisSettings()
    if ns.interval is not None:
        settings = settings.model_copy(update={"interval": ns.interval})
    return settings


def _run(ns: argparse.Namespace) -> int:
    logs.configure(ns.log_level)
    try:
        rules = rules_from(ns)
        settings = settings_from(ns, rules)
        events, version = (None, "") if rules is None else (rules.events, rules.version)
        webhook = event_options.webhook_settings(ns)
        if webhook is not None and events is None:
            raise ConfigError(
                "--events-webhook", "", "needs a rules file with an `events` section (--rules)"
            )
    except ConfigError as exc:
        print(f"distill-guard analyze: {exc}", file=sys.stderr)
        return 2
    try:
        stream_url = redis_url(ns.stream or ns.store, "--stream")
        store_url = redis_url(ns.store, "--store")
    except ValueError as exc:
        print(f"distill-guard analyze: {exc}", file=sys.stderr)
        return 2
    from authz import telemetry

    try:
        installed = telemetry.setup(metrics_listen=ns.metrics_listen)
    except ConfigError as exc:
        print(f"distill-guard analyze: {exc}", file=sys.stderr)
        return 2
    try:
        stats = asyncio.run(
            _work(ns, settings, stream_url, store_url, events=events, version=version, hook=webhook)
        )
    except (redis.RedisError, OSError) as exc:
        print(f"distill-guard analyze: {exc}", file=sys.stderr)
        return 1
    finally:
        installed.shutdown()
    print(json.dumps(stats), file=sys.stderr)
    return 0


async def _work(
    ns: argparse.Namespace,
    settings: AnalysisSettings,
    stream_url: str,
    store_url: str,
    *,
    events: EventRules | None = None,
    version: str = "",
    hook: WebhookSettings | None = None,
) -> dict[str, Any]:
    # Blocking reads wait up to --block seconds: the socket timeout must be longer.
    client = rate_client(stream_url, timeout=ns.block + 30.0, max_connections=4)
    store = client if store_url == stream_url else rate_client(store_url, timeout=10.0)
    reporting = None
    if events is not None:
        from authz.events.report import worker_events

        reporting = worker_events(
            events,
            settings,
            version=version,
            stream_client=client,
            stream=ns.audit_stream,
            gate_client=store,
            chain=ns.events_chain,
            webhook=hook,
        )
    try:
        worker = AnalysisWorker(
            client,
            RedisVerdictSink(store),
            settings,
            stream=ns.audit_stream,
            group=ns.group,
            consumer=ns.consumer,
            batch=ns.batch,
            claim_idle=ns.claim_idle,
            claim_every=max(1.0, ns.claim_idle / 2),
            events=reporting,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        stats = await worker.run(stop=stop, drain=ns.once, block=ns.block)
        return stats.as_dict()
    finally:
        if reporting is not None:
            await reporting.aclose()
        await client.aclose()
        if store is not client:
            await store.aclose()


def bench(n: int, settings: AnalysisSettings) -> dict[str, Any]:
    """Time each stage of the analysis on `n` synthetic records, on this core, without Redis."""
    from authz.detect.harness import synthetic_records

    lines = synthetic_records(n)
    bad: Counter[str] = Counter()
    started = time.perf_counter()
    rows: list[str] = []
    for line in lines:  # stage 1, ingest: the record's JSON to a compact observation
        record = parse_fields(line)
        if record is None:
            bad["not_json"] += 1
            continue
        try:
            rows.append(json.dumps(parse_record(record).to_compact(), separators=(",", ":")))
        except RecordError as exc:
            bad[exc.kind] += 1
    ingest = time.perf_counter() - started
    analyzer = Analyzer(settings)
    started = time.perf_counter()
    for i, row in enumerate(rows):  # stage 2, follow: the log entry into the analyzer
        analyzer.add(Observation.from_compact(json.loads(row)), source=str(i))
    follow = time.perf_counter() - started
    started = time.perf_counter()
    verdicts = analyzer.analyze(analyzer.latest or 0.0)
    analysis = time.perf_counter() - started
    return {
        "records": n,
        "bad": dict(bad),
        "ingest_records_per_s": round(n / ingest),
        "follow_records_per_s": round(len(rows) / follow),
        "analysis_seconds": round(analysis, 3),
        "accounts": analyzer.accounts,
        "clusters": len(analyzer.clusters),
        "verdicts": len(verdicts),
    }


async def bench_redis(url: str, n: int, settings: AnalysisSettings) -> dict[str, Any]:
    """One worker draining `n` synthetic records from a scratch stream on a real Redis."""
    from authz.detect.harness import synthetic_records

    client = rate_client(url, timeout=30.0, max_connections=4)
    tag = f"dg:bench:{os.getpid()}"
    stream, obs, lock = f"{tag}:audit", f"{tag}:obs", f"{tag}:lock"
    try:
        lines = synthetic_records(n)
        for start in range(0, n, 1000):
            pipe = client.pipeline(transaction=False)
            for line in lines[start : start + 1000]:
                pipe.xadd(stream, {RECORD_FIELD: line})
            await pipe.execute()
        sink: VerdictSink = MemoryVerdictSink()
        # One analysis, at the end: the records' day would otherwise be analysed every
        # minute of it within seconds, which measures analyses, not records.
        once = settings.model_copy(update={"interval": 1e12})
        worker = AnalysisWorker(
            client, sink, once, stream=stream, obs_stream=obs, lock_key=lock, group="bench"
        )
        stats = await worker.run(drain=True)
        return {
            "redis_records": n,
            "redis_records_per_s": round(n / stats.seconds),
            "redis_seconds": round(stats.seconds, 2),
        }
    finally:
        await client.delete(stream, obs, lock)
        await client.aclose()


def _bench(ns: argparse.Namespace) -> int:
    logs.configure(ns.log_level)
    try:
        settings = settings_from(ns, rules_from(ns))
        url = redis_url(ns.stream or ns.store, "--stream") if ns.stream or ns.store else None
    except (ConfigError, ValueError) as exc:
        print(f"distill-guard analyze: {exc}", file=sys.stderr)
        return 2
    out = bench(ns.bench, settings)
    if url is not None:
        out.update(asyncio.run(bench_redis(url, ns.bench, settings)))
    print(json.dumps(out))
    return 0


def _main(ns: argparse.Namespace) -> int:
    if ns.bench:
        if ns.log_level == "info":
            ns.log_level = "warning"  # one log line per analysis would drown the figures
        return _bench(ns)
    return _run(ns)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `analyze`."""
    p = sub.add_parser(
        "analyze",
        help="the off-path analysis worker: cluster accounts from the audit stream, write verdicts",
        description="Join the consumer group on the audit stream, link accounts into clusters, "
        "score them and write verdicts the request path reads (docs/detection.md, "
        "'Off-path analysis').",
    )
    p.add_argument(
        "--store",
        metavar="URL",
        help=f"Redis the request path reads verdicts from [default: ${ENV_PREFIX}STORE]",
    )
    p.add_argument(
        "--stream",
        metavar="URL",
        help="Redis holding the audit stream, the observation log and the lease [default: --store]",
    )
    p.add_argument("--audit-stream", default=STREAM, help=f"stream key [default: {STREAM}]")
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--rules", type=Path, metavar="FILE", help="rules file: its `detection.analysis` section"
    )
    where.add_argument(
        "--settings", type=Path, metavar="FILE", help="YAML file with AnalysisSettings alone"
    )
    p.add_argument("--group", default=GROUP, help=f"consumer group [default: {GROUP}]")
    p.add_argument("--consumer", help="consumer name [default: HOSTNAME-PID]")
    p.add_argument(
        "--interval",
        type=float,
        metavar="SECONDS",
        help="seconds of record time between analyses [default: the settings' interval, 60]",
    )
    p.add_argument(
        "--claim-idle",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="claim other workers' entries pending this long [default: 60]",
    )
    p.add_argument("--batch", type=int, default=1000, help="entries per read [default: 1000]")
    p.add_argument("--block", type=float, default=2.0, help="seconds one read waits [default: 2]")
    p.add_argument(
        "--once", action="store_true", help="drain the stream, analyse once, write, and exit"
    )
    p.add_argument(
        "--bench",
        type=int,
        metavar="N",
        help="time the stages on N synthetic records (with --stream/--store: also one worker "
        "on that Redis, in scratch keys) and exit",
    )
    p.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        help="serve Prometheus /metrics here (event and webhook counters) "
        "[env DISTILL_GUARD_METRICS_LISTEN]",
    )
    event_options.add_arguments(p)
    p.add_argument("--log-level", default="info", help="debug, info, warning, error")
    p.set_defaults(func=_main)
