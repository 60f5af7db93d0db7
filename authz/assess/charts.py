"""The per-control pass/fail chart (matplotlib, the optional `sim` extra).

Drawn like the evaluation chart: an Agg canvas of its own, matplotlib's
default style and no "Software" metadata, so the same findings give the same
bytes.
"""

from __future__ import annotations

import io
from typing import Any

COLOURS = {"pass": "#1b7f3b", "fail": "#b00020", "warn": "#e08a00", "unverifiable": "#9e9e9e"}


def controls_chart(rows: list[dict[str, Any]]) -> bytes | None:
    """PNG bytes of findings per control by status; None without matplotlib."""
    try:
        from matplotlib import style
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    labels = [f"{r['control']}. {r['name']}" for r in reversed(rows)]
    with style.context("default"):
        fig = Figure(figsize=(9, 3.6), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.subplots()
        left = [0] * len(labels)
        for status, colour in COLOURS.items():
            values = [r[status] for r in reversed(rows)]
            ax.barh(labels, values, left=left, color=colour, label=status)
            left = [a + b for a, b in zip(left, values, strict=True)]
        ax.set_xlabel("findings")
        ax.set_title("Findings per control")
        ax.legend(loc="lower right", fontsize="small")
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()
