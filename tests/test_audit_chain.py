"""Hash chains and `audit verify`: a clean chain passes; each kind of tampering is found and
located, in a JSON lines file and in a Redis stream."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from authz.audit.chain import GENESIS, ChainHead, record_hash, seal
from authz.audit.record import canonical, to_dict, to_json
from authz.audit.stream import STREAM
from authz.cli import main
from authz.gen.distill_guard.audit.v1.audit_pb2 import AuditRecord
from tests.audit_support import intact_file, intact_lines, sealed, xadd_lines


def chained(n: int, chain: str = "web-1", head: ChainHead | None = None) -> list[str]:
    """`n` chained records (canonical JSON lines) continuing after `head`."""
    records = (
        AuditRecord(schema=1, decision_id=f"{chain}-d{i}", account=f"acct{i}") for i in range(n)
    )
    return sealed(records, chain, head)


def forged(after: str) -> str:
    """A record made to follow `after`, with a hash that holds: what an insider would add."""
    prev = json.loads(after)
    fields = {
        **to_dict(AuditRecord(schema=1, decision_id="forged", account="mallory")),
        "chain": prev["chain"],
        "sequence": str(int(prev["sequence"]) + 1),
        "prev_hash": prev["hash"],
    }
    fields["hash"] = record_hash(fields)
    return canonical(fields)


@pytest.mark.parametrize("chain", ["web-1", ""])
def test_sealed_text_is_to_json_of_the_chained_record(chain: str) -> None:
    """The text a sink writes is exactly to_json of the proto with its chain fields set."""
    body = AuditRecord(schema=1, decision_id="d1", account="a", asn=7, request_bytes=3)
    first, head = seal(to_dict(body), None, chain)
    line, head = seal(to_dict(body), head, chain)
    record = AuditRecord()
    record.CopyFrom(body)
    record.chain, record.sequence = chain, 2
    record.prev_hash = json.loads(first)["hash"]
    record.hash = head.hash
    assert line == to_json(record)
    assert head == ChainHead(2, record_hash(json.loads(line)), "d1")
    assert len(head.hash) == 64


def test_hash_covers_prev_hash_and_the_record_without_hash() -> None:
    """hash = SHA-256(prev_hash + canonical JSON without `hash`), as docs/audit.md says."""
    import hashlib

    line = chained(1)[0]
    fields = json.loads(line)
    claimed = fields.pop("hash")
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    assert claimed == hashlib.sha256((GENESIS + text).encode()).hexdigest()


# --- tampering, in a file and in a stream ----------------------------------------------


def _edit(lines: list[str]) -> list[str]:
    fields = json.loads(lines[2])
    fields["account"] = "someone-else"
    return [*lines[:2], canonical(fields), *lines[3:]]


def _replace(lines: list[str]) -> list[str]:
    return [*lines[:2], forged(lines[1]), *lines[3:]]


def _delete(lines: list[str]) -> list[str]:
    return [*lines[:2], *lines[3:]]


def _insert_copy(lines: list[str]) -> list[str]:
    return [*lines[:4], lines[1], *lines[4:]]


def _insert_forged(lines: list[str]) -> list[str]:
    return [*lines[:2], forged(lines[1]), *lines[2:]]


def _reorder(lines: list[str]) -> list[str]:
    return [*lines[:2], lines[3], lines[2], *lines[4:]]


# Each case: how to tamper, and the report, with {0}, {1}... standing for the place of
# the tampered list's first, second... item (a line or a stream entry).
TAMPERING: dict[str, tuple[Callable[[list[str]], list[str]], str]] = {
    "edit": (
        _edit,
        "edited: hash mismatch at sequence 3 ({2}): the record was changed after it was written",
    ),
    "delete": (
        _delete,
        "deleted: sequence gap after sequence 2 ({1}): the next record is sequence 4 ({2}); "
        "1 record(s) missing",
    ),
    "insert a copy": (
        _insert_copy,
        "inserted: the record at {4} (sequence 2) is not part of the chain: "
        "sequence 5 ({5}) follows sequence 4 ({3})",
    ),
    "insert a forgery": (
        _insert_forged,
        "inserted: the record at {2} (sequence 3) is not part of the chain: "
        "{3} takes its place and the chain continues from there",
    ),
    "reorder": (_reorder, "reordered: sequence 4 ({2}) and sequence 3 ({3}) are swapped"),
    "replace": (
        _replace,
        "broken: sequence 4 ({3}) does not link to sequence 3 ({2}): one of them was replaced",
    ),
}


def _to_file(path: Path, lines: list[str]) -> tuple[list[str], list[str]]:
    path.write_text("".join(line + "\n" for line in lines))
    return ["--file", str(path)], [f"line {i}" for i in range(1, len(lines) + 1)]


def _to_stream(url: str, lines: list[str]) -> tuple[list[str], list[str]]:
    with redis.Redis.from_url(url) as client:
        client.delete(STREAM)
        ids = xadd_lines(client, lines)
    return ["--redis", url], [f"entry {i}" for i in ids]


@pytest.fixture(params=["file", pytest.param("redis", marks=pytest.mark.redis)])
def store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Callable[[list[str]], tuple[list[str], list[str]]]:
    """Write lines to a file or a Redis stream; the verify arguments and each line's place."""
    if request.param == "file":
        return lambda lines: _to_file(tmp_path / "audit.jsonl", lines)
    url: str = request.getfixturevalue("redis_url")
    return lambda lines: _to_stream(url, lines)


def test_clean_chain_verifies(
    store: Callable[[list[str]], tuple[list[str], list[str]]], capsys: pytest.CaptureFixture[str]
) -> None:
    """An untouched chain: exit 0, the count, and the last hash to keep elsewhere."""
    lines = chained(6)
    args, _ = store(lines)
    assert main(["audit", "verify", *args]) == 0
    last = json.loads(lines[-1])["hash"]
    assert capsys.readouterr().out == (
        f"ok: 6 records, chain intact, last hash {last}\n  chain web-1: sequence 1-6\n"
    )


@pytest.mark.parametrize("kind", list(TAMPERING))
def test_tampering_is_found_and_located(
    kind: str,
    store: Callable[[list[str]], tuple[list[str], list[str]]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each kind of tampering exits 1 with its name and the place of the first problem."""
    tamper, expected = TAMPERING[kind]
    args, places = store(tamper(chained(6)))
    assert main(["audit", "verify", *args]) == 1
    assert capsys.readouterr().out.splitlines()[0] == expected.format(*places)


# --- what a chain may legitimately look like -------------------------------------------


def test_several_writers_interleaved_in_one_sink() -> None:
    """Chains of several replicas, interleaved in one stream, are checked each on its own."""
    a, b = chained(3, "pod-a"), chained(2, "pod-b")
    checker = intact_lines([a[0], b[0], a[1], a[2], b[1]])
    assert checker.summary().splitlines() == [
        "ok: 5 records in 2 chains, every chain intact",
        f"  chain pod-a: sequence 1-3, last hash {json.loads(a[2])['hash']}",
        f"  chain pod-b: sequence 1-2, last hash {json.loads(b[1])['hash']}",
    ]


def test_chain_that_begins_after_trimming() -> None:
    """A stream trimmed by MAXLEN (or a rotated file) starts mid-chain; that is said, not failed."""
    checker = intact_lines(chained(5)[2:])
    assert checker.summary().splitlines()[1] == (
        "  chain web-1: sequence 3-5, earlier records are not here (trimmed or rotated)"
    )


def test_chain_restarted_by_a_new_process() -> None:
    """stdout starts a new chain per process: sequence 1 again, counted in the summary."""
    checker = intact_lines(chained(3) + chained(2))
    assert checker.records == 5
    assert "restarted at sequence 1 1 time(s)" in checker.summary()


def test_unreadable_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A line that is not a record is a problem at that line."""
    lines = chained(3)
    args, _ = _to_file(tmp_path / "a.jsonl", [lines[0], "not json", *lines[1:]])
    assert main(["audit", "verify", *args]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "unreadable: line 2 is not an audit record (not a JSON object)",
        "(1 records checked before it)",
    ]


def test_deleted_last_records_need_the_last_hash(tmp_path: Path) -> None:
    """Cutting records off the end leaves a valid chain: compare the last hash kept elsewhere."""
    lines = chained(5)
    checker = intact_lines(lines[:3])
    assert json.loads(lines[-1])["hash"] not in checker.summary()


def test_stdin_and_missing_sources(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--file -` reads stdin (rotated files: `cat audit.jsonl.1 audit.jsonl | ...`); a
    missing file exits 2 with the error."""
    lines = chained(4)
    rotated = "".join(line + "\n" for line in lines[:2])
    current = "".join(line + "\n" for line in lines[2:])
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO((rotated + current).encode())))
    assert main(["audit", "verify", "--file", "-"]) == 0
    assert capsys.readouterr().out.startswith("ok: 4 records, chain intact")
    assert main(["audit", "verify", "--file", str(tmp_path / "nope.jsonl")]) == 2
    assert "No such file" in capsys.readouterr().err


@pytest.mark.redis
def test_missing_stream(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Verifying a stream that does not exist is an error (exit 2), not an empty success."""
    assert main(["audit", "verify", "--redis", redis_url, "--stream", "dg:nothing"]) == 2
    assert capsys.readouterr().err == "error: no stream 'dg:nothing' in that Redis\n"


def test_a_last_line_still_being_written_is_left_out(tmp_path: Path) -> None:
    """Verifying a live file: an unfinished last line (no newline, not JSON yet) is not a
    problem; the same text as a finished line is."""
    lines = chained(3)
    path = tmp_path / "a.jsonl"
    path.write_text("".join(x + "\n" for x in lines) + lines[0][:40])
    assert intact_file(path).records == 3
