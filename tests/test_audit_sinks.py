"""`--audit` parsing, the stdout sink, and `audit tail` (table and JSON lines, file and stream)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import pytest
import redis

from authz.audit.chain import seal
from authz.audit.record import to_dict
from authz.audit.sinks import StdoutSink, open_sinks
from authz.audit.stream import STREAM
from authz.audit.tail import file_follow, header, row
from authz.cli import main
from authz.errors import ConfigError
from authz.gen.distill_guard.audit.v1.audit_pb2 import AuditRecord
from tests.audit_support import sealed, xadd_lines


def sinks(spec: str, store: str = "memory://") -> list[str]:
    """The names of the sinks a spec opens."""
    return [s.name for s in open_sinks(spec, store=store, stream=STREAM, maxlen=10)]


def test_audit_setting_names_several_sinks(tmp_path: Path) -> None:
    """A comma-separated list; `redis` is the --store Redis, a URL another one (no password
    in its name); `none` turns the trail off."""
    spec = f"stdout, jsonl:{tmp_path}/a.jsonl,redis,redis://:secret@cache:6380/2"
    assert sinks(spec, store="redis://store:6379/0") == [
        "stdout",
        f"jsonl:{tmp_path}/a.jsonl",
        "redis",
        "redis://cache:6380/2",
    ]
    assert sinks("none") == []


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ("redis", "--audit: 'redis' writes to the --store Redis, but --store is 'memory://'"),
        (
            "syslog",
            "--audit: unknown audit sink 'syslog' (stdout, jsonl:PATH, redis, "
            "redis://HOST:PORT/DB, none)",
        ),
        ("stdout,stdout", "--audit: give each sink once, or 'none' (got 'stdout,stdout')"),
        ("", "--audit: give each sink once, or 'none' (got '')"),
        (
            "jsonl:/no/such/dir/a.jsonl",
            "--audit: no directory '/no/such/dir' for 'jsonl:/no/such/dir/a.jsonl'",
        ),
    ],
)
def test_bad_audit_settings(spec: str, error: str) -> None:
    """A bad --audit is a ConfigError naming the flag and the problem, at start-up."""
    with pytest.raises(ConfigError) as exc:
        sinks(spec)
    assert str(exc.value) == error


def test_stdout_sink_writes_json_lines(capfd: pytest.CaptureFixture[str]) -> None:
    """stdout gets one canonical JSON object per line, and never continues an old chain."""
    line, _ = seal(to_dict(AuditRecord(decision_id="d1")), None, "c")

    async def run() -> None:
        sink = StdoutSink()
        assert await sink.head("c") is None
        await sink.write([line, line])

    asyncio.run(run())
    assert capfd.readouterr().out == f"{line}\n{line}\n"  # file descriptor 1 itself


def _records(n: int) -> list[str]:
    return sealed((_record(i) for i in range(n)), "c")


def _record(i: int) -> AuditRecord:
    record = AuditRecord(
        decision_id=f"d{i}",
        action="deny" if i % 2 else "allow",
        status=429 if i % 2 else 200,
        reason="rate_limited" if i % 2 else "ok",
        account="bob-dev",
        tier="pro",
        key_id="k_bob_1",
        country="DE",
        client_ip="79.192.3.4",
        model="small-1",
        path="/v1/messages",
    )
    record.time.FromSeconds(1_790_000_000 + i)
    return record


def test_tail_table_of_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The last N records as a table, oldest first."""
    path = tmp_path / "a.jsonl"
    path.write_text("".join(x + "\n" for x in _records(5)))
    assert main(["audit", "tail", "--file", str(path), "-n", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == header()
    assert out[1:] == [
        "2026-09-21 14:13:23 deny   429    rate_limited           bob-dev        pro        "
        "k_bob_1        DE 79.192.3.4      small-1        /v1/messages",
        "2026-09-21 14:13:24 allow  200    ok                     bob-dev        pro        "
        "k_bob_1        DE 79.192.3.4      small-1        /v1/messages",
    ]


def test_dry_run_rows_show_the_would_be_reason() -> None:
    """A dry-run allow shows why it would have been denied."""
    fields = {"action": "allow", "status": 200, "reason": "ok", "would_deny": "key_revoked"}
    assert "(would) key_revoked" in row(fields)


@pytest.mark.redis
def test_tail_json_of_a_stream(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """--json prints the records as stored (canonical JSON lines)."""
    lines = _records(4)
    with redis.Redis.from_url(redis_url) as client:
        xadd_lines(client, lines)
    assert main(["audit", "tail", "--redis", redis_url, "-n", "3", "--json"]) == 0
    assert capsys.readouterr().out.splitlines() == lines[1:]


def test_follow_a_file(tmp_path: Path) -> None:
    """--follow yields lines appended after it started, including one written in pieces."""
    path = tmp_path / "a.jsonl"
    path.write_text("old\n")
    got: list[bytes] = []

    def follow() -> None:
        for line in file_follow(path, poll=0.01):
            got.append(line)
            if len(got) == 2:
                return

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    time.sleep(0.05)
    with open(path, "ab") as f:
        f.write(b'{"a":1}\n{"b"')
        f.flush()
        time.sleep(0.05)
        f.write(b":2}\n")
    reader.join(5)
    assert [json.loads(x) for x in got] == [{"a": 1}, {"b": 2}]


def test_audit_sizes_must_be_positive() -> None:
    """A queue or backlog of 0 would drop every record: refused at start-up."""
    from authz.app import open_audit
    from tests.serverthread import demo_settings

    with pytest.raises(ConfigError) as exc:
        open_audit(demo_settings(audit_queue=0))
    assert str(exc.value) == "--audit-queue: must be at least 1 (got 0)"
