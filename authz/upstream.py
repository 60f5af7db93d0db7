"""A mock model API for the demo and the end-to-end tests.

It answers every request with JSON describing what reached it: the method and
path, the governance (`x-distill-*`) headers with every value received, and
whether a credential header got through. It serves no model.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from authz.governance import GOVERNANCE_PREFIX

CREDENTIAL_HEADERS = ("authorization", "x-api-key")


@dataclass(frozen=True, slots=True)
class Seen:
    """One request as the mock model API received it."""

    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def values(self, name: str) -> list[str]:
        """Every value of one header (lower-case name)."""
        return [v for k, v in self.headers if k == name]

    @property
    def governance(self) -> dict[str, list[str]]:
        """The x-distill-* headers, each with all the values received."""
        out: dict[str, list[str]] = {}
        for k, v in self.headers:
            if k.startswith(GOVERNANCE_PREFIX):
                out.setdefault(k, []).append(v)
        return out

    @property
    def credentials(self) -> list[str]:
        """Names of the credential headers that reached the upstream."""
        return [h for h in CREDENTIAL_HEADERS if self.values(h)]

    def served(self) -> dict[str, Any]:
        """What a model server honouring the output governance headers would return.

        Reasoning as a full trace, a summary or nothing; thinking capped; log
        probabilities only when allowed; the watermark key the output is signed with.
        """
        first = {name: values[0] for name, values in self.governance.items()}
        exposure = first.get(GOVERNANCE_PREFIX + "reasoning", "none")
        reasoning = {
            "full": "[full reasoning trace: every step the model took]",
            "summary": "[reasoning summary: the steps in brief]",
        }.get(exposure)
        cap = first.get(GOVERNANCE_PREFIX + "max-thinking-tokens")
        return {
            "reasoning_exposure": exposure,
            "reasoning": reasoning,
            "max_thinking_tokens": int(cap) if cap and cap.isdigit() else None,
            "logprobs": first.get(GOVERNANCE_PREFIX + "logprobs") == "allowed",
            "watermark_key": first.get(GOVERNANCE_PREFIX + "watermark-key"),
        }

    def describe(self, seq: int) -> dict[str, Any]:
        """The JSON the mock answers with."""
        return {
            "mock": "distill-guard mock model API",
            "seq": seq,
            "method": self.method,
            "path": self.path,
            "served": self.served(),
            "governance_headers": self.governance,
            "credential_received": bool(self.credentials),
            "credential_headers": self.credentials,
            # Names only (no values): lets a probe see that a header such as
            # x_distill_reasoning got through without echoing anything secret.
            "header_names": sorted({k for k, _ in self.headers}),
            "request_id": next(iter(self.values("x-request-id")), None),
            "body_bytes": len(self.body),
        }


@dataclass
class Recorder:
    """Every request the mock has served, in order (thread-safe)."""

    seen: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, item: Seen) -> int:
        """Record one request; returns its sequence number (1-based)."""
        with self.lock:
            self.seen.append(item)
            return len(self.seen)

    def count(self) -> int:
        """How many requests reached the mock."""
        with self.lock:
            return len(self.seen)

    def last(self) -> Seen:
        """The most recent request."""
        with self.lock:
            return self.seen[-1]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: Envoy pools upstream connections
    server: MockServer

    def _any(self) -> None:
        body = self._read_body()
        headers = tuple((k.lower(), v) for k, v in self.headers.items())
        seen = Seen(self.command, self.path, headers, body)
        seq = self.server.recorder.add(seen)
        payload = json.dumps(seen.describe(seq), indent=2).encode() + b"\n"
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    # http.server dispatches on these stdlib names.
    do_GET = do_POST = do_PUT = do_PATCH = _any  # noqa: N815 (stdlib names)
    do_DELETE = do_HEAD = do_OPTIONS = _any  # noqa: N815 (stdlib names)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            sys.stderr.write(f"mock-upstream: {self.address_string()} {format % args}\n")


class MockServer(ThreadingHTTPServer):
    """The threaded HTTP server; `recorder` holds what it saw."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], *, verbose: bool = False) -> None:
        super().__init__(address, _Handler)
        self.recorder = Recorder()
        self.verbose = verbose

    @property
    def port(self) -> int:
        """The bound port (useful after binding port 0)."""
        return int(self.server_address[1])


def start_in_thread(host: str = "127.0.0.1", port: int = 0) -> tuple[MockServer, threading.Thread]:
    """Start a mock in a daemon thread; stop it with `server.shutdown(); server.server_close()`."""
    server = MockServer((host, port))
    thread = threading.Thread(target=server.serve_forever, name="mock-upstream", daemon=True)
    thread.start()
    return server, thread


def split_hostport(text: str) -> tuple[str, int]:
    """'HOST:PORT' (or '[v6]:PORT') into its parts."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _run(ns: argparse.Namespace) -> int:
    host, port = ns.listen
    server = MockServer((host, port), verbose=not ns.quiet)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"mock-upstream listening on {host}:{server.port}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `mock-upstream` subcommand."""
    p = sub.add_parser("mock-upstream", help="run a mock model API that echoes what reached it")
    p.add_argument(
        "--listen",
        type=split_hostport,
        default=("127.0.0.1", 8000),
        metavar="HOST:PORT",
        help="address to listen on [default 127.0.0.1:8000]",
    )
    p.add_argument("--quiet", action="store_true", help="do not log each request")
    p.set_defaults(func=_run)
