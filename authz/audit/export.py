"""`distill-guard audit export`: audit records with request content, as replay traffic.

Records written with --audit-request-content keep what the client sent (minus
credentials); this turns them into the traffic format of `distill-guard
replay` (authz/replay/traffic.py), oldest first, and writes an accounts file
for the accounts they name, so that a replay sees the same callers.

The original keys are never recorded, so each key id gets a stand-in key
derived from the id alone (`stand_in_key`); the traffic carries it in
`x-api-key` and the accounts file only its SHA-256 digest. A record without
an account (no key, a malformed or an unknown key) exports without a key and
replays as `key_missing`. The stand-ins are public knowledge to anyone who
knows a key id: the accounts file is for replays, never for a live server.

Every record is held in memory until the end, since records of several files
and chains interleave and the output is sorted by time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from google.protobuf import json_format

from authz.accounts import AccountEntry, KeyEntry
from authz.audit.record import parse_fields
from authz.audit.window import QueryError, parse_time, rfc3339
from authz.gen.distill_guard.audit.v1.audit_pb2 import AuditRecord, RequestContent
from authz.keys import KeyHasher, check_key_shape
from authz.replay.traffic import TrafficError, parse_line

STAND_IN_PREFIX = "dg_export_"
_STAND_IN_SALT = "distill-guard export:"
KEY_HEADER = "x-api-key"
# Problems kept with their place for the summary (all are counted).
KEEP_PROBLEMS = 20


def stand_in_key(key_id: str) -> str:
    """The replay key of a key id: the same id always gives the same key."""
    digest = hashlib.sha256((_STAND_IN_SALT + key_id).encode("utf-8")).hexdigest()
    key = STAND_IN_PREFIX + digest[:32]
    check_key_shape(key)  # 42 characters of [a-z0-9_]: always a valid key
    return key


@dataclass
class ExportSummary:
    """What an export read, wrote and left out."""

    records: int = 0
    exported: int = 0
    no_content: int = 0
    outside_window: int = 0
    duplicates: int = 0
    without_key: int = 0
    bodies_cut: int = 0
    bodies_not_utf8: int = 0
    unreplayable: int = 0
    bad_lines: int = 0
    problems: list[str] = field(default_factory=list)
    accounts: int = 0
    keys: int = 0
    first_ts: float | None = None
    last_ts: float | None = None

    def problem(self, where: str, text: str) -> None:
        """Note a skipped line or record (the first few are kept for the report)."""
        if len(self.problems) < KEEP_PROBLEMS:
            self.problems.append(f"{where}: {text}")

    def render(self, out: str, accounts_out: str) -> str:
        """The report for people (stderr)."""
        span = ""
        if self.first_ts is not None and self.last_ts is not None:
            span = f" ({rfc3339(self.first_ts)} .. {rfc3339(self.last_ts)})"
        lines = [
            f"exported {self.exported:,} of {self.records:,} records{span} to {out}; "
            f"{self.accounts:,} accounts with {self.keys:,} stand-in keys to {accounts_out}"
        ]
        notes = [
            (self.no_content, "record has", "records have", "no request content: "
             "enable --audit-request-content"),
            (self.outside_window, "record is", "records are", "outside --since/--until"),
            (self.duplicates, "record was", "records were", "read twice (same decision id): "
             "exported once"),
            (self.without_key, "request has", "requests have", "no known key (none, malformed "
             "or unknown): exported without a key, replays as key_missing"),
            (self.bodies_cut, "body was", "bodies were", "cut (audit cap or Envoy's buffer): "
             "replay sees less than Envoy did"),
            (self.bodies_not_utf8, "body is", "bodies are", "not UTF-8: the bytes are kept "
             "as \\udcXX escapes"),
            (self.unreplayable, "record cannot", "records cannot", "be replayed (skipped; see "
             "below)"),
            (self.bad_lines, "line is", "lines are", "not an audit record (skipped)"),
        ]  # fmt: skip
        lines += [f"  {n:,} {one if n == 1 else many} {text}" for n, one, many, text in notes if n]
        lines += [f"  {p}" for p in self.problems]
        if self.bad_lines + self.unreplayable > len(self.problems):
            lines.append("  …")
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class _Who:
    entity: str
    tier: str
    kyc: str
    country: str


@dataclass
class _Key:
    key_id: str
    account: str
    last_time: float
    last_reason: str
    expired_at: float | None = None


@dataclass
class _Exporter:
    since: float | None
    until: float | None
    key_header: str
    summary: ExportSummary = field(default_factory=ExportSummary)
    traffic: list[tuple[float, int, str]] = field(default_factory=list)
    accounts: dict[str, tuple[float, _Who]] = field(default_factory=dict)
    keys: dict[str, _Key] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)

    def add(self, where: str, raw: bytes) -> None:
        fields = parse_fields(raw)
        record = AuditRecord()
        try:
            if fields is None:
                raise ValueError("not a JSON object")
            json_format.ParseDict(fields, record, ignore_unknown_fields=True)
        except (json_format.ParseError, ValueError) as exc:
            self._bad(where, f"not an audit record ({str(exc).splitlines()[0][:120]})")
            return
        if record.HasField("event"):
            return  # a reportable event's record (authz.events): no request to replay
        if not record.decision_id or not record.HasField("time"):
            self._bad(where, "not an audit record (no decision_id or time)")
            return
        self.summary.records += 1
        ts = record.time.ToMicroseconds() / 1_000_000
        if (self.since is not None and ts < self.since) or (
            self.until is not None and ts >= self.until
        ):
            self.summary.outside_window += 1
            return
        if not record.HasField("content"):
            self.summary.no_content += 1
            return
        if record.decision_id in self.seen:
            self.summary.duplicates += 1
            return
        self.seen.add(record.decision_id)
        body, utf8 = _body_text(record.content)
        line = self._traffic_line(record, ts, body, utf8=utf8)
        try:
            parse_line(line, len(self.traffic) + 1)  # what replay will make of it
        except TrafficError as exc:
            self.summary.unreplayable += 1
            self.summary.problem(where, f"decision {record.decision_id} cannot be replayed: {exc}")
            return
        self.summary.bodies_cut += record.content.body_cut
        self.summary.bodies_not_utf8 += not utf8
        if record.account and record.key_id:
            self._note_caller(record, ts)
        else:
            self.summary.without_key += 1
        self.traffic.append((ts, len(self.traffic), line))

    def _bad(self, where: str, text: str) -> None:
        self.summary.bad_lines += 1
        self.summary.problem(where, text)

    def _traffic_line(self, record: AuditRecord, ts: float, body: str | None, *, utf8: bool) -> str:
        """The request as a traffic line: kept headers, the stand-in key, the body as text."""
        content = record.content
        headers: dict[str, str] = {}
        for h in content.headers:
            headers[h.name] = f"{headers[h.name]},{h.value}" if h.name in headers else h.value
        if record.account and record.key_id:
            key = stand_in_key(record.key_id)
            bearer = self.key_header == "authorization"
            headers[self.key_header] = f"Bearer {key}" if bearer else key
        obj: dict[str, Any] = {
            "ts": ts,
            "source_ip": content.source,
            "method": record.method,
            "path": content.raw_path,
            "headers": headers,
        }
        if body is not None:
            obj["body"] = body
        # A body that is not UTF-8 holds lone surrogates, which only JSON escapes can carry.
        return json.dumps(obj, ensure_ascii=not utf8, separators=(",", ":"))

    def _note_caller(self, record: AuditRecord, ts: float) -> None:
        """Remember the account and key as their latest record describes them."""
        known = self.accounts.get(record.account)
        if known is None or ts >= known[0]:
            who = _Who(record.entity, record.tier, record.kyc, record.kyc_country)
            self.accounts[record.account] = (ts, who)
        # In dry-run mode a revoked or expired key is allowed, and its reason is would_deny.
        reason = record.would_deny or record.reason
        key = self.keys.get(record.key_id)
        if key is None:
            key = self.keys[record.key_id] = _Key(record.key_id, record.account, ts, reason)
        elif ts >= key.last_time:
            key.account, key.last_time, key.last_reason = record.account, ts, reason
        if reason == "key_expired":
            key.expired_at = ts if key.expired_at is None else min(key.expired_at, ts)

    def sorted_traffic(self) -> list[tuple[float, str]]:
        """The traffic lines by time (records of one time keep the order they were read in)."""
        self.traffic.sort(key=lambda item: (item[0], item[1]))
        return [(ts, line) for ts, _, line in self.traffic]

    def account_entries(self) -> list[AccountEntry]:
        """One entry per account, as its latest record describes it, with stand-in key digests.

        A key whose latest record says `key_revoked` is revoked; one that was
        seen expired expires at its first such record, so earlier requests
        replay as they were decided.
        """
        hasher = KeyHasher(None)
        entries = []
        for name, (_, who) in sorted(self.accounts.items()):
            keys = [
                KeyEntry(
                    id=k.key_id,
                    sha256=hasher.digest(stand_in_key(k.key_id)),
                    revoked=k.last_reason == "key_revoked",
                    expires=_aware(k.expired_at),
                )
                for k in sorted(self.keys.values(), key=lambda k: k.key_id)
                if k.account == name
            ]
            try:
                entries.append(
                    AccountEntry.model_validate(
                        {
                            "account": name,
                            "entity": who.entity or name,
                            "tier": who.tier,
                            "kyc": who.kyc,
                            "country": who.country,
                            "keys": keys,
                        }
                    )
                )
            except ValueError as exc:  # pydantic's ValidationError is a ValueError
                self.summary.problem(
                    f"account {name}",
                    f"left out of the accounts file ({str(exc).splitlines()[0]}); "
                    "its requests replay as key_unknown",
                )
        self.summary.accounts = len(entries)
        self.summary.keys = sum(len(e.keys) for e in entries)
        return entries


def _body_text(content: RequestContent) -> tuple[str | None, bool]:
    """The body as the traffic format holds it, and whether it is UTF-8.

    Bytes that are not UTF-8 become lone surrogates (U+DC80..U+DCFF), the
    traffic format's `\\udcXX` escapes for raw bytes (docs/replay.md).
    """
    if not content.body and not content.body_size:
        return None, True
    text = content.body.decode("utf-8", errors="surrogateescape")
    return text, text.isascii() or _is_utf8(text)


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _aware(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


def export(
    sources: Iterable[tuple[str, IO[bytes]]],
    traffic_out: IO[str],
    accounts_out: IO[str],
    *,
    since: float | None = None,
    until: float | None = None,
    key_header: str = KEY_HEADER,
) -> ExportSummary:
    """Read audit JSON lines from each (name, stream); write traffic and accounts; the summary."""
    exporter = _Exporter(since, until, key_header)
    for name, stream in sources:
        for number, raw in enumerate(stream, start=1):
            if raw.strip():
                exporter.add(f"{name}:{number}", raw)
    traffic = exporter.sorted_traffic()
    for _, line in traffic:
        traffic_out.write(line + "\n")
    for entry in exporter.account_entries():
        accounts_out.write(entry.model_dump_json(exclude_none=True, exclude_defaults=True) + "\n")
    summary = exporter.summary
    summary.exported = len(traffic)
    if traffic:
        summary.first_ts, summary.last_ts = traffic[0][0], traffic[-1][0]
    return summary


def _opened(paths: list[str]) -> Iterator[tuple[str, IO[bytes]]]:
    for path in paths:
        if path == "-":
            yield "<stdin>", sys.stdin.buffer
            continue
        with open(Path(path), "rb") as stream:
            yield path, stream


def _export(ns: argparse.Namespace) -> int:
    try:
        now = time.time()
        since = parse_time(ns.since, now) if ns.since else None
        until = parse_time(ns.until, now) if ns.until else None
    except QueryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        with (
            open(ns.out, "w", encoding="utf-8", newline="\n") as traffic,
            open(ns.accounts_out, "w", encoding="utf-8", newline="\n") as accounts,
        ):
            summary = export(
                _opened(ns.files),
                traffic,
                accounts,
                since=since,
                until=until,
                key_header=ns.key_header,
            )
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary.render(ns.out, ns.accounts_out), file=sys.stderr)
    return 0


def add_parsers(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `audit export`."""
    p = actions.add_parser(
        "export",
        help="turn audit records with request content into replay traffic and accounts",
        description="Write the requests of audit JSON-lines files (recorded with "
        "--audit-request-content) in the traffic format of `distill-guard replay`, sorted by "
        "time, and an accounts file with stand-in keys for the accounts they name.",
    )
    p.add_argument("files", nargs="+", metavar="AUDIT.jsonl", help="audit files ('-' for stdin)")
    p.add_argument("--out", required=True, metavar="TRAFFIC.jsonl", help="traffic file to write")
    p.add_argument(
        "--accounts-out",
        required=True,
        metavar="ACCOUNTS.jsonl",
        help="accounts file to write (stand-in key digests; for replays only)",
    )
    p.add_argument("--since", help="first record time: RFC 3339, or 24h/7d back from now")
    p.add_argument("--until", help="records before this time: RFC 3339, or 24h/7d back from now")
    p.add_argument(
        "--key-header",
        default=KEY_HEADER,
        help=f"header the stand-in key goes in, one of the rules' key_headers [{KEY_HEADER}]",
    )
    p.set_defaults(func=_export)
