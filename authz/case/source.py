"""The subject of a case, its period, and the audit records of a file or stream.

A case reads its source more than once (docs/case.md, "Passes"), so a source
remembers where its first full pass ended and later passes stop there: records
appended meanwhile (a live JSONL sink, a stream being written) do not make one
pass see more than another.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote

import redis

from authz.audit.client import redis_client
from authz.audit.record import parse_fields
from authz.audit.stream import RECORD_FIELD
from authz.audit.verify import stream_range
from authz.audit.window import QueryError, epoch_of, parse_time
from authz.detect.keys import VERDICT_PREFIX, verdict_key
from authz.redistext import text

# The analyzer names a cluster `c` and 12 hex digits (authz.detect.analyzer).
CLUSTER_ID = re.compile(r"^c[0-9a-f]{12}$")
KINDS = ("account", "entity", "cluster")
_MAX_ID = 256
_SCAN_COUNT = 1000


class CaseError(Exception):
    """A case cannot be made as asked: the message says why (the command exits 2)."""


@dataclass(frozen=True, slots=True)
class Subject:
    """What the case is about: an account, an entity or a cluster, by id."""

    kind: str
    id: str


def make_subject(value: str, kind: str | None) -> Subject:
    """The subject named on the command line; a cluster id is recognised by its form."""
    ident = value.strip()
    if not ident or len(ident) > _MAX_ID or not ident.isprintable() or " " in ident:
        raise CaseError(f"not an account, entity or cluster id: {value!r}")
    if kind is None:
        kind = "cluster" if CLUSTER_ID.match(ident) else "account"
    if kind == "cluster" and not CLUSTER_ID.match(ident):
        raise CaseError(f"a cluster id is 'c' and 12 hex digits (e.g. c03df98098554): {value!r}")
    return Subject(kind, ident)


@dataclass(frozen=True, slots=True)
class Period:
    """The case's span, [since, until); either end may be open."""

    since: float | None
    until: float | None

    def holds(self, when: float) -> bool:
        """Whether a record of this time belongs to the period."""
        return (self.since is None or when >= self.since) and (
            self.until is None or when < self.until
        )


def make_period(since: str | None, until: str | None, now: float) -> Period:
    """The period of --since and --until (durations back from `now`, or RFC 3339 times)."""
    try:
        start = parse_time(since, now) if since else None
        end = parse_time(until, now) if until else None
    except QueryError as exc:
        raise CaseError(str(exc)) from None
    if start is not None and end is not None and end <= start:
        raise CaseError(f"--until ({until}) is not after --since ({since})")
    return Period(start, end)


def record_time(fields: dict[str, Any]) -> float | None:
    """Epoch seconds of a record's `time`, or None when it has none that parses."""
    value = fields.get("time")
    if not isinstance(value, str):
        return None
    try:
        return epoch_of(value)
    except ValueError:
        return None


class Source(Protocol):
    """Audit records in the order they were stored, each with where it is."""

    kind: str
    names: list[str]
    verify: str  # the `audit verify` command that checks the same records

    def records(self) -> Iterator[tuple[str, bytes | None]]:
        """(place, raw record) pairs; later passes stop where the first full one ended."""
        ...


class FileSource:
    """JSON lines files, read in the order given (rotated files oldest first)."""

    kind = "file"

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = list(paths)
        self.names = [str(p) for p in self.paths]
        quoted = " ".join(map(shlex.quote, self.names))
        self.verify = (
            f"distill-guard audit verify --file {quoted}"
            if len(self.names) == 1
            else f"cat {quoted} | distill-guard audit verify --file -"
        )
        self._lines: list[int] | None = None  # lines per file of the first full pass

    def records(self) -> Iterator[tuple[str, bytes | None]]:
        """Each non-empty line, placed as `line N` (with the file's name when there are several)."""
        seen: list[int] = []
        for index, path in enumerate(self.paths):
            bound = self._lines[index] if self._lines is not None else None
            prefix = f"{path} " if len(self.paths) > 1 else ""
            count = 0
            with open(path, "rb") as f:
                for number, line in enumerate(f, start=1):
                    if bound is not None and number > bound:
                        break
                    if not line.endswith(b"\n") and parse_fields(line) is None:
                        break  # a line still being written, as `audit verify` treats it
                    count = number
                    if line.strip():
                        yield f"{prefix}line {number}", line
            seen.append(count)
        self._lines = seen


def _entry_order(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class StreamSource:
    """A Redis stream (as the RedisStreamSink writes it), oldest entry first."""

    kind = "redis"

    def __init__(self, client: Any, stream: str, name: str) -> None:
        self.client = client
        self.stream = stream
        self.names = [f"{name} stream {stream}"]
        self.verify = f"distill-guard audit verify --redis {shlex.quote(name)} --stream {stream}"
        self._last: tuple[int, int] | None = None

    def records(self) -> Iterator[tuple[str, bytes | None]]:
        """Each entry's record field, placed as `entry ID`."""
        last = None
        for entry_id, values in stream_range(self.client, self.stream):
            order = _entry_order(entry_id)
            if self._last is not None and order > self._last:
                break
            last = order
            yield f"entry {entry_id}", values.get(RECORD_FIELD.encode())
        if self._last is None:
            self._last = last or (0, 0)


def open_files(paths: Sequence[str]) -> FileSource:
    """A source of readable JSON lines files; CaseError names one that is not."""
    found = []
    for name in paths:
        path = Path(name)
        if name == "-":
            raise CaseError("a case reads its source more than once: give a file, not stdin")
        if not path.is_file():
            raise CaseError(f"no audit file {name!r}")
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise CaseError(f"cannot read {name!r}: {exc.strerror or exc}") from None
        found.append(path)
    return FileSource(found)


def open_stream(url: str, stream: str) -> StreamSource:
    """A source on a Redis stream that exists; CaseError when Redis or the stream is not there."""
    try:
        client = redis_client(url)
        if not client.exists(stream):
            client.close()
            raise CaseError(f"no stream {stream!r} in that Redis")
    except ValueError as exc:
        raise CaseError(str(exc)) from None
    except redis.RedisError as exc:
        raise CaseError(f"Redis: {exc}") from None
    scheme, _, rest = url.partition("://")
    return StreamSource(client, stream, f"{scheme}://{rest.rpartition('@')[2]}")  # no password


def verdicts(client: Any, accounts: Sequence[str]) -> dict[str, dict[str, str]]:
    """The current verdict (hash fields) of each account that has one."""
    pipe = client.pipeline(transaction=False)
    for account in accounts:
        pipe.hgetall(verdict_key(account))
    found = {}
    for account, raw in zip(accounts, pipe.execute(), strict=True):
        if raw:
            found[account] = {text(k): text(v) for k, v in raw.items()}
    return found


def verdict_members(client: Any, cluster: str) -> list[str]:
    """Accounts whose current verdict names the cluster (a SCAN over the verdict keys)."""
    keys = [text(k) for k in client.scan_iter(match=VERDICT_PREFIX + "*", count=_SCAN_COUNT)]
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.hget(key, "cluster")
    members = []
    for key, named in zip(keys, pipe.execute(), strict=True):
        tag = key.removeprefix(VERDICT_PREFIX)
        if named is not None and text(named) == cluster and tag.startswith("{a:"):
            members.append(unquote(tag[3:-1]))
    return sorted(members)
