"""A real distill-guard gRPC server on 127.0.0.1:0, run in a background thread for tests."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from typing import IO, Any, TypeVar

from authz.app import App, build_app
from authz.geobuild import demo_database
from authz.protocols import Clock
from authz.server import Server
from authz.settings import Settings
from tests.fakes import DEMO_ACCOUNTS, DEMO_RULES

T = TypeVar("T")


class ServerThread:
    """Owns an event loop thread running one Server; sync tests talk to it over gRPC."""

    def __init__(
        self,
        settings: Settings,
        customize: Callable[[App], None] | None = None,
        *,
        clock: Clock | None = None,
    ) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        app = build_app(settings, clock=clock)
        if customize is not None:
            customize(app)
        self.app = app
        self.server: Server = self.call(self._make(settings, app))
        self.call(self.server.start())

    @staticmethod
    async def _make(settings: Settings, app: App) -> Server:
        return Server(settings, app)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        """Run a coroutine on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        """Run a coroutine on the server's loop without waiting."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    @property
    def target(self) -> str:
        """host:port of the Authorization service."""
        return f"127.0.0.1:{self.server.port}"

    def close(self) -> None:
        """Stop the server and the loop."""
        try:
            self.call(self.server.stop(), timeout=30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)


def demo_settings(**overrides: object) -> Settings:
    """Settings for a test server on a free port with the demo rules, accounts and GeoIP data."""
    geo = demo_database()
    values: dict[str, object] = {
        "rules": DEMO_RULES,
        "accounts": DEMO_ACCOUNTS,
        "geoip": geo,
        "asn": geo,
        "listen": "127.0.0.1:0",
        "grace": 2.0,
        "audit": "none",  # tests that look at audit records choose their sink
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def read_log_until(stream: IO[str], msg: str, limit: int = 20) -> dict[str, Any]:
    """Read a `serve` process's JSON log lines until one has this message; that line."""
    for _ in range(limit):
        line = stream.readline()
        if not line:
            break
        entry: dict[str, Any] = json.loads(line)
        if entry.get("msg") == msg:
            return entry
    raise AssertionError(f"no log line {msg!r} within {limit} lines")
