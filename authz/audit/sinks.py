"""Where audit records go: stdout, a JSON lines file, a Redis stream; several at once.

`--audit` lists them, comma-separated:

    stdout                     one canonical JSON object per line on stdout
    jsonl:/path/audit.jsonl    the same, appended to a file (flushed per batch)
    redis                      XADD to the stream on the --store Redis
    redis://host:port/db       ... or on another Redis (rediss://, unix://,
                               redis+cluster:// too)
    none                       no audit trail at all

A sink writes text its worker has already chained; it also finds, in what it
holds, the last record of a chain, so a restarted process continues its chain
(`head`). File and stdout writes run in a thread: a slow disk or a full pipe
never stalls the event loop that answers Envoy.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlparse

from redis.asyncio import Redis, RedisCluster

from authz.audit.chain import ChainHead
from authz.audit.client import REDIS_SCHEMES
from authz.audit.record import parse_fields
from authz.audit.stream import RECORD_FIELD, STREAM
from authz.errors import ConfigError
from authz.metering import rate_client
from authz.protocols import AuditSink
from authz.redistext import text

# How far back `head` looks for this chain's last record among other writers' records.
HEAD_SEARCH = 100_000
_REDIS_TIMEOUT = 2.0


class StdoutSink:
    """JSON lines on the process's stdout; a new chain starts with each process.

    It writes to file descriptor 1 itself, unbuffered: what a container runtime
    collects, whatever became of `sys.stdout` inside the process.
    """

    name = "stdout"

    async def head(self, chain: str) -> ChainHead | None:
        """Nothing to read back from stdout: every process starts at sequence 1."""
        return None

    async def write(self, lines: Sequence[str]) -> None:
        """Write one batch."""
        await asyncio.to_thread(_write_fd, 1, "".join(line + "\n" for line in lines).encode())

    async def aclose(self) -> None:
        """Nothing to release."""


def _write_fd(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class JsonlSink:
    """Appends JSON lines to a file; on start its chain continues from the file's last line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = f"jsonl:{path}"
        self._file: BinaryIO | None = None

    async def head(self, chain: str) -> ChainHead | None:
        """The chain's last record in the file (searching back past other chains' lines)."""
        return await asyncio.to_thread(self._head, chain)

    def _head(self, chain: str) -> ChainHead | None:
        if not self.path.exists():
            return None
        for n, line in enumerate(reverse_lines(self.path)):
            if n >= HEAD_SEARCH:
                break
            head = head_of(parse_fields(line), chain)
            if head is not None:
                return head
        return None

    async def write(self, lines: Sequence[str]) -> None:
        """Append and flush one batch."""
        await asyncio.to_thread(self._append, "".join(line + "\n" for line in lines).encode())

    def _append(self, data: bytes) -> None:
        if self._file is None:
            self._file = self._open()
        try:
            self._file.write(data)
            self._file.flush()
        except BaseException:
            # Reopen next time: a torn line gets its newline, and the worker re-reads the head.
            self._close()
            raise

    def _open(self) -> BinaryIO:
        file = open(self.path, "ab")  # noqa: SIM115 (kept open across batches)
        if file.tell() > 0 and _last_byte(self.path) != b"\n":
            file.write(b"\n")  # a write torn by a crash: keep our records on lines of their own
        return file

    def _close(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None

    async def aclose(self) -> None:
        """Close the file."""
        self._close()


def _last_byte(path: Path) -> bytes:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1)


class RedisStreamSink:
    """XADD to a Redis stream (field `record`), trimmed to about `maxlen` entries."""

    def __init__(
        self, client: Redis | RedisCluster, *, name: str, stream: str = STREAM, maxlen: int
    ) -> None:
        self.client = client
        self.name = name
        self.stream = stream
        self.maxlen = maxlen

    async def head(self, chain: str) -> ChainHead | None:
        """The chain's last record in the stream, searching back past other writers' entries."""
        upper = "+"
        scanned = 0
        while scanned < HEAD_SEARCH:
            entries = await self.client.xrevrange(self.stream, max=upper, min="-", count=500)
            if not entries:
                return None
            for _, values in entries:
                head = head_of(parse_fields((values or {}).get(RECORD_FIELD.encode())), chain)
                if head is not None:
                    return head
            scanned += len(entries)
            upper = "(" + text(entries[-1][0])
        return None

    async def write(self, lines: Sequence[str]) -> None:
        """XADD one batch in one round trip (a pipeline, not a transaction: Cluster-safe)."""
        pipe = self.client.pipeline(transaction=False)
        for line in lines:
            pipe.xadd(self.stream, {RECORD_FIELD: line}, maxlen=self.maxlen, approximate=True)
        await pipe.execute()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self.client.aclose()


def head_of(fields: dict[str, Any] | None, chain: str) -> ChainHead | None:
    """The head a record of `chain` leaves, or None (another chain's, or not a record)."""
    if fields is None or fields.get("chain", "") != chain:
        return None
    try:
        return ChainHead.of(fields)
    except ValueError:
        return None


def reverse_lines(path: Path, block: int = 1 << 16) -> Iterator[bytes]:
    """The file's non-empty lines, last first, read in blocks from the end."""
    with open(path, "rb") as f:
        position = f.seek(0, os.SEEK_END)
        rest = b""
        while position > 0:
            step = min(block, position)
            position -= step
            f.seek(position)
            chunk = f.read(step) + rest
            lines = chunk.split(b"\n")
            rest = lines.pop(0)
            for line in reversed(lines):
                if line.strip():
                    yield line
        if rest.strip():
            yield rest


def open_sinks(spec: str, *, store: str, stream: str, maxlen: int) -> list[AuditSink]:
    """The sinks `--audit` names (see the module docstring). Raises ConfigError."""
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if parts == ["none"]:
        return []
    sinks: list[AuditSink] = []
    for part in parts:
        sinks.append(_open_sink(part, store=store, stream=stream, maxlen=maxlen))
    names = [s.name for s in sinks]
    if not sinks or len(set(names)) != len(names):
        raise ConfigError("--audit", "", f"give each sink once, or 'none' (got {spec!r})")
    return sinks


def _open_sink(part: str, *, store: str, stream: str, maxlen: int) -> AuditSink:
    if part == "stdout":
        return StdoutSink()
    if part.startswith("jsonl:"):
        path = Path(part.removeprefix("jsonl:")).expanduser()
        if not path.parent.is_dir():
            raise ConfigError("--audit", "", f"no directory {str(path.parent)!r} for {part!r}")
        return JsonlSink(path)
    if part == "redis":
        if urlparse(store).scheme not in REDIS_SCHEMES:
            raise ConfigError(
                "--audit", "", f"'redis' writes to the --store Redis, but --store is {store!r}"
            )
        client = rate_client(store, timeout=_REDIS_TIMEOUT, max_connections=4)
        return RedisStreamSink(client, name="redis", stream=stream, maxlen=maxlen)
    if urlparse(part).scheme in REDIS_SCHEMES:
        client = rate_client(part, timeout=_REDIS_TIMEOUT, max_connections=4)
        return RedisStreamSink(client, name=_url_name(part), stream=stream, maxlen=maxlen)
    raise ConfigError(
        "--audit",
        "",
        f"unknown audit sink {part!r} (stdout, jsonl:PATH, redis, redis://HOST:PORT/DB, none)",
    )


def _url_name(url: str) -> str:
    """A Redis URL without its credentials, to name the sink in logs and metrics."""
    u = urlparse(url)
    host = u.hostname or ""
    port = f":{u.port}" if u.port else ""
    return f"{u.scheme}://{host}{port}{u.path}"
