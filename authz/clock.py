"""Time sources. Everything that needs the time takes a Clock, so replays are deterministic."""

from __future__ import annotations

import time


class SystemClock:
    """Wall-clock time in epoch seconds."""

    def now(self) -> float:
        """Return the current time."""
        return time.time()


class ManualClock:
    """A clock that only moves when told to: for tests and traffic replay."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start

    def now(self) -> float:
        """Return the time last set."""
        return self._now

    def set(self, when: float) -> None:
        """Jump to an absolute time."""
        self._now = when

    def advance(self, seconds: float) -> None:
        """Move forward by some seconds."""
        self._now += seconds
