"""The parts a case document is made of: sections of paragraphs, warnings, tables, examples.

authz.case.sections fills them from the case JSON; Markdown and HTML render
the same document (authz.case.render), so the two never disagree. Tables show
at most MAX_ROWS rows; the JSON has every row.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

MAX_ROWS = 25
NONE = "-"


@dataclass(frozen=True, slots=True)
class Table:
    """Rows of cells under a header; `more` rows were left out."""

    head: tuple[str, ...]
    rows: list[tuple[str, ...]]
    more: int = 0


@dataclass(frozen=True, slots=True)
class Alert:
    """A warning the reader must not miss (a broken chain, raw prompt text)."""

    text: str


@dataclass(frozen=True, slots=True)
class Pre:
    """Preformatted text: a template example, a command."""

    text: str


@dataclass(frozen=True, slots=True)
class Chart:
    """Where the volume chart goes (when it could be drawn)."""

    caption: str


Block = str | Table | Alert | Pre | Chart


@dataclass(slots=True)
class Section:
    """A titled part of the case file."""

    title: str
    blocks: list[Block] = field(default_factory=list)


def when(text: str) -> str:
    """A record time to the second, for tables."""
    return f"{text[:10]} {text[11:19]}Z" if len(text) >= 19 else (text or NONE)


def counts(values: Mapping[str, int], limit: int = 4) -> str:
    """`a 3, b 1` for a small breakdown, with a count of the rest."""
    items = list(values.items())
    shown = ", ".join(f"{k or NONE} {n:,}" for k, n in items[:limit])
    return shown + (f", +{len(items) - limit} more" if len(items) > limit else "") or NONE


def table(head: Sequence[str], rows: Iterable[Sequence[object]]) -> Table:
    """A table of at most MAX_ROWS rows; numbers with thousands separators."""
    cells = [tuple(_cell(v) for v in row) for row in rows]
    return Table(tuple(head), cells[:MAX_ROWS], max(0, len(cells) - MAX_ROWS))


def _cell(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value) if value not in ("", None) else NONE
