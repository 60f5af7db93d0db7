"""The evaluation over simulated time as a PNG (matplotlib, the optional `sim` extra).

Top panel: the campaign's cumulative leakage and the share of its accounts
restricted so far. Bottom panel: benign account-days restricted and denied in
each bucket, hard negatives as their own lines. The figure is drawn on an Agg
canvas of its own (no pyplot, no global backend switch) under matplotlib's
default style, and saved without the "Software" metadata, so the same figures
give the same bytes.
"""

from __future__ import annotations

import math
from pathlib import Path

from authz.evaluation.figures import Evaluation

INSTALL_HINT = "pip install 'distill-guard[sim]'"


def _percent(x: float | None) -> float:
    return math.nan if x is None else 100 * x


def draw(ev: Evaluation, path: Path) -> str | None:
    """Write the chart to `path`; the reason it was skipped instead, when matplotlib is missing."""
    try:
        from matplotlib import style
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        return f"matplotlib is not installed ({exc}); {INSTALL_HINT} to get the chart"

    x = [b.end_day for b in ev.series]
    # (label, colour, line style, values): a colour per population, dashes for the weaker kind
    top_lines = (
        ("leakage (served in full before restriction)", "C0", "-", [b.leakage for b in ev.series]),
        ("served in full, any time", "C0", ":", [b.served_full_share for b in ev.series]),
        (
            "campaign accounts restricted",
            "C2",
            "-",
            [b.campaign_restricted_share for b in ev.series],
        ),
    )
    bottom_lines = (
        ("benign: restricted", "C1", "-", [b.benign.restricted_rate for b in ev.series]),
        ("benign: denied", "C1", "--", [b.benign.denied_rate for b in ev.series]),
        (
            "hard negatives: restricted",
            "C3",
            "-",
            [b.hard_negative.restricted_rate for b in ev.series],
        ),
        ("hard negatives: denied", "C3", "--", [b.hard_negative.denied_rate for b in ev.series]),
    )
    with style.context("default"):
        fig = Figure(figsize=(10, 7), dpi=100)
        FigureCanvasAgg(fig)
        top, bottom = fig.subplots(2, 1, sharex=True)
        for ax, lines in ((top, top_lines), (bottom, bottom_lines)):
            for label, colour, dash, values in lines:
                ax.plot(
                    x, [_percent(v) for v in values], dash, color=colour, marker=".", label=label
                )
            ax.set_ylim(bottom=0)
            ax.grid(True, alpha=0.3)
            if x:
                ax.legend(loc="best", fontsize="small")
        top.set_ylabel("% of campaign (cumulative)")
        top.set_title("Campaign: leakage and accounts restricted so far")
        bottom.set_ylabel("% of account-days in the bucket")
        bottom.set_title("Benign accounts: restricted and denied per account-day")
        bottom.set_xlabel(f"days since the first decision (buckets of {ev.bucket_seconds:g} s)")
        fig.suptitle(f"distill-guard evaluation: {Path(ev.decisions).name}")
        fig.tight_layout()
        fig.savefig(path, format="png", metadata={"Software": None})
    return None
