"""Hot reload of files (rules, accounts) with last-good-wins semantics.

Kubernetes updates a mounted ConfigMap or Secret by swapping a symlink in its
directory, so the watcher compares the *resolved* path's identity (inode,
mtime, size), not just the name. A reload that fails is logged and counted,
and the last good value keeps serving. A value loaded from several files (a
certificate and its key) watches all of them, and reloads when any changes.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Generic, TypeVar

from opentelemetry import metrics

from authz.errors import ConfigError

T = TypeVar("T")
log = logging.getLogger("distill_guard.reload")
_meter = metrics.get_meter("distill_guard")
_reloads = _meter.create_counter(
    "distill_guard.reload.swaps", description="Files reloaded and swapped in, by kind"
)
_failures = _meter.create_counter(
    "distill_guard.reload.failures",
    description="Reloads rejected (the last good value kept serving), by kind",
)

_Signature = tuple[str, int, int, int]


def _signature(path: Path) -> _Signature | None:
    try:
        real = os.path.realpath(path)
        st = os.stat(real)
    except OSError:
        return None
    return (real, st.st_ino, st.st_mtime_ns, st.st_size)


def signatures(paths: Sequence[Path]) -> tuple[_Signature, ...] | None:
    """The identities of a set of files; None while any of them is missing."""
    found = []
    for path in paths:
        signature = _signature(path)
        if signature is None:
            return None
        found.append(signature)
    return tuple(found)


class WatchedFile(Generic[T]):
    """Holds the value loaded from a file and reloads it when the file changes.

    `also` names further files the value is loaded from: a change to any of
    them reloads it too (`load` still gets `path`, and knows the others).
    """

    def __init__(
        self,
        path: Path,
        load: Callable[[Path], T],
        *,
        kind: str,
        on_swap: Callable[[T], None] | None = None,
        also: Sequence[Path] = (),
    ) -> None:
        self.path = path
        self.kind = kind
        self._load = load
        self._on_swap = on_swap
        self._paths = (path, *also)
        self._signature = signatures(self._paths)
        self._value = load(path)  # the first load must succeed: no last good value yet
        self.reloads = 0
        self.failures = 0
        self.last_error: str | None = None

    def current(self) -> T:
        """The last value that loaded successfully."""
        return self._value

    def poll(self, *, force: bool = False) -> bool:
        """Reload if the file changed (or always, with `force`); True when swapped."""
        signature = signatures(self._paths)
        if signature is None or (signature == self._signature and not force):
            return False
        self._signature = signature
        try:
            value = self._load(self.path)
        except Exception as exc:
            self.failures += 1
            _failures.add(1, {"kind": self.kind})
            self.last_error = (
                str(exc)
                if isinstance(exc, ConfigError)
                else f"{self.path}: unexpected {type(exc).__name__}: {exc}"
            )
            log.error(
                "reload rejected; last good %s keep serving",
                self.kind,
                extra={"file": str(self.path), "error": self.last_error, "failures": self.failures},
            )
            return False
        self._value = value
        self.reloads += 1
        _reloads.add(1, {"kind": self.kind})
        self.last_error = None
        if self._on_swap is not None:
            self._on_swap(value)
        log.info("reloaded %s", self.kind, extra={"file": str(self.path), "reloads": self.reloads})
        return True

    async def watch(self, interval: float) -> None:
        """Poll forever (cancel the task to stop)."""
        while True:
            await asyncio.sleep(interval)
            self.poll()
