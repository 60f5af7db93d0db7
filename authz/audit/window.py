"""Query windows: `--since`/`--until` parsed into whole hourly or daily buckets.

Windows: `--since` and `--until` take a duration back from now (`90m`, `24h`,
`7d`, `2w`, `30s`), an RFC 3339 time or a date (midnight UTC). Windows of at
most 72 hours are read from hourly buckets, longer ones from daily buckets
(`--granularity` overrides). Buckets are whole: the first and last buckets of
the window are counted entirely, so a window may include up to one bucket's
worth of records before `since` and after `until`; the output states the
span actually covered (`from`, `to`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from authz.audit.rollup_keys import BUCKET_SECONDS, DAY, HOUR, bucket_name, bucket_start

HOUR_WINDOW_LIMIT = 72 * 3600  # windows up to this long are read from hourly buckets
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")


class QueryError(ValueError):
    """A query cannot run as asked (bad time, empty window)."""


def parse_time(text: str, now: float) -> float:
    """Epoch seconds of `24h`/`7d`/`90m`-style durations back from now, RFC 3339 times or dates."""
    match = _DURATION.match(text.strip())
    if match:
        return now - float(match.group(1)) * _UNITS[match.group(2)]
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise QueryError(f"not a duration (90m, 24h, 7d) or an RFC 3339 time: {text!r}") from None
    if when.tzinfo is None:
        if len(text.strip()) != 10:  # a bare date means midnight UTC; a time needs its offset
            raise QueryError(f"give a UTC offset (Z or +01:00) with the time: {text!r}")
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def epoch_of(text: str) -> float:
    """Epoch seconds of an RFC 3339 time with its offset; ValueError otherwise.

    A time without an offset is refused rather than read in the machine's zone.
    """
    when = datetime.fromisoformat(text)
    if when.tzinfo is None:
        raise ValueError(f"time without a UTC offset: {text!r}")
    return when.timestamp()


def rfc3339(when: float) -> str:
    """Epoch seconds as an RFC 3339 UTC time."""
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Window:
    """The span a query covers, as whole buckets of one granularity."""

    since: float
    until: float
    granularity: str  # h or d
    buckets: tuple[str, ...]

    @property
    def start(self) -> float:
        """When the first bucket begins."""
        return bucket_start(self.granularity, self.buckets[0])

    @property
    def end(self) -> float:
        """When the last bucket ends."""
        return bucket_start(self.granularity, self.buckets[-1]) + BUCKET_SECONDS[self.granularity]

    def describe(self) -> str:
        """One line for people: the span covered and the bucket size."""
        unit = "hourly" if self.granularity == HOUR else "daily"
        return (
            f"{rfc3339(self.start)} .. {rfc3339(self.end)} "
            f"({len(self.buckets)} {unit} buckets, edge buckets counted whole)"
        )

    def as_json(self) -> dict[str, Any]:
        """The window for --json output."""
        return {
            "since": rfc3339(self.since),
            "until": rfc3339(self.until),
            "granularity": "hour" if self.granularity == HOUR else "day",
            "from": rfc3339(self.start),
            "to": rfc3339(self.end),
            "buckets": len(self.buckets),
        }


def make_window(since: str, until: str | None, now: float, granularity: str = "auto") -> Window:
    """The buckets covering [since, until): hourly up to 72 hours, daily beyond (unless forced)."""
    start = parse_time(since, now)
    end = parse_time(until, now) if until else now
    if end <= start:
        raise QueryError(f"empty window: {rfc3339(start)} is not before {rfc3339(end)}")
    if granularity == "auto":
        g = HOUR if end - start <= HOUR_WINDOW_LIMIT else DAY
    else:
        g = HOUR if granularity in {"hour", HOUR} else DAY
    size = BUCKET_SECONDS[g]
    first = bucket_start(g, bucket_name(g, start))
    buckets = []
    at = float(first)
    while at < end:
        buckets.append(bucket_name(g, at))
        at += size
    return Window(start, end, g, tuple(buckets))
