"""The case document as Markdown or as one self-contained HTML file, and its volume chart.

The HTML file needs nothing beside itself: the style sheet is inline and the
chart is embedded as a base64 PNG, so it can be mailed or attached to a
ticket and opened offline. The chart is drawn as authz.evaluation.chart draws
its figure (an Agg canvas of its own, default style, no Software metadata),
so the same case gives the same bytes.
"""

from __future__ import annotations

import html
import io
from collections.abc import Mapping, Sequence
from typing import Any

from authz.case.document import Alert, Chart, Pre, Section, Table
from authz.evaluation.chart import INSTALL_HINT
from authz.tables import html_table, inline_png, md_table

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:78em;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ccc;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.85em}
th,td{border:1px solid #ccc;padding:.2em .5em;text-align:left;vertical-align:top}
th{background:#f0f0f0}pre{background:#f6f6f6;padding:.6em;white-space:pre-wrap}
.alert{background:#fde2e2;border:2px solid #c00;padding:.6em;font-weight:bold}
img{max-width:100%}
"""


def volume_png(volume: Mapping[str, Any]) -> bytes | str:
    """The volume chart as PNG bytes, or the reason it could not be drawn."""
    try:
        from matplotlib import style
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        return f"matplotlib is not installed ({exc}); {INSTALL_HINT} to get the chart"
    buckets = volume["buckets"]
    x = list(range(len(buckets)))
    served = [b["allow"] - b["restricted"] for b in buckets]
    restricted = [b["restricted"] for b in buckets]
    denied = [b["deny"] for b in buckets]
    with style.context("default"):
        fig = Figure(figsize=(10, 3.5), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.subplots()
        ax.bar(x, served, color="C0", label="allowed, full output")
        ax.bar(x, restricted, bottom=served, color="C1", label="allowed, restricted output")
        tops = [a + b for a, b in zip(served, restricted, strict=True)]
        ax.bar(x, denied, bottom=tops, color="C3", label="denied")
        step = max(1, len(buckets) // 12)
        cut = 10 if volume["bucket"] == "day" else 13  # 2026-04-22, or 2026-04-22T05
        ax.set_xticks(x[::step], [b["start"][:cut].replace("T", " ") for b in buckets][::step])
        ax.tick_params(axis="x", labelrotation=30, labelsize="small")
        ax.set_ylabel(f"requests per {volume['bucket']}")
        ax.grid(True, axis="y", alpha=0.3)
        if buckets:  # above the bars, which fill the plot whatever the hour
            ax.legend(
                loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False,
                fontsize="small",
            )  # fmt: skip
        fig.tight_layout()
        out = io.BytesIO()
        fig.savefig(out, format="png", metadata={"Software": None})
    return out.getvalue()


def _md_table(t: Table) -> list[str]:
    out = md_table(t.head, t.rows)
    if t.more:
        out.append(f"\n({t.more:,} more rows in the JSON)")
    return out


def markdown(title: str, sections: Sequence[Section], chart: str | None) -> str:
    """The document as Markdown; `chart` is the PNG's file name, or None when there is none."""
    out = [f"# {title}", ""]
    for section in sections:
        out += [f"## {section.title}", ""]
        for block in section.blocks:
            if isinstance(block, Table):
                out += _md_table(block)
            elif isinstance(block, Alert):
                out.append(f"> **{block.text}**")
            elif isinstance(block, Pre):
                out += ["```text", block.text, "```"]
            elif isinstance(block, Chart):
                if chart is None:
                    continue
                out.append(f"![{block.caption}]({chart})")
            else:
                out.append(block)
            out.append("")
    return "\n".join(out).rstrip() + "\n"


def _html_table(t: Table) -> str:
    more = f"<p>({t.more:,} more rows in the JSON)</p>" if t.more else ""
    return html_table(t.head, t.rows) + more


def to_html(title: str, sections: Sequence[Section], png: bytes | None) -> str:
    """The document as one HTML file with its style and chart inline."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for section in sections:
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        for block in section.blocks:
            if isinstance(block, Table):
                parts.append(_html_table(block))
            elif isinstance(block, Alert):
                parts.append(f'<p class="alert">{html.escape(block.text)}</p>')
            elif isinstance(block, Pre):
                parts.append(f"<pre>{html.escape(block.text)}</pre>")
            elif isinstance(block, Chart):
                if png is not None:
                    parts.append(inline_png(png, block.caption))
            else:
                parts.append(f"<p>{html.escape(block)}</p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
