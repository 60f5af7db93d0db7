"""`distill-guard audit usage`, `audit who` and `audit account`: the queries on the command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import redis

from authz.audit.client import Client, add_redis_argument, redis_client
from authz.audit.queries import account_timeline, usage, who
from authz.audit.render import (
    format_timeline,
    format_usage,
    format_who,
    timeline_json,
    usage_json,
    who_json,
)
from authz.audit.rollup_keys import DIMENSIONS
from authz.audit.window import Window, make_window
from authz.clock import SystemClock
from authz.protocols import Clock

R = TypeVar("R")


def _run(
    ns: argparse.Namespace,
    clock: Clock,
    read: Callable[[Client, Window], R],
    as_json: Callable[[R], dict[str, Any]],
    as_text: Callable[[R], str],
) -> int:
    """Read the query's answer over the window; print it as JSON (--json) or for people."""
    try:
        window = make_window(ns.since, ns.until, clock.now(), ns.granularity)
        client = redis_client(ns.redis)
    except ValueError as exc:
        print(f"distill-guard audit {ns.audit_command}: {exc}", file=sys.stderr)
        return 2
    try:
        with client:
            result = read(client, window)
    except redis.RedisError as exc:
        print(f"distill-guard audit {ns.audit_command}: Redis: {exc}", file=sys.stderr)
        return 1
    if ns.json:
        sys.stdout.write(json.dumps(as_json(result), indent=2) + "\n")
    else:
        sys.stdout.write(as_text(result) + "\n")
    return 0


def _usage_cmd(ns: argparse.Namespace, clock: Clock) -> int:
    return _run(ns, clock, lambda c, w: usage(c, w, ns.by, ns.top), usage_json, format_usage)


def _who_cmd(ns: argparse.Namespace, clock: Clock) -> int:
    return _run(ns, clock, lambda c, w: who(c, w, ns.country, ns.top), who_json, format_who)


def _account_cmd(ns: argparse.Namespace, clock: Clock) -> int:
    return _run(
        ns, clock, lambda c, w: account_timeline(c, w, ns.account), timeline_json, format_timeline
    )


def _common(p: argparse.ArgumentParser, since: str) -> None:
    add_redis_argument(p)
    p.add_argument(
        "--since",
        default=since,
        help=f"start: 90m, 24h, 7d… back from now, or an RFC 3339 time (default: {since})",
    )
    p.add_argument("--until", help="end, in the same forms (default: now)")
    p.add_argument(
        "--granularity",
        choices=("auto", "hour", "day"),
        default="auto",
        help="bucket size; auto: hours for windows up to 72h, days beyond",
    )
    p.add_argument("--json", action="store_true", help="print JSON for scripts")


def add_parsers(
    actions: argparse._SubParsersAction[argparse.ArgumentParser], clock: Clock | None = None
) -> None:
    """Add `audit usage`, `audit who` and `audit account`."""
    clock = clock or SystemClock()
    p = actions.add_parser(
        "usage", help="requests, denials and tokens per account/entity/country/ASN"
    )
    _common(p, "24h")
    p.add_argument(
        "--by", choices=DIMENSIONS, default="account", help="dimension (default: account)"
    )
    p.add_argument(
        "--top", type=int, default=20, help="rows shown, largest first; 0: all (default: 20)"
    )
    p.set_defaults(func=partial(_usage_cmd, clock=clock))

    p = actions.add_parser("who", help="accounts and entities that used the model from a country")
    _common(p, "7d")
    p.add_argument("--country", required=True, help="ISO 3166-1 alpha-2 code, e.g. IR")
    p.add_argument("--top", type=int, default=50, help="accounts shown; 0: all (default: 50)")
    p.set_defaults(func=partial(_who_cmd, clock=clock))

    p = actions.add_parser(
        "account", help="one account's timeline: volume, places, decisions, signals"
    )
    _common(p, "7d")
    p.add_argument("account", help="account id")
    p.set_defaults(func=partial(_account_cmd, clock=clock))
