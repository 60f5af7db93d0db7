"""Tables and inline images for the reports (evaluate, assess, case): Markdown and HTML."""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Sequence


def md_cell(value: object) -> str:
    """A value as one Markdown table cell: pipes escaped, on one line."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def md_table(head: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    """A Markdown table, one line per row."""
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in rows]
    return out


def html_table(
    head: Sequence[str], rows: Iterable[Sequence[object]], *, class_column: int | None = None
) -> str:
    """An HTML table, escaped; the cells of `class_column` also name their CSS class."""
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = []
    for row in rows:
        tds = []
        for i, c in enumerate(row):
            text = html.escape(str(c))
            tds.append(
                f'<td class="{text}">{text}</td>' if i == class_column else f"<td>{text}</td>"
            )
        body.append("<tr>" + "".join(tds) + "</tr>")
    return f"<table><tr>{cells}</tr>{''.join(body)}</table>"


def inline_png(png: bytes, alt: str) -> str:
    """An <img> carrying the PNG itself (a data: URI), so the page fetches nothing."""
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'
