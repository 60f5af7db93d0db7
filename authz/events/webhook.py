"""The webhook sink: each event POSTed as JSON, signed, retried within a budget.

Contract (docs/events.md, "Webhook"): the body is the event's JSON; headers

    X-Distill-Guard-Timestamp: <unix seconds>
    X-Distill-Guard-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>." + body)>
    Idempotency-Key: <event id>

A 2xx answer delivers the event. Connection errors, timeouts, 408, 425, 429
and 5xx are retried with exponential backoff and jitter until the event's
`budget` (seconds from its first attempt) is spent; other answers are final.
Events wait in a bounded queue, sent one at a time by one task, so a slow
receiver never holds up the analysis: when the queue is full an event is
dropped. Every drop is counted (`distill_guard.events.webhook.dropped`, by
reason) and logged with the event id: never silently lost. The secret is read
from a file and is never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import random
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from opentelemetry import metrics

from authz.errors import ConfigError
from authz.events.event import Event

log = logging.getLogger("authz.events.webhook")

TIMESTAMP_HEADER = "X-Distill-Guard-Timestamp"
SIGNATURE_HEADER = "X-Distill-Guard-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
_RETRY_STATUS = frozenset({408, 425, 429})

_meter = metrics.get_meter("distill_guard")
_delivered = _meter.create_counter(
    "distill_guard.events.webhook.delivered", description="Events the webhook accepted (2xx)"
)
_failures = _meter.create_counter(
    "distill_guard.events.webhook.failures",
    description="Failed delivery attempts, by kind (status, error, timeout); retried or not",
)
_dropped = _meter.create_counter(
    "distill_guard.events.webhook.dropped",
    description="Events the webhook never accepted, by reason (queue_full, budget, "
    "rejected, shutdown)",
)
_QUEUES: list[asyncio.Queue[Event]] = []


def _observe_depth(_options: metrics.CallbackOptions) -> list[metrics.Observation]:
    return [metrics.Observation(q.qsize()) for q in _QUEUES]


_meter.create_observable_gauge(
    "distill_guard.events.webhook.queue_depth",
    callbacks=[_observe_depth],
    description="Events waiting for the webhook",
)


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The signature header's value for a body sent at `timestamp`."""
    mac = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def verify(
    secret: bytes, headers: Mapping[str, str], body: bytes, *, now: float, tolerance: float = 300.0
) -> bool:
    """Whether a received POST is signed with `secret` at most `tolerance` seconds from `now`.

    The receiver's check (docs/events.md, "Webhook"), made on the raw body before
    parsing it. Header names match in any case; a stale timestamp fails, so a
    captured request cannot be replayed later.
    """
    named = {name.lower(): value for name, value in headers.items()}
    timestamp = named.get(TIMESTAMP_HEADER.lower(), "")
    signature = named.get(SIGNATURE_HEADER.lower(), "")
    # isascii: str.isdigit also accepts digits int() refuses, such as superscripts; the
    # length keeps a hostile header under int()'s digit limit (and Unix seconds are 10).
    digits = timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12
    if not digits or abs(now - int(timestamp)) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, int(timestamp), body), signature)


def read_secret(path: Path) -> bytes:
    """The signing secret from a file (surrounding whitespace dropped). Raises ConfigError."""
    try:
        secret = path.read_bytes().strip()
    except OSError as exc:
        problem = f"cannot read the webhook secret: {exc.strerror}"
        raise ConfigError(str(path), "", problem) from None
    if len(secret) < 16:
        raise ConfigError(str(path), "", "the webhook secret must be at least 16 bytes")
    return secret


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    """Where and how events are POSTed (flags of `distill-guard analyze`)."""

    url: str
    secret: bytes
    timeout: float = 5.0  # one attempt
    budget: float = 300.0  # all attempts of one event, from its first
    queue: int = 1000
    backoff: float = 1.0  # first retry's delay; doubles per attempt
    max_backoff: float = 60.0

    def __post_init__(self) -> None:
        url = urlparse(self.url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ConfigError("--events-webhook", "", f"not an http(s) URL: {self.url!r}")

    def __repr__(self) -> str:
        return f"WebhookSettings(url={self.url!r}, secret=<redacted>)"


class _Retry(Exception):
    """An attempt that failed in a way worth retrying; `kind` labels the failure."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


class _Final(Exception):
    """An answer that retrying will not change."""


Sleep = Callable[[float], Awaitable[None]]


class WebhookSink:
    """Delivers events to one URL (see the module docstring); `start` it, `aclose` it."""

    name = "webhook"

    def __init__(
        self,
        settings: WebhookSettings,
        *,
        jitter: Callable[[], float] = random.random,
        sleep: Sleep = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.queue: asyncio.Queue[Event] = asyncio.Queue(settings.queue)
        self._jitter = jitter
        self._sleep = sleep
        self._monotonic = monotonic
        self._wall = wall
        self._task: asyncio.Task[None] | None = None
        self.delivered = 0
        self.dropped = 0

    def start(self) -> None:
        """Start the sending task (on the running loop)."""
        if self._task is None:
            # Series at 0 from the start, so that alerts on increase() see the first one.
            _delivered.add(0)
            for reason in ("queue_full", "budget", "rejected", "shutdown"):
                _dropped.add(0, {"reason": reason})
            for kind in ("status", "error", "timeout"):
                _failures.add(0, {"kind": kind})
            _QUEUES.append(self.queue)
            self._task = asyncio.get_running_loop().create_task(self._send_all())

    async def emit(self, events: Sequence[Event], now: float) -> None:
        """Queue the events; those that do not fit are dropped and counted."""
        for event in events:
            try:
                self.queue.put_nowait(event)
            except asyncio.QueueFull:
                self._drop(event, "queue_full")

    async def aclose(self, grace: float = 10.0) -> None:
        """Send what is queued for up to `grace` seconds, then drop (and count) the rest."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.queue.join(), grace)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        while not self.queue.empty():
            self._drop(self.queue.get_nowait(), "shutdown")
        _QUEUES.remove(self.queue)
        self._task = None

    async def _send_all(self) -> None:
        while True:
            event = await self.queue.get()
            try:
                await self.deliver(event)
            except asyncio.CancelledError:
                self._drop(event, "shutdown")  # stopped mid-delivery: lost, but counted
                raise
            finally:
                self.queue.task_done()

    async def deliver(self, event: Event) -> bool:
        """Send one event, retrying within its budget; whether the receiver took it."""
        body = event.line().encode()
        deadline = self._monotonic() + self.settings.budget
        attempt = 0
        while True:
            try:
                status = await asyncio.to_thread(self._post, body, event.id)
            except _Retry as exc:
                _failures.add(1, {"kind": exc.kind})
                delay = self._delay(attempt)
                if self._monotonic() + delay > deadline:
                    self._drop(event, "budget", str(exc))
                    return False
                log.info(
                    "webhook attempt failed; retrying",
                    extra={"event_id": event.id, "problem": str(exc), "retry_in": round(delay, 2)},
                )
                await self._sleep(delay)
                attempt += 1
                continue
            except _Final as exc:
                _failures.add(1, {"kind": "status"})
                self._drop(event, "rejected", str(exc))
                return False
            self.delivered += 1
            _delivered.add(1)
            log.debug("webhook delivered", extra={"event_id": event.id, "status": status})
            return True

    def _delay(self, attempt: int) -> float:
        """Exponential backoff with jitter: half the step fixed, half random."""
        step = min(self.settings.max_backoff, self.settings.backoff * 2**attempt)
        return float(step / 2 + step / 2 * self._jitter())

    def _post(self, body: bytes, event_id: str) -> int:
        """One attempt (in a thread): the status, or _Retry / _Final."""
        timestamp = int(self._wall())
        request = urllib.request.Request(
            self.settings.url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "User-Agent": "distill-guard-events",
                TIMESTAMP_HEADER: str(timestamp),
                SIGNATURE_HEADER: sign(self.settings.secret, timestamp, body),
                IDEMPOTENCY_HEADER: event_id,
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.settings.timeout) as response:
                status = int(response.status)
        except urllib.error.HTTPError as exc:
            status = exc.code
            exc.close()
        except TimeoutError as exc:
            raise _Retry("timeout", f"no answer within {self.settings.timeout}s") from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, TimeoutError):
                raise _Retry("timeout", f"no answer within {self.settings.timeout}s") from exc
            raise _Retry("error", f"cannot reach the webhook: {reason}") from exc
        if 200 <= status < 300:
            return status
        if status >= 500 or status in _RETRY_STATUS:
            raise _Retry("status", f"HTTP {status}")
        raise _Final(f"HTTP {status}")

    def _drop(self, event: Event, reason: str, detail: str = "") -> None:
        self.dropped += 1
        _dropped.add(1, {"reason": reason})
        log.error(
            "reportable event not delivered to the webhook",
            extra={"event_id": event.id, "kind": event.kind, "reason": reason, "problem": detail},
        )
