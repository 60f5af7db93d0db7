"""Running counts over a stream of decisions, with state per account rather than per line.

Memory grows with the number of accounts, restricted accounts and buckets,
never with the number of decisions. Decisions are taken in file order, which is
traffic order: "before the first restriction" means earlier in the file, and
cluster membership is learnt as the lines go by (an account joins every
cluster named in its lines' signals.cluster, from that line on).

A benign account's account-day is closed when its next request falls on
another day or in another bucket, so decisions out of time order (counted as
`out_of_order`) can count an account-day twice.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping

from authz.evaluation.figures import (
    DEFINITIONS,
    Bucket,
    DayRates,
    Evaluation,
    Lines,
    ReasonRow,
    share,
)
from authz.evaluation.inputs import Decision, Label, Problems, Scenario
from authz.evaluation.rows import (
    DENIED,
    RESTRICTED,
    Account,
    BenignRow,
    CampaignRow,
    benign_key,
    natural,
)

DAY = 86400
ALL_CAMPAIGNS = "all campaigns"
# campaign series, per bucket: requests, served in full, leaked, accounts seen, accounts restricted
C_REQ, C_FULL, C_LEAK, C_SEEN, C_RESTRICTED = range(5)
# benign series, per bucket: [ordinary, then hard negatives] x (account-days, restricted, denied)
HARD_NEGATIVE_OFFSET = 3
KEEP_UNKNOWN_LINES = 20


class Evaluator:
    """Feed it decisions in file order with `add`, then call `finish` once."""

    def __init__(self, labels: Mapping[str, Label], scenario: Scenario, bucket_seconds: float):
        if not (math.isfinite(bucket_seconds) and bucket_seconds > 0):
            raise ValueError("bucket_seconds must be a positive number")
        self._labels = labels
        self._scenario = scenario
        self._pivot_model = scenario.new_model if scenario.has_pivot else None
        self._pivot_ts = scenario.pivot_ts or 0.0
        self._bucket = bucket_seconds
        self._accounts: dict[str, Account] = {}
        self._restricted_clusters: set[str] = set()
        self._campaigns: dict[str, CampaignRow] = {}
        self._all = CampaignRow(ALL_CAMPAIGNS, scenario.has_pivot)
        self._benign: dict[tuple[str, bool], BenignRow] = {}
        self._benign_totals = (
            BenignRow("all ordinary benign", None, False),
            BenignRow("all hard negatives", None, True),
            BenignRow("all benign", None, None),
        )
        self._campaign_series: dict[int, list[int]] = {}
        self._benign_series: dict[int, list[int]] = {}
        self._t0: float | None = None
        self._day0 = 0
        self._max_ts = 0.0
        self._evaluated = self._out_of_order = 0
        self._no_account = self._unknown_lines = 0
        self._unknown: set[str] = set()
        self._unknown_first_lines: list[int] = []
        for label in labels.values():
            campaign_rows, benign_rows = self._rows(label)
            for campaign in campaign_rows:
                campaign.accounts += 1
            for group in benign_rows:
                group.accounts += 1

    def _rows(self, label: Label) -> tuple[tuple[CampaignRow, ...], tuple[BenignRow, ...]]:
        """The table rows an account with this label counts in."""
        if label.campaign:
            own = self._campaigns.get(label.group)
            if own is None:
                own = self._campaigns[label.group] = CampaignRow(
                    label.group, self._all.pivot is not None
                )
            return (own, self._all), ()
        key = (label.group, label.hard_negative)
        row = self._benign.get(key)
        if row is None:
            name = f"{label.group} (hard negative)" if label.hard_negative else label.group
            row = self._benign[key] = BenignRow(name, label.group, label.hard_negative)
        split = self._benign_totals[1 if label.hard_negative else 0]
        return (), (row, split, self._benign_totals[2])

    def add(self, d: Decision) -> None:
        """Count one decision."""
        ts = d.ts
        if self._t0 is None:
            self._t0 = self._max_ts = ts
            self._day0 = int(ts // DAY)
        elif ts < self._max_ts:
            self._out_of_order += 1
        else:
            self._max_ts = ts
        self._evaluated += 1
        account = d.account
        label = None if account is None else self._labels.get(account)
        if account is None or label is None:
            self._unlabelled(d)
            return
        bucket = max(0, int((ts - self._t0) // self._bucket))
        acct = self._accounts.get(account)
        if acct is None:
            acct = self._open(account, label, ts, bucket)
        if d.cluster is not None and d.cluster not in acct.clusters:
            acct.clusters = (*acct.clusters, d.cluster)
        if label.campaign:
            self._campaign_request(d, acct, bucket)
        else:
            self._benign_request(d, acct, bucket)
        if d.restricted:
            # every cluster the account is known to be in counts as restricted from now on
            self._restricted_clusters.update(acct.clusters)
            acct.restricted = True
            if d.denied:
                acct.denied = True
        acct.requests += 1

    def _unlabelled(self, d: Decision) -> None:
        if d.account is None:
            self._no_account += 1
        else:
            self._unknown_lines += 1
            self._unknown.add(d.account)
            if len(self._unknown_first_lines) < KEEP_UNKNOWN_LINES:
                self._unknown_first_lines.append(d.line)
        if d.restricted and d.cluster is not None:
            self._restricted_clusters.add(d.cluster)

    def _open(self, account: str, label: Label, ts: float, bucket: int) -> Account:
        acct = Account(label, *self._rows(label))
        acct.first_ts = ts
        for campaign in acct.campaign_rows:
            campaign.active += 1
        for group in acct.benign_rows:
            group.active += 1
        if label.campaign:
            self._campaign_slot(bucket)[C_SEEN] += 1
        self._accounts[account] = acct
        return acct

    def _campaign_slot(self, bucket: int) -> list[int]:
        slot = self._campaign_series.get(bucket)
        if slot is None:
            slot = self._campaign_series[bucket] = [0] * 5
        return slot

    def _campaign_request(self, d: Decision, acct: Account, bucket: int) -> None:
        held = acct.restricted or (
            bool(acct.clusters) and not self._restricted_clusters.isdisjoint(acct.clusters)
        )
        slot = self._campaign_slot(bucket)
        slot[C_REQ] += 1
        if d.full:
            slot[C_FULL] += 1
            if not held:
                slot[C_LEAK] += 1
        if d.restricted and not acct.restricted:
            slot[C_RESTRICTED] += 1
        on_pivot = self._pivot_model is not None and (
            d.model == self._pivot_model and d.ts >= self._pivot_ts
        )
        for row in acct.campaign_rows:
            row.count(d, acct, held, on_pivot)

    def _benign_request(self, d: Decision, acct: Account, bucket: int) -> None:
        day = int(d.ts // DAY) - self._day0
        if day != acct.day or bucket != acct.slot_bucket:
            if acct.slot_bucket >= 0:
                self._close_slot(acct)
            acct.slot_bucket, acct.slot_flags = bucket, 0
            if day != acct.day:
                if acct.day is not None:
                    self._close_day(acct)
                acct.day, acct.day_flags = day, 0
        if d.restricted:
            flags = RESTRICTED | DENIED if d.denied else RESTRICTED
            acct.day_flags |= flags
            acct.slot_flags |= flags
        for row in acct.benign_rows:
            row.count(d, acct)

    def _close_day(self, acct: Account) -> None:
        for row in acct.benign_rows:
            row.close_day(acct.day_flags)

    def _close_slot(self, acct: Account) -> None:
        slot = self._benign_series.get(acct.slot_bucket)
        if slot is None:
            slot = self._benign_series[acct.slot_bucket] = [0] * (2 * HARD_NEGATIVE_OFFSET)
        base = HARD_NEGATIVE_OFFSET if acct.label.hard_negative else 0
        slot[base] += 1
        if acct.slot_flags & RESTRICTED:
            slot[base + 1] += 1
        if acct.slot_flags & DENIED:
            slot[base + 2] += 1

    def finish(
        self,
        *,
        labels_path: str,
        decisions_path: str,
        scenario_path: str | None,
        problems: Problems,
    ) -> Evaluation:
        """Close the open account-days and return the figures."""
        for acct in self._accounts.values():
            if acct.day is not None:
                self._close_slot(acct)
                self._close_day(acct)
                acct.day, acct.slot_bucket = None, -1
        campaigns = [
            self._campaigns[k].figures(self._scenario) for k in sorted(self._campaigns, key=natural)
        ]
        benign = [row.figures() for row in sorted(self._benign.values(), key=benign_key)]
        skipped = problems.count(decisions_path)
        n_campaign = sum(1 for label in self._labels.values() if label.campaign)
        lines = Lines(
            label_accounts=len(self._labels),
            campaign_accounts=n_campaign,
            benign_accounts=len(self._labels) - n_campaign,
            label_lines_skipped=problems.count(labels_path),
            decision_lines=self._evaluated + skipped,
            evaluated=self._evaluated,
            skipped=skipped,
            unlabelled_no_account=self._no_account,
            unlabelled_unknown_account=self._unknown_lines,
            unknown_accounts=len(self._unknown),
            unknown_account_first_lines=list(self._unknown_first_lines),
            out_of_order=self._out_of_order,
            label_problems=problems.kinds(labels_path),
            decision_problems=problems.kinds(decisions_path),
            problems=[str(p) for p in problems.first],
        )
        return Evaluation(
            labels=labels_path,
            decisions=decisions_path,
            scenario=scenario_path,
            new_model=self._scenario.new_model,
            pivot_ts=self._scenario.pivot_ts,
            bucket_seconds=self._bucket,
            start_ts=self._t0,
            end_ts=None if self._t0 is None else self._max_ts,
            definitions=dict(DEFINITIONS),
            lines=lines,
            campaigns=campaigns,
            campaigns_total=self._all.figures(self._scenario),
            benign=benign,
            benign_totals=[row.figures() for row in self._benign_totals],
            reasons=self._reasons(),
            series=self._series(),
        )

    def _reasons(self) -> list[ReasonRow]:
        ordinary, hard, _ = self._benign_totals
        counts = (
            self._all.restricted_by_reason,
            self._all.denied_by_reason,
            ordinary.restricted_by_reason,
            ordinary.denied_by_reason,
            hard.restricted_by_reason,
            hard.denied_by_reason,
        )
        total: Counter[str] = Counter()
        for restricted in counts[0::2]:
            total.update(restricted)
        order = sorted(total, key=lambda r: (-total[r], r))
        return [ReasonRow(r, *(c.get(r, 0) for c in counts)) for r in order]

    def _series(self) -> list[Bucket]:
        if self._t0 is None:
            return []
        buckets: list[Bucket] = []
        so_far = [0] * 5
        nothing = [0] * 5
        empty = [0] * (2 * HARD_NEGATIVE_OFFSET)
        last = int((self._max_ts - self._t0) // self._bucket)
        for index in range(last + 1):
            for i, n in enumerate(self._campaign_series.get(index, nothing)):
                so_far[i] += n
            benign = self._benign_series.get(index, empty)
            buckets.append(
                Bucket(
                    index=index,
                    start_ts=self._t0 + index * self._bucket,
                    end_day=(index + 1) * self._bucket / DAY,
                    campaign_requests=so_far[C_REQ],
                    campaign_served_full=so_far[C_FULL],
                    campaign_leaked=so_far[C_LEAK],
                    leakage=share(so_far[C_LEAK], so_far[C_REQ]),
                    served_full_share=share(so_far[C_FULL], so_far[C_REQ]),
                    campaign_accounts=so_far[C_SEEN],
                    campaign_accounts_restricted=so_far[C_RESTRICTED],
                    campaign_restricted_share=share(so_far[C_RESTRICTED], so_far[C_SEEN]),
                    benign=_rates(benign[:HARD_NEGATIVE_OFFSET]),
                    hard_negative=_rates(benign[HARD_NEGATIVE_OFFSET:]),
                )
            )
        return buckets


def _rates(slot: list[int]) -> DayRates:
    days, restricted, denied = slot
    return DayRates(days, restricted, denied, share(restricted, days), share(denied, days))
