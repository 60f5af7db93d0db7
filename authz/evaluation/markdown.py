"""The evaluation as a Markdown report: inputs, definitions, tables, problems."""

from __future__ import annotations

from datetime import UTC, datetime

from authz.evaluation.figures import (
    BenignFigures,
    Bucket,
    CampaignFigures,
    Detection,
    Evaluation,
    Spread,
)
from authz.tables import md_cell, md_table

MAX_SERIES_ROWS = 400
TOP_REASONS = 3
NONE = "-"


def pct(x: float | None) -> str:
    """A fraction as a percentage with three significant digits."""
    return NONE if x is None else f"{x * 100:.3g}%"


def rate(x: float | None) -> str:
    """A rate per account-day, three significant digits."""
    return NONE if x is None else f"{x:.3g}"


def duration(seconds: float | None) -> str:
    """Seconds in the unit a reader takes in at a glance."""
    if seconds is None:
        return NONE
    if seconds < 120:
        return f"{seconds:.3g} s"
    if seconds < 7200:
        return f"{seconds / 60:.3g} min"
    if seconds < 172800:
        return f"{seconds / 3600:.3g} h"
    return f"{seconds / 86400:.3g} d"


def when(ts: float | None) -> str:
    """Epoch seconds as UTC time."""
    if ts is None:
        return NONE
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def number(x: float | None) -> str:
    """A count, or a median of counts."""
    if x is None:
        return NONE
    if float(x).is_integer():
        return f"{int(x):,}"
    return f"{x:,.1f}"


def plural(n: int, word: str) -> str:
    """'1 account', '2 accounts'."""
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}s"


def _count_share(n: int, of: float | None) -> str:
    return f"{n:,} ({pct(of)})"


def _reasons(counts: dict[str, int]) -> str:
    top = list(counts.items())[:TOP_REASONS]
    more = len(counts) - len(top)
    text = ", ".join(f"{r} {n:,}" for r, n in top) or NONE
    return text + (f", +{more} more" if more > 0 else "")


def _header(ev: Evaluation) -> list[str]:
    ln = ev.lines
    unlabelled = ln.unlabelled_no_account + ln.unlabelled_unknown_account
    out = [
        "# distill-guard evaluation",
        "",
        f"- Labels: `{ev.labels}`: {ln.label_accounts:,} accounts ({ln.campaign_accounts:,} "
        f"campaign, {ln.benign_accounts:,} benign), {ln.label_lines_skipped:,} lines skipped.",
        f"- Decisions: `{ev.decisions}`: {ln.decision_lines:,} lines, {ln.evaluated:,} "
        f"evaluated, {ln.skipped:,} skipped; "
        + (
            f"{unlabelled:,} unlabelled ({ln.unlabelled_no_account:,} without an account, "
            f"{ln.unlabelled_unknown_account:,} from "
            f"{plural(ln.unknown_accounts, 'account')} not in the labels)."
            if unlabelled
            else "none unlabelled."
        ),
    ]
    if ev.scenario is None:
        out.append("- Scenario: none.")
    elif ev.new_model is not None and ev.pivot_ts is not None:
        out.append(
            f"- Scenario: `{ev.scenario}`: pivot to `{ev.new_model}` at {when(ev.pivot_ts)}."
        )
    else:
        out.append(f"- Scenario: `{ev.scenario}` (without both `new_model` and a pivot time).")
    span = None if ev.start_ts is None or ev.end_ts is None else ev.end_ts - ev.start_ts
    out.append(
        f"- Simulated time: {when(ev.start_ts)} to {when(ev.end_ts)} ({duration(span)}); "
        f"buckets of {ev.bucket_seconds:g} s."
    )
    out += ["", "## Definitions", ""]
    out += [f"- **{k.replace('_', ' ')}**: {v}" for k, v in ev.definitions.items()]
    return out


def _campaign_rows(ev: Evaluation) -> list[CampaignFigures]:
    return [*ev.campaigns, ev.campaigns_total] if ev.campaigns else []


def _detection_cells(d: Detection) -> list[str]:
    if d.restricted_ts is None:
        return [NONE, "never", f"{d.requests_before:,} (all)", NONE, NONE]
    return [
        when(d.restricted_ts),
        duration(d.seconds),
        f"{d.requests_before:,}",
        d.reason or NONE,
        d.rule or NONE,
    ]


def _spread(s: Spread) -> list[str]:
    return [
        f"{s.accounts:,}",
        f"{duration(s.median_seconds)} / {duration(s.p90_seconds)}",
        f"{number(s.median_requests)} / {number(s.p90_requests)}",
    ]


def _campaigns(ev: Evaluation) -> list[str]:
    rows = _campaign_rows(ev)
    out = ["", "## Campaigns", ""]
    if not rows:
        return [*out, "No campaign accounts in the labels."]
    out += md_table(
        [
            "campaign",
            "accounts (active)",
            "restricted",
            "denied",
            "requests",
            "served in full",
            "leakage",
            "full after restriction",
        ],
        (
            [
                c.campaign,
                f"{c.accounts:,} ({c.active_accounts:,})",
                _count_share(c.restricted_accounts, c.restricted_share),
                _count_share(c.denied_accounts, c.denied_share),
                f"{c.requests:,}",
                f"{c.served_full:,}",
                f"{pct(c.leakage)} ({c.leaked:,})",
                _count_share(c.full_after_restriction, c.full_after_restriction_share),
            ]
            for c in rows
        ),
    )
    out += ["", "### Detection", ""]
    out += md_table(
        [
            "campaign",
            "first request",
            "first restriction",
            "after",
            "requests before",
            "reason",
            "rule",
            "accounts restricted",
            "time to restriction (median / p90)",
            "requests to restriction (median / p90)",
        ],
        (
            [
                c.campaign,
                when(c.detection.start_ts),
                *_detection_cells(c.detection),
                *_spread(c.time_to_restriction),
            ]
            for c in rows
        ),
    )
    by_reason = [
        [c.campaign, reason, duration(d.seconds), f"{d.requests_before:,}", d.rule or NONE]
        for c in rows
        for reason, d in c.first_restriction_by_reason.items()
    ]
    if by_reason:
        out += ["", "### First restriction by reason", ""]
        out += md_table(["campaign", "reason", "after", "requests before", "rule"], by_reason)
    if ev.new_model is not None and ev.pivot_ts is not None:
        out += ["", f"### After the pivot to `{ev.new_model}` at {when(ev.pivot_ts)}", ""]
        out += md_table(
            [
                "campaign",
                "requests on the new model",
                "first of them",
                "leakage",
                "full after restriction",
                "first restriction",
                "after the pivot",
                "requests before",
                "reason",
                "rule",
            ],
            (
                [
                    c.campaign,
                    f"{c.pivot.requests:,}",
                    when(c.pivot.first_request_ts),
                    f"{pct(c.pivot.leakage)} ({c.pivot.leaked:,})",
                    f"{c.pivot.full_after_restriction:,}",
                    *_detection_cells(c.pivot.detection),
                ]
                for c in rows
                if c.pivot is not None
            ),
        )
    return out


def _benign(ev: Evaluation) -> list[str]:
    out = ["", "## Benign accounts", ""]
    if not ev.benign:
        return [*out, "No benign accounts in the labels."]

    def row(b: BenignFigures) -> list[str]:
        return [
            b.name,
            f"{b.accounts:,} ({b.active_accounts:,})",
            f"{b.account_days:,}",
            f"{b.restricted_account_days:,}",
            rate(b.restricted_rate),
            f"{b.denied_account_days:,}",
            rate(b.denied_rate),
            f"{b.restricted_accounts:,}",
            f"{b.denied_accounts:,}",
            _reasons(b.restricted_requests_by_reason),
        ]

    out += md_table(
        [
            "group",
            "accounts (active)",
            "account-days",
            "restricted account-days",
            "per account-day",
            "denied account-days",
            "per account-day",
            "accounts restricted",
            "accounts denied",
            "top reasons (restricted requests)",
        ],
        [row(b) for b in [*ev.benign, *ev.benign_totals]],
    )
    return out


def _reasonmd_table(ev: Evaluation) -> list[str]:
    out = ["", "## Restricted and denied requests by reason", ""]
    if not ev.reasons:
        return [*out, "No request was restricted."]
    head = ["reason", "campaign restricted", "campaign denied", "benign restricted"]
    head += ["benign denied", "hard negatives restricted", "hard negatives denied"]
    out += md_table(
        head,
        (
            [
                r.reason,
                f"{r.campaign_restricted:,}",
                f"{r.campaign_denied:,}",
                f"{r.benign_restricted:,}",
                f"{r.benign_denied:,}",
                f"{r.hard_negative_restricted:,}",
                f"{r.hard_negative_denied:,}",
            ]
            for r in ev.reasons
        ),
    )
    return [*out, "", "(Benign here excludes hard negatives.)"]


def _series(ev: Evaluation) -> list[str]:
    out = ["", "## Over simulated time", ""]
    if not ev.series:
        return [*out, "No decisions."]
    if len(ev.series) > MAX_SERIES_ROWS:
        return [
            *out,
            f"{len(ev.series):,} buckets are too many for a table; "
            "see `series` in the JSON output, or choose a larger --bucket.",
        ]
    width = ev.bucket_seconds / 86400

    def row(b: Bucket) -> list[str]:
        return [
            f"{b.end_day - width:g}-{b.end_day:g}",
            f"{b.campaign_requests:,}",
            pct(b.leakage),
            pct(b.served_full_share),
            f"{b.campaign_accounts_restricted:,} / {b.campaign_accounts:,} "
            f"({pct(b.campaign_restricted_share)})",
            f"{b.benign.account_days:,}",
            rate(b.benign.restricted_rate),
            rate(b.benign.denied_rate),
            f"{b.hard_negative.account_days:,}",
            rate(b.hard_negative.restricted_rate),
            rate(b.hard_negative.denied_rate),
        ]

    out += [
        "Campaign columns are cumulative to the end of the bucket; benign columns count the "
        "account-days active within it (hard negatives apart).",
        "",
    ]
    out += md_table(
        [
            "days",
            "campaign requests so far",
            "leakage so far",
            "served in full so far",
            "campaign accounts restricted so far",
            "benign account-days",
            "restricted per account-day",
            "denied per account-day",
            "hard-negative account-days",
            "restricted per account-day",
            "denied per account-day",
        ],
        [row(b) for b in ev.series],
    )
    return out


def _problems(ev: Evaluation) -> list[str]:
    ln = ev.lines
    out = ["", "## Input problems", ""]
    notes: list[str] = []
    for name, kinds in ((ev.labels, ln.label_problems), (ev.decisions, ln.decision_problems)):
        if kinds:
            listed = ", ".join(f"{k} {n:,}" for k, n in kinds.items())
            skipped = plural(sum(kinds.values()), "line")
            notes.append(f"- `{name}`: {skipped} skipped ({listed}).")
    if ln.unlabelled_unknown_account:
        lines = ", ".join(str(n) for n in ln.unknown_account_first_lines)
        more = (
            ", ..." if ln.unlabelled_unknown_account > len(ln.unknown_account_first_lines) else ""
        )
        notes.append(
            f"- {plural(ln.unlabelled_unknown_account, 'decision')} from "
            f"{plural(ln.unknown_accounts, 'account')} not in the labels "
            f"(counted as unlabelled), lines {lines}{more}."
        )
    if ln.out_of_order:
        notes.append(
            f"- {plural(ln.out_of_order, 'decision')} earlier than a decision before it; "
            "counted in file order."
        )
    if not notes:
        return [*out, "None."]
    out += notes
    if ln.problems:
        out += ["", "First skipped lines:", ""]
        out += [f"- {md_cell(p)}" for p in ln.problems]
    return out


def render(ev: Evaluation) -> str:
    """The whole report."""
    parts = [
        _header(ev),
        _campaigns(ev),
        _benign(ev),
        _reasonmd_table(ev),
        _series(ev),
        _problems(ev),
    ]
    return "\n".join(line for part in parts for line in part) + "\n"
