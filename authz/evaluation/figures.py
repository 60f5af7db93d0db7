"""The finished figures of an evaluation, as frozen dataclasses.

`dataclasses.asdict(evaluation)` is the `--json` output and evaluation.json;
the Markdown report and the chart read the same objects. Shares and rates are
plain fractions (0.25, not 25); they are None when their denominator is zero.
Times are epoch seconds, durations seconds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

# The definitions behind the numbers, printed in the report and kept in the JSON.
DEFINITIONS: dict[str, str] = {
    "served_in_full": 'action "allow", exposure "full" and restricted false.',
    "restricted": (
        'restricted true or action "deny": anything short of what the account\'s tier '
        "normally gets (an allowed request at the tier's usual summary exposure is not restricted)."
    ),
    "denied": 'action "deny".',
    "leakage": (
        "share of a campaign's requests served in full while neither their account nor any "
        "cluster the account had been seen in (signals.cluster, learnt as the decisions go) had "
        "had a restricted request yet. Requests served in full after that are counted "
        "separately as 'full after restriction'."
    ),
    "detection": (
        "from the campaign's first request to its first restricted request: the simulated time "
        "and the number of the campaign's requests before it; after a pivot, the same from "
        "pivot_ts over the campaign's requests on new_model at or after pivot_ts."
    ),
    "time_to_restriction": (
        "per restricted account, from its first request to its first restricted request "
        "(median and p90 by linear interpolation; accounts never restricted are left out)."
    ),
    "account_share": (
        "accounts restricted (or denied) as a share of the accounts with at least one request."
    ),
    "account_day": (
        "an account and a UTC day (counted from the day of the first decision) with at least "
        "one request; it is restricted (denied) when at least one of those requests was."
    ),
    "bucket": (
        "--bucket seconds counted from the first decision. Campaign figures are cumulative to "
        "the end of the bucket (accounts restricted so far out of accounts seen so far); benign "
        "rates count the account-days active in the bucket (an account-day that straddles a "
        "bucket edge counts in both, each with its own requests)."
    ),
}


def share(part: int, whole: int) -> float | None:
    """part / whole, or None for an empty whole."""
    return part / whole if whole else None


def quantile(values: Sequence[float], q: float) -> float | None:
    """The q-quantile of `values` by linear interpolation between ranks (None when empty)."""
    if not values:
        return None
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass(frozen=True, slots=True)
class Detection:
    """The first restricted request counted from `start_ts`; restricted_ts None if none came."""

    start_ts: float | None
    restricted_ts: float | None
    seconds: float | None
    requests_before: int  # the group's requests before the first restricted one (all, if none)
    account: str | None
    reason: str | None
    rule: str | None


@dataclass(frozen=True, slots=True)
class Spread:
    """Time and requests to restriction over the accounts that were restricted."""

    accounts: int
    median_seconds: float | None
    p90_seconds: float | None
    median_requests: float | None
    p90_requests: float | None


@dataclass(frozen=True, slots=True)
class PivotFigures:
    """A campaign's requests on the new model from the pivot on."""

    new_model: str
    pivot_ts: float
    requests: int
    first_request_ts: float | None
    served_full: int
    leaked: int
    leakage: float | None
    full_after_restriction: int
    detection: Detection


@dataclass(frozen=True, slots=True)
class CampaignFigures:
    """One campaign, or all campaigns together (campaign "all campaigns")."""

    campaign: str
    accounts: int  # labelled
    active_accounts: int
    restricted_accounts: int
    restricted_share: float | None
    denied_accounts: int
    denied_share: float | None
    requests: int
    served_full: int
    leaked: int
    leakage: float | None
    full_after_restriction: int
    full_after_restriction_share: float | None
    detection: Detection
    first_restriction_by_reason: dict[str, Detection]
    time_to_restriction: Spread
    restricted_requests_by_reason: dict[str, int]
    denied_requests_by_reason: dict[str, int]
    pivot: PivotFigures | None


@dataclass(frozen=True, slots=True)
class BenignFigures:
    """One benign group (hard negatives apart), or a total over groups."""

    name: str  # what the report shows: "nat", "nat (hard negative)", "all benign", ...
    group: str | None  # None for totals
    hard_negative: bool | None  # None for the total over everyone
    accounts: int
    active_accounts: int
    requests: int
    restricted_requests: int
    denied_requests: int
    account_days: int
    restricted_account_days: int
    restricted_rate: float | None  # per account-day
    denied_account_days: int
    denied_rate: float | None
    restricted_accounts: int
    denied_accounts: int
    restricted_requests_by_reason: dict[str, int]
    denied_requests_by_reason: dict[str, int]


@dataclass(frozen=True, slots=True)
class ReasonRow:
    """Restricted and denied requests of one reason, by kind of account."""

    reason: str
    campaign_restricted: int
    campaign_denied: int
    benign_restricted: int
    benign_denied: int
    hard_negative_restricted: int
    hard_negative_denied: int


@dataclass(frozen=True, slots=True)
class DayRates:
    """Benign account-days active in one bucket and how many were restricted or denied."""

    account_days: int
    restricted: int
    denied: int
    restricted_rate: float | None
    denied_rate: float | None


@dataclass(frozen=True, slots=True)
class Bucket:
    """One bucket of simulated time: campaign figures so far, benign rates within it."""

    index: int
    start_ts: float
    end_day: float  # the bucket's end, in days since the first decision (the chart's x)
    campaign_requests: int
    campaign_served_full: int
    campaign_leaked: int
    leakage: float | None
    served_full_share: float | None
    campaign_accounts: int  # seen so far
    campaign_accounts_restricted: int
    campaign_restricted_share: float | None
    benign: DayRates  # hard negatives excluded
    hard_negative: DayRates


@dataclass(frozen=True, slots=True)
class Lines:
    """How the input lines were used."""

    label_accounts: int
    campaign_accounts: int
    benign_accounts: int
    label_lines_skipped: int
    decision_lines: int  # non-blank
    evaluated: int
    skipped: int
    unlabelled_no_account: int
    unlabelled_unknown_account: int
    unknown_accounts: int  # distinct
    unknown_account_first_lines: list[int]
    out_of_order: int  # decisions earlier than a decision before them
    label_problems: dict[str, int]  # skipped label lines by kind
    decision_problems: dict[str, int]  # skipped decision lines by kind
    problems: list[str]  # the first few, "file:line: problem"


@dataclass(frozen=True, slots=True)
class Evaluation:
    """Everything `distill-guard evaluate` reports."""

    labels: str
    decisions: str
    scenario: str | None
    new_model: str | None
    pivot_ts: float | None
    bucket_seconds: float
    start_ts: float | None
    end_ts: float | None
    definitions: dict[str, str]
    lines: Lines
    campaigns: list[CampaignFigures]
    campaigns_total: CampaignFigures
    benign: list[BenignFigures]
    benign_totals: list[BenignFigures]
    reasons: list[ReasonRow]
    series: list[Bucket]
