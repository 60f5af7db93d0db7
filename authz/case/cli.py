"""`distill-guard case`: a case file on a cluster, an account or an entity (docs/case.md)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import redis

from authz.audit.stream import STREAM
from authz.audit.window import QueryError, parse_time, rfc3339
from authz.case.build import build_case
from authz.case.indicators import export_lines
from authz.case.render import markdown, to_html, volume_png
from authz.case.sections import build
from authz.case.source import (
    CaseError,
    Source,
    StreamSource,
    make_period,
    make_subject,
    open_files,
    open_stream,
)
from authz.clock import SystemClock

PROG = "distill-guard case"
CHART = "volume.png"


def _now(text: str | None) -> float:
    wall = SystemClock().now()
    if text is None:
        return wall
    try:
        return parse_time(text, wall)
    except QueryError as exc:
        raise CaseError(f"--now: {exc}") from None


def _case(ns: argparse.Namespace, now: float) -> dict[str, Any]:
    subject = make_subject(ns.subject, ns.kind)
    period = make_period(ns.since, ns.until, now)
    source: Source = open_files(ns.file) if ns.file else open_stream(ns.redis, ns.stream)
    client = source.client if isinstance(source, StreamSource) else None
    try:
        return build_case(
            source,
            subject,
            period,
            unredacted=ns.unredacted,
            sharing=ns.sharing,
            generated=rfc3339(now),
            redis=client,
        )
    finally:
        if client is not None:
            client.close()


def _write(ns: argparse.Namespace, case: dict[str, Any]) -> list[str]:
    """Write what was asked; the paths written (stdout is not one)."""
    title, sections = build(case)
    png = None
    if ns.out is not None or ns.format == "html":  # matplotlib takes seconds to import
        drawn = volume_png(case["volume"])
        png = drawn if isinstance(drawn, bytes) else None
        if isinstance(drawn, str):
            print(f"{PROG}: no chart: {drawn}", file=sys.stderr)
    written = []
    indicators = ns.indicators
    if indicators and ns.out is None:  # before stdout: a bad path must not leave half an output
        _indicators(case, indicators)
        written.append(indicators)
    if ns.out is not None:
        out = Path(ns.out)
        out.mkdir(parents=True, exist_ok=True)
        files = {
            "case.json": json.dumps(case, indent=2, ensure_ascii=False) + "\n",
            "case.md": markdown(title, sections, CHART if png is not None else None),
            "case.html": to_html(title, sections, png),
        }
        for name, content in files.items():
            (out / name).write_text(content, encoding="utf-8")
            written.append(str(out / name))
        if png is not None:
            (out / CHART).write_bytes(png)
            written.append(str(out / CHART))
        indicators = indicators or str(out / "indicators.jsonl")
        _indicators(case, indicators)
        written.append(indicators)
    elif ns.format == "json":
        sys.stdout.write(json.dumps(case, indent=2, ensure_ascii=False) + "\n")
    elif ns.format == "html":
        sys.stdout.write(to_html(title, sections, png))
    else:
        sys.stdout.write(markdown(title, sections, None))
    return written


def _indicators(case: dict[str, Any], path: str) -> None:
    Path(path).write_text("\n".join(export_lines(case)) + "\n", encoding="utf-8")


def _run(ns: argparse.Namespace) -> int:
    try:
        case = _case(ns, _now(ns.now))
        written = _write(ns, case)
    except CaseError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"{PROG}: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except redis.RedisError as exc:
        print(f"{PROG}: Redis: {exc}", file=sys.stderr)
        return 2
    chain, totals = case["chain"], case["totals"]
    state = "chain intact" if chain["intact"] else f"CHAIN BROKEN ({chain['problem']['kind']})"
    print(
        f"{PROG}: {case['case_id']}: {totals['accounts']:,} accounts, "
        f"{totals['records']:,} requests; {state}"
        + (f"; wrote {', '.join(written)}" if written else ""),
        file=sys.stderr,
    )
    return 0 if chain["intact"] else 1


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `case`."""
    p = sub.add_parser(
        "case",
        help="a case file on a cluster, account or entity, from the audit trail",
        description="Assemble from the audit trail what an investigator needs about a cluster "
        "(c + 12 hex digits), an account or an entity: accounts, keys, networks, countries, "
        "volume, templates, detection, decisions, reportable events and the chain check. "
        "Markdown (default), HTML or JSON on stdout, or all of them with --out DIR. Exit 0, "
        "1 when the audit chain is broken (the case is written all the same), 2 on bad input.",
    )
    p.add_argument("subject", metavar="SUBJECT", help="cluster id, account id or (--entity) entity")
    kind = p.add_mutually_exclusive_group()
    for name in ("account", "entity", "cluster"):
        kind.add_argument(
            f"--{name}",
            dest="kind",
            action="store_const",
            const=name,
            help=f"SUBJECT is an {name} id" if name != "cluster" else "SUBJECT is a cluster id",
        )
    p.add_argument("--since", help="start: 36h, 7d… back from --now, or an RFC 3339 time")
    p.add_argument("--until", help="end (exclusive), in the same forms; default: no end")
    p.add_argument(
        "--now", help="the time relative --since/--until count back from, and `generated`"
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--file",
        action="append",
        metavar="AUDIT.jsonl",
        help="an audit file; repeat for rotated files, oldest first",
    )
    source.add_argument("--redis", metavar="URL", help="a Redis holding the audit stream")
    p.add_argument("--stream", default=STREAM, help=f"the stream key [{STREAM}]")
    output = p.add_mutually_exclusive_group()
    output.add_argument(
        "--out",
        metavar="DIR",
        help="write case.md, case.html, case.json, volume.png and indicators.jsonl into DIR",
    )
    output.add_argument(
        "--format", choices=("md", "html", "json"), default="md", help="stdout format [md]"
    )
    p.add_argument("--indicators", metavar="FILE", help="write the indicator export here")
    p.add_argument(
        "--unredacted",
        action="store_true",
        help="show raw prompt text in template examples (the file says so)",
    )
    p.add_argument(
        "--sharing",
        default="TLP:AMBER",
        help="sharing label written into the case and the indicators [TLP:AMBER]",
    )
    p.set_defaults(func=_run, kind=None)
