"""The traffic format: recorded or simulated requests, one JSON object per line.

    {"ts": 1776816000.25, "source_ip": "79.192.3.4", "method": "POST",
     "path": "/v1/messages", "headers": {"x-api-key": "..."}, "body": "{...}"}

`ts` is epoch seconds or an RFC 3339 time; `source_ip` is the peer address as
Envoy saw it; `headers` as the client sent them; `body` the request body as a
string. Unknown fields are ignored. `as_envoy_sees_it` turns a record into the
RequestFacts the gRPC edge would build for it behind envoy/sidecar.yaml, so
replay and the live server decide on the same facts (see docs/replay.md).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any, NamedTuple

from authz.facts import PARTIAL_BODY_HEADER, RequestFacts, parse_ip

# Lines longer than this are refused rather than parsed (a body above Envoy's
# buffer is cut anyway, so nothing a replay needs is lost).
MAX_LINE_BYTES = 8 << 20


class TrafficError(ValueError):
    """A traffic line that cannot be replayed; the message says why."""


class TrafficRecord(NamedTuple):
    """One request of a traffic file (a NamedTuple: one per line, cheaper than a dataclass)."""

    line: int  # 1-based line number in its file
    ts: float
    source_ip: str
    method: str
    path: str
    headers: dict[str, str]
    body: str | None = None

    def to_json(self) -> str:
        """The record as one traffic line (no trailing newline)."""
        out: dict[str, Any] = {
            "ts": self.ts,
            "source_ip": self.source_ip,
            "method": self.method,
            "path": self.path,
            "headers": self.headers,
        }
        if self.body is not None:
            out["body"] = self.body
        return json.dumps(out, ensure_ascii=False, separators=(",", ":"))


def parse_ts(value: Any) -> float:
    """Epoch seconds from a number or an RFC 3339 string (with a time zone)."""
    if isinstance(value, bool):
        raise TrafficError("'ts' must be epoch seconds or an RFC 3339 time")
    if isinstance(value, int | float):
        ts = float(value)
    elif isinstance(value, str):
        try:
            when = datetime.fromisoformat(value.replace("Z", "+00:00", 1))
        except ValueError:
            raise TrafficError(f"'ts' {value[:40]!r} is not an RFC 3339 time") from None
        if when.tzinfo is None:
            raise TrafficError(f"'ts' {value[:40]!r} has no time zone")
        ts = when.timestamp()
    else:
        raise TrafficError("'ts' must be epoch seconds or an RFC 3339 time")
    if not math.isfinite(ts) or ts < 0:
        raise TrafficError(f"'ts' {value!r} is out of range")
    return ts


def _text(obj: dict[str, Any], name: str, default: str | None = None) -> str:
    value = obj.get(name, default)
    if value is None:
        raise TrafficError(f"missing {name!r}")
    if not isinstance(value, str):
        raise TrafficError(f"{name!r} must be a string")
    return value


def parse_line(text: str | bytes, line: int) -> TrafficRecord:
    """Parse one traffic line; raises TrafficError naming the problem."""
    if len(text) > MAX_LINE_BYTES:
        raise TrafficError(f"line is longer than {MAX_LINE_BYTES} bytes")
    try:
        obj = json.loads(text)
    except RecursionError:
        raise TrafficError("nested too deeply") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TrafficError(f"not JSON: {getattr(exc, 'msg', exc)}") from None
    if not isinstance(obj, dict):
        raise TrafficError("not a JSON object")
    if "ts" not in obj:
        raise TrafficError("missing 'ts'")
    ts = parse_ts(obj["ts"])
    source_ip = _text(obj, "source_ip")
    if parse_ip(source_ip) is None:
        raise TrafficError(f"'source_ip' {source_ip[:64]!r} is not an IP address")
    method = _text(obj, "method", "POST")
    path = _text(obj, "path")
    if not path.startswith("/"):
        raise TrafficError(f"'path' {path[:64]!r} does not start with '/'")
    raw_headers = obj.get("headers", {})
    if not isinstance(raw_headers, dict):
        raise TrafficError("'headers' must be an object")
    headers: dict[str, str] = {}
    for name, value in raw_headers.items():
        if not isinstance(value, str):
            raise TrafficError(f"header {name[:64]!r} must have a string value")
        headers[name.lower()] = value
    body = obj.get("body")
    if body is not None and not isinstance(body, str):
        raise TrafficError("'body' must be a string")
    return TrafficRecord(line, ts, source_ip, method, path, headers, body)


@dataclass(frozen=True, slots=True)
class BadLine:
    """A line that was skipped, and why."""

    line: int
    problem: str


def read_traffic(stream: IO[bytes]) -> Iterator[TrafficRecord | BadLine]:
    """Every line of a traffic file, parsed, or the reason it cannot be (blank lines skipped)."""
    for number, raw in enumerate(stream, start=1):
        if not raw.strip():
            continue
        try:
            yield parse_line(raw, number)
        except TrafficError as exc:
            yield BadLine(number, str(exc))


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4, as Envoy's normalize_path applies it."""
    out: list[str] = []
    for segment in path.split("/")[1:]:
        if segment == "..":
            if out:
                out.pop()
        elif segment != ".":
            out.append(segment)
    trailing = path.endswith(("/.", "/.."))
    return "/" + "/".join(out) + ("/" if trailing and out else "")


def normalize_path(path: str) -> str:
    """The path as envoy/sidecar.yaml passes it on: dot segments resolved, slashes merged."""
    base, sep, query = path.partition("?")
    while "//" in base:
        base = base.replace("//", "/")
    if base.startswith("/") and "/." not in base:
        return base + sep + query  # no dot segment to resolve (the common case)
    return _remove_dot_segments(base) + sep + query


def _body_bytes(text: str) -> bytes:
    """The body's bytes: `\\udcXX` escapes stand for the bytes of a non-UTF-8 body."""
    try:
        return text.encode("utf-8", errors="surrogateescape")
    except UnicodeEncodeError:  # other lone surrogates: keep them, as invalid UTF-8
        return text.encode("utf-8", errors="surrogatepass")


def _declared_length(headers: dict[str, str]) -> int:
    value = headers.get("content-length", "").strip()
    return int(value) if value.isdigit() else 0


def as_envoy_sees_it(
    record: TrafficRecord, *, max_body_bytes: int, request_id: str
) -> RequestFacts:
    """The facts the gRPC edge builds for this request behind envoy/sidecar.yaml.

    Envoy drops headers with underscores, appends the peer to X-Forwarded-For
    (use_remote_address), mints the x-request-id, normalises the path and
    buffers at most `max_body_bytes` of the body (a longer one arrives cut,
    marked partial, with its content-length kept).
    """
    headers = {n: v for n, v in record.headers.items() if "_" not in n}
    xff = headers.get("x-forwarded-for")
    headers["x-forwarded-for"] = f"{xff},{record.source_ip}" if xff else record.source_ip
    headers["x-request-id"] = request_id
    body: bytes | None = None
    partial = False
    if record.body:
        full = _body_bytes(record.body)
        headers.setdefault("content-length", str(len(full)))
        body = full[:max_body_bytes]
        # Cut here, or already cut where it was recorded (content-length tells).
        partial = len(full) > max_body_bytes or _declared_length(headers) > len(body)
        if partial:
            headers[PARTIAL_BODY_HEADER] = "true"
    path = normalize_path(record.path)
    headers[":method"] = record.method
    headers[":path"] = path
    return RequestFacts(
        method=record.method,
        path=path,
        host=headers.get("host", headers.get(":authority", "")),
        headers=headers,
        client_ip=parse_ip(record.source_ip),
        source=record.source_ip,
        body=body,
        body_partial=partial,
        request_id=request_id,
        protocol="HTTP/1.1",
    )
