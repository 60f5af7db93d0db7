"""`distill-guard replay`: decide recorded or simulated traffic offline (docs/replay.md)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from authz.errors import ConfigError
from authz.replay.run import AuditFile, EventsFile, Summary, replay
from authz.settings import Settings


def _settings(ns: argparse.Namespace) -> Settings:
    geoip, asn = ns.geoip, ns.asn
    if geoip == "demo":
        from authz.geobuild import demo_database

        # The demo database holds the networks too.
        geoip = demo_database()
        asn = asn or geoip
    return Settings(
        rules=Path(ns.rules),
        accounts=Path(ns.accounts) if ns.accounts else None,
        store=ns.store,
        key_pepper_file=Path(ns.key_pepper_file) if ns.key_pepper_file else None,
        geoip=Path(geoip) if geoip else None,
        asn=Path(asn) if asn else None,
        max_body_bytes=ns.max_body_bytes,
        audit_request_content=ns.audit_request_content,
        audit_request_content_bytes=ns.audit_request_content_bytes,
    )


class _Bar:
    """A one-line progress bar on a terminal: share of the file read, requests, rate."""

    def __init__(self, total: int, stream: IO[str]) -> None:
        self._total = total
        self._stream = stream
        self._start = time.monotonic()
        self._shown = 0.0

    def __call__(self, done: int, requests: int) -> None:
        now = time.monotonic()
        if now - self._shown < 0.2:
            return
        self._shown = now
        share = done / self._total if self._total else 0.0
        filled = int(share * 30)
        rate = requests / max(now - self._start, 1e-9)
        self._stream.write(
            f"\r[{'#' * filled}{'.' * (30 - filled)}] {share:6.1%}  {requests:,} requests  "
            f"{rate:,.0f}/s"
        )
        self._stream.flush()

    def finish(self) -> None:
        self._stream.write("\r" + " " * 78 + "\r")
        self._stream.flush()


@contextlib.contextmanager
def _open_out(path: str) -> Iterator[IO[str]]:
    if path == "-":
        yield sys.stdout
        return
    with open(path, "w", encoding="utf-8", newline="\n") as out:
        yield out


def render_summary(summary: Summary, seconds: float) -> str:
    """The end-of-run summary for people."""
    lines = [
        f"replayed {summary.requests:,} requests in {seconds:.1f}s "
        f"({summary.requests / max(seconds, 1e-9):,.0f}/s)"
    ]
    if summary.bad_lines:
        lines.append(f"skipped {summary.bad_lines:,} bad lines:")
        lines += [f"  line {b.line}: {b.problem}" for b in summary.bad_examples]
        if summary.bad_lines > len(summary.bad_examples):
            lines.append(f"  ... and {summary.bad_lines - len(summary.bad_examples):,} more")
    if summary.verdicts:
        lines.append(f"off-path analysis: {summary.verdicts:,} verdicts written")
    if summary.events is not None:
        lines.append(
            "reportable events: "
            + (", ".join(f"{kind} {n:,}" for kind, n in sorted(summary.events.items())) or "none")
        )
    if summary.time_went_back:
        lines.append(
            f"warning: time went back on {summary.time_went_back:,} lines "
            "(sort the traffic by ts for windows to mean what they say)"
        )
    lines.append(
        "by action:  " + ", ".join(f"{a} {n:,}" for a, n in sorted(summary.by_action.items()))
    )
    lines.append("by reason:")
    lines += [f"  {reason:<24} {n:>10,}" for reason, n in summary.by_reason.most_common()]
    lines.append("by tier:")
    for tier, n in sorted(summary.by_tier.items()):
        parts = ", ".join(
            f"{action} {summary.by_tier_action[tier, action]:,}"
            for action in sorted(summary.by_action)
            if summary.by_tier_action[tier, action]
        )
        lines.append(f"  {tier:<24} {n:>10,}  ({parts})")
    if summary.compared:
        lines.append(f"changed decisions: {summary.changed:,} of {summary.requests:,}")
        for (old, new), n in summary.transitions.most_common():
            examples = ", ".join(str(i) for i in summary.change_examples[old, new])
            lines.append(f"  {old} -> {new}: {n:,} (lines {examples})")
        if summary.changed_by_tier:
            lines.append(
                "  by tier: "
                + ", ".join(f"{t} {n:,}" for t, n in sorted(summary.changed_by_tier.items()))
            )
    return "\n".join(lines)


def _bench(ns: argparse.Namespace, settings: Settings) -> int:
    """Time a read-only pass (the baseline) and a replay of the same file, in CPU time."""
    import resource

    from authz.replay.run import read_only

    with open(ns.traffic, "rb") as traffic, open(os.devnull, "w") as sink:
        start = time.process_time()
        requests = read_only(traffic, sink, max_body_bytes=settings.max_body_bytes)
        base = time.process_time() - start
        traffic.seek(0)
        start = time.process_time()
        summary = asyncio.run(
            replay(
                settings,
                traffic,
                sink,
                allow_used_store=ns.reuse_store,
                analysis_lag=None if ns.no_analysis else ns.analysis_lag,
                analysis_interval=ns.analysis_interval,
            )
        )
        full = time.process_time() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {
        "requests": requests,
        "baseline_us_per_request": round(base / max(requests, 1) * 1e6, 1),
        "replay_us_per_request": round(full / max(summary.requests, 1) * 1e6, 1),
        "baseline_requests_per_cpu_second": round(requests / max(base, 1e-9)),
        "replay_requests_per_cpu_second": round(summary.requests / max(full, 1e-9)),
        "replay_vs_baseline_throughput": round(base / max(full, 1e-9), 3),
        "peak_rss_mib": round(rss, 1),
        "store": settings.store,
    }
    print(json.dumps(result, indent=2))
    return 0


@contextlib.contextmanager
def _audit_file(ns: argparse.Namespace) -> Iterator[AuditFile | None]:
    """The chained audit trail `--audit-out` asks for, or None."""
    if not ns.audit_out:
        yield None
        return
    with open(ns.audit_out, "w", encoding="utf-8", newline="\n") as out:
        yield AuditFile(out, chain=ns.audit_chain)


@contextlib.contextmanager
def _events_file(ns: argparse.Namespace) -> Iterator[EventsFile | None]:
    """The `--events-out` file, or None."""
    if not ns.events_out:
        yield None
        return
    with open(ns.events_out, "w", encoding="utf-8", newline="\n") as out:
        yield EventsFile(out)


def _run(ns: argparse.Namespace) -> int:
    if ns.bench:
        try:
            return _bench(ns, _settings(ns))
        except (ConfigError, OSError) as exc:
            print(f"distill-guard replay: {exc}", file=sys.stderr)
            return 2
    try:
        settings = _settings(ns)
        traffic: IO[bytes] = (
            sys.stdin.buffer if ns.traffic == "-" else open(ns.traffic, "rb")  # noqa: SIM115
        )
    except (ConfigError, OSError) as exc:
        print(f"distill-guard replay: {exc}", file=sys.stderr)
        return 2
    bar = None
    if not ns.quiet and sys.stderr.isatty() and traffic.seekable():
        bar = _Bar(os.fstat(traffic.fileno()).st_size, sys.stderr)
    started = time.monotonic()
    try:
        with (
            traffic,
            _open_out(ns.out) as out,
            _audit_file(ns) as audit,
            _events_file(ns) as events_out,
        ):
            summary = asyncio.run(
                replay(
                    settings,
                    traffic,
                    out,
                    compare_rules=Path(ns.compare) if ns.compare else None,
                    allow_used_store=ns.reuse_store,
                    progress=bar,
                    analysis_lag=None if ns.no_analysis else ns.analysis_lag,
                    analysis_interval=ns.analysis_interval,
                    audit=audit,
                    events_out=events_out,
                )
            )
    except (ConfigError, OSError) as exc:
        if bar is not None:
            bar.finish()
        print(f"distill-guard replay: {exc}", file=sys.stderr)
        return 2
    if bar is not None:
        bar.finish()
    seconds = time.monotonic() - started
    if ns.events_out and summary.events is None:
        print(
            f"distill-guard replay: warning: {ns.events_out} stays empty: events need an "
            "`events` section in the rules and the off-path analysis (docs/events.md)",
            file=sys.stderr,
        )
    if not ns.quiet:
        print(render_summary(summary, seconds), file=sys.stderr)
    if ns.summary:
        Path(ns.summary).write_text(json.dumps(summary.to_json(), indent=2) + "\n")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `replay`."""
    p = sub.add_parser(
        "replay",
        help="decide recorded or simulated traffic with the server's pipeline, offline",
        description="Run every request of a traffic file (JSON lines, docs/replay.md) through "
        "the server's own decision pipeline, with the clock read from each request's ts, and "
        "write one decision per request.",
    )
    p.add_argument("traffic", metavar="TRAFFIC.jsonl", help="traffic file ('-' for stdin)")
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("--out", help="decisions file to write ('-' for stdout)")
    out.add_argument(
        "--bench",
        action="store_true",
        help="measure instead: CPU time per request of a read-only pass (the baseline) and "
        "of the replay, as JSON",
    )
    p.add_argument("--rules", required=True, help="rules file to decide with")
    p.add_argument("--accounts", help="accounts file")
    p.add_argument(
        "--geoip", help="GeoIP country/city database, or 'demo' for the bundled demo database"
    )
    p.add_argument("--asn", help="GeoIP ASN database (when not in the --geoip file)")
    p.add_argument(
        "--store",
        default="memory://",
        help="counters and keys: memory:// (default, private to this run) or an EMPTY "
        "redis:// or redis+cluster:// database",
    )
    p.add_argument(
        "--reuse-store", action="store_true", help="replay into a Redis store that is not empty"
    )
    p.add_argument("--key-pepper-file", help="pepper file, as the server uses it")
    p.add_argument(
        "--max-body-bytes",
        type=int,
        default=1 << 20,
        help="Envoy's with_request_body.max_request_bytes (longer bodies arrive cut) "
        "[default: 1048576]",
    )
    p.add_argument(
        "--compare",
        metavar="OLD_RULES",
        help="also decide with these rules and report the requests whose decision changes",
    )
    p.add_argument(
        "--analysis-lag",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="traffic time from a decision to its record reaching the off-path analysis "
        "(the audit stream's delay) [default: 60]",
    )
    p.add_argument(
        "--analysis-interval",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="traffic time between two runs of the analysis [default: 60]",
    )
    p.add_argument(
        "--no-analysis",
        action="store_true",
        help="request-path detection only: do not run the off-path analysis",
    )
    p.add_argument(
        "--audit-out",
        metavar="FILE",
        help="also write the decisions as a chained audit trail (JSON lines, the server's "
        "records in traffic time), for `audit verify`, `case` and the worker",
    )
    p.add_argument(
        "--audit-chain",
        default="replay",
        help="chain name of the --audit-out records [default: replay]",
    )
    p.add_argument(
        "--audit-request-content",
        action="store_true",
        help="keep each request (minus credentials) in the --audit-out records, as "
        "`serve --audit-request-content` does",
    )
    p.add_argument(
        "--audit-request-content-bytes",
        type=int,
        default=65_536,
        metavar="N",
        help="body bytes a record keeps at most [default: 65536]",
    )
    p.add_argument(
        "--events-out",
        metavar="FILE",
        help="write the reportable events (the rules' `events` section; they need the "
        "off-path analysis) here, one JSON object per line; with --audit-out they are "
        "also records of the chain events-<--audit-chain> there",
    )
    p.add_argument("--summary", metavar="FILE", help="write the summary as JSON here too")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    p.set_defaults(func=_run)
