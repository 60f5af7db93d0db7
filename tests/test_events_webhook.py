"""The webhook sink against a real local HTTP server: retries, signature, budget, drops."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from authz.errors import ConfigError
from authz.events.event import Event
from authz.events.webhook import (
    IDEMPOTENCY_HEADER,
    TIMESTAMP_HEADER,
    WebhookSettings,
    WebhookSink,
    read_secret,
    sign,
    verify,
)
from authz.procs import free_port
from tests.otel import counter_value

SECRET = b"a-test-secret-of-32-bytes-length"
SENT_AT = 1_777_000_000.0  # the sinks' wall clock: when every attempt is signed


@dataclass
class Receiver:
    """What the test server answers (statuses in turn, then 200) and what it received."""

    statuses: list[int] = field(default_factory=list)
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    """A stdlib HTTP server on 127.0.0.1 in a thread; its state and URL."""
    state = Receiver()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with state.lock:
                state.received.append((dict(self.headers.items()), body))
                status = state.statuses.pop(0) if state.statuses else 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            """Quiet: the test reads `received` instead."""

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()


def event(n: int = 1) -> Event:
    """A small jurisdiction event."""
    return Event(
        kind="restricted_jurisdiction",
        severity="medium",
        incident=f"restricted_jurisdiction:embargoed-ip:203.0.113.{n}/32",
        first_seen=1_777_000_000.0 + n,
        last_seen=1_777_000_000.0 + n,
        requests=1,
        accounts=("a",),
        rule="embargoed-ip",
    )


class Ticker:
    """A monotonic clock that advances by the delays the sink sleeps: retries never wait."""

    def __init__(self) -> None:
        self.now = 0.0

    async def sleep(self, seconds: float) -> None:
        self.now += seconds

    def __call__(self) -> float:
        return self.now


def sink(url: str, ticker: Ticker, **options: Any) -> WebhookSink:
    """A webhook sink with quick settings and the fake clock."""
    settings = WebhookSettings(url=url, secret=SECRET, timeout=5.0, **options)
    return WebhookSink(
        settings, sleep=ticker.sleep, monotonic=ticker, jitter=lambda: 0.5, wall=lambda: SENT_AT
    )


def test_retried_until_accepted_and_signed(receiver: tuple[Receiver, str]) -> None:
    """Two 503s then 200: delivered on the third attempt, each attempt signed and idempotent."""
    state, url = receiver
    state.statuses = [503, 503]
    ticker = Ticker()
    hook = sink(url, ticker, budget=60.0, backoff=1.0)
    before = counter_value("distill_guard.events.webhook.failures", kind="status")
    assert asyncio.run(hook.deliver(event())) is True
    assert len(state.received) == 3
    assert counter_value("distill_guard.events.webhook.failures", kind="status") == before + 2
    # Backoff doubled: 0.75 s then 1.5 s (half fixed, half jitter at 0.5).
    assert ticker.now == 0.75 + 1.5
    ids = set()
    for headers, body in state.received:
        assert headers[TIMESTAMP_HEADER] == str(int(SENT_AT))
        assert verify(SECRET, headers, body, now=SENT_AT)
        assert not verify(b"another-secret-16bytes", headers, body, now=SENT_AT)
        assert json.loads(body) == event().to_json()
        ids.add(headers[IDEMPOTENCY_HEADER])
    assert ids == {event().id}


def test_gives_up_after_the_budget_and_counts_the_drop(receiver: tuple[Receiver, str]) -> None:
    """A receiver that keeps failing: attempts stop once the next wait passes the budget."""
    state, url = receiver
    state.statuses = [500] * 100
    ticker = Ticker()
    hook = sink(url, ticker, budget=10.0, backoff=1.0)
    before = counter_value("distill_guard.events.webhook.dropped", reason="budget")
    assert asyncio.run(hook.deliver(event())) is False
    # Waits of 0.75, 1.5, 3 (5.25 s in all); the next, 6 s, would pass 10 s.
    assert len(state.received) == 4 and ticker.now == 5.25
    assert counter_value("distill_guard.events.webhook.dropped", reason="budget") == before + 1
    assert hook.dropped == 1 and hook.delivered == 0


def test_a_client_error_is_final(receiver: tuple[Receiver, str]) -> None:
    """A 400 is not retried: the event is dropped as rejected."""
    state, url = receiver
    state.statuses = [400]
    before = counter_value("distill_guard.events.webhook.dropped", reason="rejected")
    assert asyncio.run(sink(url, Ticker()).deliver(event())) is False
    assert len(state.received) == 1
    assert counter_value("distill_guard.events.webhook.dropped", reason="rejected") == before + 1


def test_unreachable_receiver_is_retried_then_dropped() -> None:
    """Nothing listening: connection errors are retried within the budget, then dropped."""
    ticker = Ticker()
    hook = sink(f"http://127.0.0.1:{free_port()}/hook", ticker, budget=3.0, backoff=1.0)
    before = counter_value("distill_guard.events.webhook.failures", kind="error")
    assert asyncio.run(hook.deliver(event())) is False
    # Attempts at 0, 0.75 and 2.25 s; the next wait (3 s) would pass the 3 s budget.
    assert counter_value("distill_guard.events.webhook.failures", kind="error") == before + 3
    assert ticker.now == 2.25


def test_queue_sends_in_order_and_counts_overflow(receiver: tuple[Receiver, str]) -> None:
    """Events beyond the queue's size are dropped and counted; the queued ones all arrive."""
    state, url = receiver

    async def body() -> WebhookSink:
        hook = sink(url, Ticker(), queue=2)
        await hook.emit([event(1), event(2), event(3)], now=0.0)  # the task has not run yet
        hook.start()
        await hook.aclose(grace=30.0)
        return hook

    before = counter_value("distill_guard.events.webhook.dropped", reason="queue_full")
    hook = asyncio.run(body())
    assert [json.loads(b)["id"] for _, b in state.received] == [event(1).id, event(2).id]
    assert hook.delivered == 2 and hook.dropped == 1
    assert counter_value("distill_guard.events.webhook.dropped", reason="queue_full") == before + 1


def test_signature_is_hmac_of_timestamp_and_body() -> None:
    """The signature is HMAC-SHA256 over "<timestamp>." + body, in hex with a v1= prefix."""
    import hashlib
    import hmac

    body = b'{"id":"ev-1"}'
    expected = hmac.new(SECRET, b"1777000000." + body, hashlib.sha256).hexdigest()
    assert sign(SECRET, 1777000000, body) == "v1=" + expected


@pytest.mark.parametrize(
    ("timestamp", "now", "body", "accepted"),
    [
        ("1777000000", 1_777_000_000.0, b'{"id":"ev-1"}', True),
        ("1777000000", 1_777_000_300.0, b'{"id":"ev-1"}', True),  # at the tolerance
        ("1777000000", 1_777_000_301.0, b'{"id":"ev-1"}', False),  # stale: a replayed capture
        ("1777000000", 1_776_999_699.0, b'{"id":"ev-1"}', False),  # from the future
        ("1777000000", 1_777_000_000.0, b'{"id":"ev-2"}', False),  # another body
        ("1777000001", 1_777_000_000.0, b'{"id":"ev-1"}', False),  # another timestamp
        ("not-a-time", 1_777_000_000.0, b'{"id":"ev-1"}', False),
        ("\u00b9\u00b2", 1_777_000_000.0, b'{"id":"ev-1"}', False),  # digits int() refuses
        ("", 1_777_000_000.0, b'{"id":"ev-1"}', False),
        ("1" * 5000, 1_777_000_000.0, b'{"id":"ev-1"}', False),  # past int()'s digit limit
    ],
)
def test_receiver_verify(timestamp: str, now: float, body: bytes, accepted: bool) -> None:
    """The documented receiver helper accepts our signature over the body within the
    tolerance, with header names in any case, and refuses everything else without raising."""
    signature = sign(SECRET, 1777000000, b'{"id":"ev-1"}')
    headers = {"x-distill-guard-timestamp": timestamp, "X-DISTILL-GUARD-SIGNATURE": signature}
    assert verify(SECRET, headers, body, now=now) is accepted


def test_receiver_verify_without_signature_headers() -> None:
    """A POST without our headers is refused."""
    assert not verify(SECRET, {}, b"{}", now=1_777_000_000.0)


def test_settings_refuse_bad_input(tmp_path: Path) -> None:
    """A bad URL, a missing or short secret file: clear errors, and the secret never shown."""
    with pytest.raises(ConfigError, match=r"--events-webhook: not an http\(s\) URL: 'ftp://x'"):
        WebhookSettings(url="ftp://x", secret=SECRET)
    with pytest.raises(ConfigError, match="cannot read the webhook secret"):
        read_secret(tmp_path / "missing")
    short = tmp_path / "short"
    short.write_text("abc\n")
    with pytest.raises(ConfigError, match="at least 16 bytes"):
        read_secret(short)
    good = tmp_path / "secret"
    good.write_bytes(SECRET + b"\n")
    assert read_secret(good) == SECRET
    assert "a-test-secret" not in repr(WebhookSettings(url="http://h/", secret=SECRET))


def test_shutdown_counts_what_it_could_not_send(receiver: tuple[Receiver, str]) -> None:
    """Closing while a receiver keeps failing: the event in flight and the queued one are
    dropped as `shutdown`, both counted."""
    state, url = receiver
    state.statuses = [503] * 1000

    async def body() -> WebhookSink:
        # Real sleeps between attempts, a long budget: the first event is still being
        # retried when the grace period ends.
        settings = WebhookSettings(url=url, secret=SECRET, budget=600.0, backoff=0.05)
        hook = WebhookSink(settings)
        hook.start()
        await hook.emit([event(1), event(2)], now=0.0)
        await hook.aclose(grace=0.3)
        return hook

    before = counter_value("distill_guard.events.webhook.dropped", reason="shutdown")
    hook = asyncio.run(body())
    assert hook.dropped == 2 and hook.delivered == 0
    assert counter_value("distill_guard.events.webhook.dropped", reason="shutdown") == before + 2
