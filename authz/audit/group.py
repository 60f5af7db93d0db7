"""One consumer of a consumer group on a stream: which entries it reads next.

The rollup consumer (synchronous client) and the analysis worker (asyncio
client) read the audit stream alike: entries other consumers left pending for
longer than `claim_idle` (XAUTOCLAIM, checked every `claim_every` seconds),
else their own pending entries (after a restart), else new ones. The
`GroupReader` holds that logic once, as generators that yield the Redis calls
to make and receive their replies; `run` and `run_async` make the calls on a
client of either kind.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, TypeVar

from authz.redistext import text

Entry = tuple[bytes, dict[bytes, bytes] | None]
Call = tuple[str, tuple[Any, ...], dict[str, Any]]  # a client method and its arguments
Steps = Generator[Call, Any, list[Entry]]
T = TypeVar("T")


class Retry:
    """The wait between attempts while Redis is away: 0.1 s, doubling up to 5 s.

    A long-running consumer waits as long as it takes; a one-off drain gives up
    once the wait has reached its cap (after about 10 s of failures).
    """

    FIRST = 0.1
    CAP = 5.0

    def __init__(self) -> None:
        self.delay = self.FIRST

    def failed(self, *, drain: bool) -> float | None:
        """The wait before the next attempt; None when a drain should give up."""
        if drain and self.delay >= self.CAP:
            return None
        delay, self.delay = self.delay, min(self.delay * 2, self.CAP)
        return delay

    def succeeded(self) -> None:
        """Start again from the shortest wait."""
        self.delay = self.FIRST


class GroupReader:
    """The read position of one consumer of `group` on `stream` (no I/O of its own)."""

    def __init__(
        self,
        stream: str,
        group: str,
        consumer: str,
        *,
        batch: int,
        claim_idle: float,
        claim_every: float,
        monotonic: Callable[[], float],
    ) -> None:
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.batch = batch
        self.claim_idle = claim_idle
        self.claim_every = claim_every
        self.backlog = True  # re-read our own pending entries first (id 0)
        self.trimmed = 0  # entries XAUTOCLAIM dropped from the PEL (deleted from the stream)
        self._monotonic = monotonic
        self._next_claim = 0.0
        self._claim_cursor = "0-0"

    def claim(self) -> Steps:
        """Take over entries other consumers left pending for longer than `claim_idle`."""
        entries: list[Entry] = []
        while not entries:
            reply = yield (
                "xautoclaim",
                (self.stream, self.group, self.consumer, int(self.claim_idle * 1000)),
                {"start_id": self._claim_cursor, "count": self.batch},
            )
            self._claim_cursor = text(reply[0])
            entries = list(reply[1])
            self.trimmed += len(reply[2]) if len(reply) > 2 else 0
            if self._claim_cursor == "0-0":
                break
        return entries

    def read(self, block: float | None) -> Steps:
        """Our own pending entries first (after a restart), then new ones."""
        while True:
            start = "0" if self.backlog else ">"
            reply = yield (
                "xreadgroup",
                (self.group, self.consumer, {self.stream: start}),
                {
                    "count": self.batch,
                    "block": None if self.backlog or block is None else max(1, int(block * 1000)),
                },
            )
            entries: list[Entry] = list(reply[0][1]) if reply else []
            if not self.backlog or entries:
                return entries
            self.backlog = False

    def fetch(self, block: float | None, before_claim: Callable[[], None] | None = None) -> Steps:
        """The next batch: claimed entries when a claim is due and finds some, else `read`.

        `before_claim` runs when a claim is due, before it.
        """
        now = self._monotonic()
        if now >= self._next_claim:
            if before_claim is not None:
                before_claim()
            entries = yield from self.claim()
            if entries:
                return entries
            self._next_claim = now + self.claim_every
        return (yield from self.read(block))


def run(steps: Generator[Call, Any, T], client: Any) -> T:
    """Make the calls of `steps` on a synchronous client; what they return."""
    reply: Any = None
    try:
        while True:
            name, args, kwargs = steps.send(reply)
            reply = getattr(client, name)(*args, **kwargs)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


async def run_async(steps: Generator[Call, Any, T], client: Any) -> T:
    """Make the calls of `steps` on an asyncio client; what they return."""
    reply: Any = None
    try:
        while True:
            name, args, kwargs = steps.send(reply)
            reply = await getattr(client, name)(*args, **kwargs)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
