"""`distill-guard audit tail`: the latest records of a file or stream, as a table or JSON lines."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import redis

from authz.audit.client import connect
from authz.audit.record import parse_fields
from authz.audit.sinks import reverse_lines
from authz.audit.stream import RECORD_FIELD
from authz.audit.verify import add_source_arguments

_POLL = 0.5
_COLUMNS = (
    ("TIME (UTC)", 19),
    ("ACTION", 6),
    ("STATUS", 6),
    ("REASON", 22),
    ("ACCOUNT", 14),
    ("TIER", 10),
    ("KEY", 14),
    ("CC", 2),
    ("CLIENT", 15),
    ("MODEL", 14),
    ("PATH", 0),
)


def row(fields: dict[str, Any]) -> str:
    """One record as a table row; a dry-run allow shows the reason it would have been denied.

    A reportable event's record shows `event`, its severity, kind and incident.
    """
    would = fields.get("would_deny", "")
    event = fields.get("event")
    if isinstance(event, dict):
        values: tuple[Any, ...] = (
            str(fields.get("time", ""))[:19].replace("T", " "),
            "event",
            str(event.get("severity", ""))[:6],
            event.get("kind", ""),
            f"{event.get('account_count', 0)} accts",
            *["-"] * 5,  # account, tier, key, country, client: none for an event
            event.get("incident", ""),
        )
    else:
        values = (
            str(fields.get("time", ""))[:19].replace("T", " "),
            fields.get("action", ""),
            fields.get("status", ""),
            f"(would) {would}" if would else fields.get("reason", ""),
            fields.get("account", "-"),
            fields.get("tier", "-"),
            fields.get("key_id", "-"),
            fields.get("country", "-"),
            fields.get("client_ip", "-"),
            fields.get("model", "-"),
            fields.get("path", ""),
        )
    return " ".join(
        f"{value!s:{width}}" if width else str(value)
        for value, (_, width) in zip(values, _COLUMNS, strict=True)
    ).rstrip()


def header() -> str:
    """The table's column names."""
    return " ".join(f"{name:{width}}" if width else name for name, width in _COLUMNS)


def file_recent(path: Path, n: int) -> list[bytes]:
    """The last `n` lines of a file, oldest first."""
    return list(reversed(list(islice(reverse_lines(path), n))))


def file_follow(path: Path, poll: float = _POLL) -> Iterator[bytes]:
    """Lines appended to a file from now on (starting over when it is truncated)."""
    offset = path.stat().st_size
    rest = b""
    while True:
        size = path.stat().st_size
        if size < offset:
            offset, rest = 0, b""
        if size > offset:
            with open(path, "rb") as f:
                f.seek(offset)
                data = rest + f.read(size - offset)
            offset = size
            *lines, rest = data.split(b"\n")
            yield from (line for line in lines if line.strip())
        else:
            time.sleep(poll)


def stream_recent(client: Any, stream: str, n: int) -> tuple[list[bytes], str]:
    """The last `n` records of a stream, oldest first, and the id to follow from."""
    entries = client.xrevrange(stream, max="+", min="-", count=n)
    last = entries[0][0].decode() if entries else "0-0"
    return [values.get(RECORD_FIELD.encode(), b"") for _, values in reversed(entries)], last


def stream_follow(client: Any, stream: str, after: str) -> Iterator[bytes]:
    """Records added to a stream after entry `after`, as they come."""
    while True:
        reply = client.xread({stream: after}, count=500, block=int(_POLL * 2000))
        for _, entries in reply or ():
            for entry_id, values in entries:
                after = entry_id.decode()
                yield values.get(RECORD_FIELD.encode(), b"")


def _tail(ns: argparse.Namespace) -> int:
    client = connect(ns.redis) if ns.redis is not None else None
    try:
        if client is None:
            path = Path(ns.file)
            recent = file_recent(path, ns.lines)
            follow = file_follow(path) if ns.follow else iter(())
        else:
            recent, last = stream_recent(client, ns.stream, ns.lines)
            follow = stream_follow(client, ns.stream, last) if ns.follow else iter(())
        if not ns.json:
            print(header())
        for raw in recent:
            _show(raw, as_json=ns.json)
        for raw in follow:
            _show(raw, as_json=ns.json)
    except KeyboardInterrupt:
        return 0
    except (OSError, redis.RedisError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if client is not None:
            client.close()
    return 0


def _show(raw: bytes, *, as_json: bool) -> None:
    if as_json:
        print(raw.decode(errors="replace").strip(), flush=True)
        return
    fields = parse_fields(raw)
    print(row(fields) if fields is not None else "(not an audit record)", flush=True)


def add_parsers(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `audit tail`."""
    tail = actions.add_parser("tail", help="show the latest audit records")
    add_source_arguments(tail)
    tail.add_argument("-n", "--lines", type=int, default=20, help="records to show [20]")
    tail.add_argument("-f", "--follow", action="store_true", help="keep showing new records")
    tail.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    tail.set_defaults(func=_tail)
