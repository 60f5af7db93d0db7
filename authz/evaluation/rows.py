"""The rows of the report as running counts: one campaign, one benign group, one account.

Each request updates the rows its account counts in (its own group and the
totals); `figures()` turns a row into its finished, frozen counterpart.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from authz.evaluation.figures import (
    BenignFigures,
    CampaignFigures,
    Detection,
    PivotFigures,
    Spread,
    quantile,
    share,
)
from authz.evaluation.inputs import Decision, Label, Scenario

RESTRICTED, DENIED = 1, 2  # account-day flags
BENIGN_GROUP_ORDER = ("individual", "nat", "ci", "researcher")
_DIGITS = re.compile("([0-9]+)")


@dataclass(slots=True)
class First:
    """The first restricted request of a group, and how many of its requests came before."""

    ts: float
    requests_before: int
    account: str | None
    reason: str
    rule: str | None

    def detection(self, start_ts: float | None) -> Detection:
        """As a finished Detection, timed from `start_ts`."""
        return Detection(
            start_ts=start_ts,
            restricted_ts=self.ts,
            seconds=None if start_ts is None else self.ts - start_ts,
            requests_before=self.requests_before,
            account=self.account,
            reason=self.reason,
            rule=self.rule,
        )


def detection_from(first: First | None, start_ts: float | None, requests: int) -> Detection:
    """The Detection of a group: its first restriction, or none after all `requests`."""
    if first is not None:
        return first.detection(start_ts)
    return Detection(start_ts, None, None, requests, None, None, None)


class Account:
    """What is remembered about one labelled account between its requests."""

    __slots__ = (
        "benign_rows",
        "campaign_rows",
        "clusters",
        "day",
        "day_flags",
        "denied",
        "first_ts",
        "label",
        "requests",
        "restricted",
        "slot_bucket",
        "slot_flags",
    )

    def __init__(
        self,
        label: Label,
        campaign_rows: tuple[CampaignRow, ...],
        benign_rows: tuple[BenignRow, ...],
    ) -> None:
        self.label = label
        # every table row this account counts in: its own group's and the totals'
        self.campaign_rows = campaign_rows
        self.benign_rows = benign_rows
        self.first_ts = 0.0
        self.requests = 0
        self.restricted = False
        self.denied = False
        self.clusters: tuple[str, ...] = ()
        self.day: int | None = None  # benign only: the open account-day
        self.day_flags = 0
        self.slot_bucket = -1  # benign only: the open (bucket, day) of the series
        self.slot_flags = 0


class PivotRow:
    """A campaign's requests on the new model from the pivot on."""

    __slots__ = ("first", "first_ts", "full", "full_after", "leaked", "requests")

    def __init__(self) -> None:
        self.requests = self.full = self.leaked = self.full_after = 0
        self.first_ts: float | None = None
        self.first: First | None = None

    def count(self, d: Decision, held: bool) -> None:
        """One campaign request on the new model at or after the pivot."""
        if self.first_ts is None:
            self.first_ts = d.ts
        if d.full:
            self.full += 1
            if held:
                self.full_after += 1
            else:
                self.leaked += 1
        if d.restricted and self.first is None:
            self.first = First(d.ts, self.requests, d.account, d.reason, d.rule)
        self.requests += 1


class CampaignRow:
    """Running figures of one campaign, or of all campaigns together."""

    __slots__ = (
        "accounts",
        "active",
        "denied_accounts",
        "denied_by_reason",
        "first",
        "first_by_reason",
        "first_ts",
        "full",
        "full_after",
        "leaked",
        "name",
        "pivot",
        "requests",
        "restricted_accounts",
        "restricted_by_reason",
        "to_restriction_n",
        "to_restriction_s",
    )

    def __init__(self, name: str, pivot: bool) -> None:
        self.name = name
        self.accounts = self.active = self.restricted_accounts = self.denied_accounts = 0
        self.requests = self.full = self.leaked = self.full_after = 0
        self.first_ts: float | None = None
        self.first: First | None = None
        self.first_by_reason: dict[str, First] = {}
        self.restricted_by_reason: Counter[str] = Counter()
        self.denied_by_reason: Counter[str] = Counter()
        self.to_restriction_s: list[float] = []
        self.to_restriction_n: list[int] = []
        self.pivot = PivotRow() if pivot else None

    def count(self, d: Decision, acct: Account, held: bool, on_pivot: bool) -> None:
        """One request of `acct`; `held`: its account or a cluster of it was restricted before."""
        if self.first_ts is None:
            self.first_ts = d.ts
        if d.full:
            self.full += 1
            if held:
                self.full_after += 1
            else:
                self.leaked += 1
        if d.restricted:
            reason = d.reason
            self.restricted_by_reason[reason] += 1
            if d.denied:
                self.denied_by_reason[reason] += 1
                if not acct.denied:
                    self.denied_accounts += 1
            if reason not in self.first_by_reason:
                first = First(d.ts, self.requests, d.account, reason, d.rule)
                self.first_by_reason[reason] = first
                if self.first is None:
                    self.first = first
            if not acct.restricted:
                self.restricted_accounts += 1
                self.to_restriction_s.append(d.ts - acct.first_ts)
                self.to_restriction_n.append(acct.requests)
        if on_pivot and self.pivot is not None:
            self.pivot.count(d, held)
        self.requests += 1

    def figures(self, scenario: Scenario) -> CampaignFigures:
        """The finished row."""
        pivot = None
        if self.pivot is not None and scenario.new_model is not None:
            p, pivot_ts = self.pivot, scenario.pivot_ts
            pivot = PivotFigures(
                new_model=scenario.new_model,
                pivot_ts=float(pivot_ts or 0.0),
                requests=p.requests,
                first_request_ts=p.first_ts,
                served_full=p.full,
                leaked=p.leaked,
                leakage=share(p.leaked, p.requests),
                full_after_restriction=p.full_after,
                detection=detection_from(p.first, pivot_ts, p.requests),
            )
        return CampaignFigures(
            campaign=self.name,
            accounts=self.accounts,
            active_accounts=self.active,
            restricted_accounts=self.restricted_accounts,
            restricted_share=share(self.restricted_accounts, self.active),
            denied_accounts=self.denied_accounts,
            denied_share=share(self.denied_accounts, self.active),
            requests=self.requests,
            served_full=self.full,
            leaked=self.leaked,
            leakage=share(self.leaked, self.requests),
            full_after_restriction=self.full_after,
            full_after_restriction_share=share(self.full_after, self.requests),
            detection=detection_from(self.first, self.first_ts, self.requests),
            first_restriction_by_reason={
                r: f.detection(self.first_ts) for r, f in self.first_by_reason.items()
            },
            time_to_restriction=Spread(
                accounts=len(self.to_restriction_s),
                median_seconds=quantile(self.to_restriction_s, 0.5),
                p90_seconds=quantile(self.to_restriction_s, 0.9),
                median_requests=quantile(self.to_restriction_n, 0.5),
                p90_requests=quantile(self.to_restriction_n, 0.9),
            ),
            restricted_requests_by_reason=dict(self.restricted_by_reason.most_common()),
            denied_requests_by_reason=dict(self.denied_by_reason.most_common()),
            pivot=pivot,
        )


class BenignRow:
    """Running figures of one benign group (hard negatives apart), or of a total."""

    __slots__ = (
        "account_days",
        "accounts",
        "active",
        "denied_accounts",
        "denied_by_reason",
        "denied_days",
        "denied_requests",
        "group",
        "hard_negative",
        "name",
        "requests",
        "restricted_accounts",
        "restricted_by_reason",
        "restricted_days",
        "restricted_requests",
    )

    def __init__(self, name: str, group: str | None, hard_negative: bool | None) -> None:
        self.name, self.group, self.hard_negative = name, group, hard_negative
        self.accounts = self.active = self.requests = 0
        self.restricted_requests = self.denied_requests = 0
        self.account_days = self.restricted_days = self.denied_days = 0
        self.restricted_accounts = self.denied_accounts = 0
        self.restricted_by_reason: Counter[str] = Counter()
        self.denied_by_reason: Counter[str] = Counter()

    def count(self, d: Decision, acct: Account) -> None:
        """One request of `acct` (whose flags still say what it was before this request)."""
        self.requests += 1
        if d.restricted:
            self.restricted_requests += 1
            self.restricted_by_reason[d.reason] += 1
            if not acct.restricted:
                self.restricted_accounts += 1
            if d.denied:
                self.denied_requests += 1
                self.denied_by_reason[d.reason] += 1
                if not acct.denied:
                    self.denied_accounts += 1

    def close_day(self, flags: int) -> None:
        """Count one finished account-day with its RESTRICTED/DENIED flags."""
        self.account_days += 1
        if flags & RESTRICTED:
            self.restricted_days += 1
        if flags & DENIED:
            self.denied_days += 1

    def figures(self) -> BenignFigures:
        """The finished row."""
        return BenignFigures(
            name=self.name,
            group=self.group,
            hard_negative=self.hard_negative,
            accounts=self.accounts,
            active_accounts=self.active,
            requests=self.requests,
            restricted_requests=self.restricted_requests,
            denied_requests=self.denied_requests,
            account_days=self.account_days,
            restricted_account_days=self.restricted_days,
            restricted_rate=share(self.restricted_days, self.account_days),
            denied_account_days=self.denied_days,
            denied_rate=share(self.denied_days, self.account_days),
            restricted_accounts=self.restricted_accounts,
            denied_accounts=self.denied_accounts,
            restricted_requests_by_reason=dict(self.restricted_by_reason.most_common()),
            denied_requests_by_reason=dict(self.denied_by_reason.most_common()),
        )


def natural(text: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that puts campaign-2 before campaign-10."""
    return tuple(
        (0, int(part)) if part[0] in "0123456789" else (1, part)
        for part in _DIGITS.split(text)
        if part
    )


def benign_key(row: BenignRow) -> tuple[int, tuple[tuple[int, int | str], ...], bool]:
    """Sort key: the known groups in their usual order, then others; hard negatives after."""
    group = row.group or ""
    known = (
        BENIGN_GROUP_ORDER.index(group) if group in BENIGN_GROUP_ORDER else len(BENIGN_GROUP_ORDER)
    )
    return known, natural(group), bool(row.hard_negative)
