"""Backfilling the rollups from a JSON-lines file (`audit rollup --file`).

No stream, no acknowledgement: loading the same file twice counts it twice.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from authz.audit.record import parse_fields
from authz.audit.roller import Roller, RollupStats


def read_lines(path: Path) -> Iterator[Mapping[str, Any] | None]:
    """The records of a JSON-lines file (None for a line that is not a JSON object)."""
    with path.open("rb") as lines:
        for line in lines:
            if line.strip():
                yield parse_fields(line)


def backfill(
    roller: Roller, records: Iterable[Mapping[str, Any] | None], batch: int = 5000
) -> RollupStats:
    """Roll up records from a file (no stream, no acknowledgement: not idempotent)."""
    total = RollupStats()
    started = time.monotonic()
    chunk: list[tuple[str, Mapping[str, Any] | None]] = []
    for rec in records:
        chunk.append(("", rec))
        if len(chunk) >= batch:
            total.add(roller.apply(chunk))
            chunk = []
    if chunk:
        total.add(roller.apply(chunk))
    total.seconds = time.monotonic() - started
    return total
