"""`distill-guard audit verify`: re-compute the hash chains of a file or stream.

Every record's hash is re-computed from its own text, and every link is
checked against the record before it in the same chain. The first problem is
reported with its place (line of a file, entry id of a stream) and exits 1:

    edited      a record's hash does not match its content
    deleted     a gap in the sequence
    inserted    a record that is not part of the chain (the chain goes on without it)
    reordered   two records swapped
    broken      any other broken link (a record replaced, hash and all)
    unreadable  a line or entry that is not a record

A chain may begin after sequence 1 (older records trimmed from the stream or
rotated out of the file) and may begin again at sequence 1 (a process that
could not read its sink's last record, such as stdout). The summary says so.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from authz.audit.chain import GENESIS, record_hash
from authz.audit.client import connect
from authz.audit.record import parse_fields
from authz.audit.stream import RECORD_FIELD, STREAM

_PAGE = 1000


@dataclass(frozen=True, slots=True)
class Entry:
    """One record as verify sees it: where it is, its chain fields, whether its hash holds."""

    where: str
    chain: str
    sequence: int
    prev_hash: str
    hash: str
    intact: bool


@dataclass(frozen=True, slots=True)
class Problem:
    """The first thing wrong with a chain: a kind (see the module docstring) and where."""

    kind: str
    message: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


@dataclass(slots=True)
class _Chain:
    first: Entry
    last: Entry
    before: Entry | None = None
    records: int = 1
    restarts: int = 0
    suspect: Entry | None = None  # a link that broke; judged when the chain's next record comes


def _links(a: Entry, b: Entry) -> bool:
    return b.sequence == a.sequence + 1 and b.prev_hash == a.hash


def read_entry(where: str, raw: str | bytes | None) -> Entry | Problem:
    """An entry from a record's text, or the problem that it is not one."""
    fields = parse_fields(raw)
    if fields is None:
        return Problem("unreadable", f"{where} is not an audit record (not a JSON object)")
    try:
        sequence = int(fields.get("sequence", 0))
    except (TypeError, ValueError):
        return Problem("unreadable", f"{where} has no valid sequence")
    claimed = str(fields.get("hash", ""))
    return Entry(
        where=where,
        chain=str(fields.get("chain", "")),
        sequence=sequence,
        prev_hash=str(fields.get("prev_hash", "")),
        hash=claimed,
        intact=claimed == record_hash(fields),
    )


@dataclass(slots=True)
class ChainChecker:
    """Checks entries in the order they were stored; stops at the first problem."""

    chains: dict[str, _Chain] = field(default_factory=dict)
    records: int = 0
    problem: Problem | None = None

    def check(self, entries: Iterable[Entry | Problem]) -> Problem | None:
        """Feed every entry, then judge what is still open; the first problem, or None."""
        for entry in entries:
            if self.feed(entry) is not None:
                return self.problem
        return self.finish()

    def feed(self, entry: Entry | Problem) -> Problem | None:
        """Take the next entry; a problem as soon as one is certain."""
        if self.problem is None:
            self.problem = self._feed(entry)
        return self.problem

    def finish(self) -> Problem | None:
        """Judge broken links that no later record could explain."""
        for chain in self.chains.values():
            if self.problem is None and chain.suspect is not None:
                self.problem = _judge(chain, chain.suspect, None)
        return self.problem

    def _feed(self, e: Entry | Problem) -> Problem | None:
        if isinstance(e, Problem):
            return e
        chain = self.chains.get(e.chain)
        if chain is not None and chain.suspect is not None:
            return _judge(chain, chain.suspect, e if e.intact else None)
        if not e.intact:
            return Problem(
                "edited",
                f"hash mismatch at sequence {e.sequence} ({e.where}): "
                "the record was changed after it was written",
            )
        if chain is None:
            if e.sequence < 1 or (e.sequence == 1 and e.prev_hash != GENESIS):
                return Problem(
                    "broken", f"{e.where} does not start a chain (sequence {e.sequence})"
                )
            self.chains[e.chain] = _Chain(first=e, last=e)
        elif _links(chain.last, e) or (e.sequence == 1 and e.prev_hash == GENESIS):
            chain.restarts += not _links(chain.last, e)
            chain.before, chain.last = chain.last, e
            chain.records += 1
        else:
            chain.suspect = e
            return None
        self.records += 1
        return None

    def summary(self) -> str:
        """The report of a clean check."""
        if not self.chains:
            return "ok: 0 records"
        if len(self.chains) == 1:
            (only,) = self.chains.values()
            head = f"ok: {self.records} records, chain intact, last hash {only.last.hash}"
        else:
            head = f"ok: {self.records} records in {len(self.chains)} chains, every chain intact"
        lines = [head]
        for name, chain in sorted(self.chains.items()):
            notes = [f"sequence {chain.first.sequence}-{chain.last.sequence}"]
            if chain.first.sequence > 1:
                notes.append("earlier records are not here (trimmed or rotated)")
            if chain.restarts:
                notes.append(f"restarted at sequence 1 {chain.restarts} time(s)")
            if len(self.chains) > 1:
                notes.append(f"last hash {chain.last.hash}")
            lines.append(f"  chain {name or '(unnamed)'}: {', '.join(notes)}")
        return "\n".join(lines)


def _judge(chain: _Chain, s: Entry, n: Entry | None) -> Problem:
    """Name a broken link: `s` does not follow `chain.last`; `n` is the chain's next record."""
    last, before = chain.last, chain.before
    at = f"sequence {last.sequence} ({last.where})"
    if n is not None:
        if _links(last, n) and _links(n, s):
            return Problem(
                "reordered",
                f"sequence {s.sequence} ({s.where}) and sequence {n.sequence} ({n.where}) "
                "are swapped",
            )
        if _links(last, n):
            return Problem(
                "inserted",
                f"the record at {s.where} (sequence {s.sequence}) is not part of the chain: "
                f"sequence {n.sequence} ({n.where}) follows {at}",
            )
        if before is not None and _links(before, s) and _links(s, n):
            return Problem(
                "inserted",
                f"the record at {last.where} (sequence {last.sequence}) is not part of the "
                f"chain: {s.where} takes its place and the chain continues from there",
            )
    if s.sequence == last.sequence and s.prev_hash == last.prev_hash:
        return Problem(
            "inserted",
            f"two records claim sequence {s.sequence}: {last.where} and {s.where}",
        )
    if s.sequence > last.sequence + 1:
        missing = s.sequence - last.sequence - 1
        return Problem(
            "deleted",
            f"sequence gap after {at}: the next record is sequence {s.sequence} ({s.where}); "
            f"{missing} record(s) missing",
        )
    if s.sequence <= last.sequence:
        return Problem("reordered", f"sequence {s.sequence} ({s.where}) comes after {at}")
    return Problem(
        "broken",
        f"sequence {s.sequence} ({s.where}) does not link to {at}: one of them was replaced",
    )


def file_entries(lines: Iterable[bytes]) -> Iterator[Entry | Problem]:
    """The entries of a JSON lines file (blank lines skipped), located by line number.

    An unfinished last line (no newline yet, not JSON) is being written: it is left out.
    """
    for number, line in enumerate(lines, start=1):
        if not line.endswith(b"\n") and parse_fields(line) is None:
            return
        if line.strip():
            yield read_entry(f"line {number}", line)


def stream_entries(client: Any, stream: str, page: int = _PAGE) -> Iterator[Entry | Problem]:
    """The entries of a Redis stream, oldest first, located by entry id."""
    for entry_id, values in stream_range(client, stream, page):
        yield read_entry(f"entry {entry_id}", values.get(RECORD_FIELD.encode()))


def stream_range(client: Any, stream: str, page: int = _PAGE) -> Iterator[tuple[str, Any]]:
    """Every (entry id, fields) of a stream, oldest first, a page at a time."""
    lower = "-"
    while True:
        entries = client.xrange(stream, min=lower, max="+", count=page)
        if not entries:
            return
        for entry_id, values in entries:
            yield entry_id.decode(), values
        lower = "(" + entries[-1][0].decode()


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """--file or --redis (and --stream): where the records are."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--file", metavar="PATH", help="a JSON lines audit file ('-' for stdin)")
    source.add_argument("--redis", metavar="URL", help="a Redis holding the audit stream")
    parser.add_argument("--stream", default=STREAM, help=f"the stream key [{STREAM}]")


def _verify(ns: argparse.Namespace) -> int:
    checker = ChainChecker()
    try:
        if ns.file is not None:
            if ns.file == "-":
                problem = checker.check(file_entries(sys.stdin.buffer))
            else:
                with open(Path(ns.file), "rb") as f:
                    problem = checker.check(file_entries(f))
        else:
            client = connect(ns.redis)
            try:
                if not client.exists(ns.stream):
                    print(f"error: no stream {ns.stream!r} in that Redis", file=sys.stderr)
                    return 2
                problem = checker.check(stream_entries(client, ns.stream))
            finally:
                client.close()
    except (OSError, redis.RedisError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if problem is not None:
        print(problem)
        print(f"({checker.records} records checked before it)")
        return 1
    print(checker.summary())
    return 0


def add_parsers(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `audit verify`."""
    verify = actions.add_parser(
        "verify",
        help="check the hash chains of an audit file or stream",
        description="Re-compute every record's hash and link; exit 0 when intact, 1 otherwise.",
    )
    add_source_arguments(verify)
    verify.set_defaults(func=_verify)
