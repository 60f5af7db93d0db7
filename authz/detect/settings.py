"""Thresholds and weights of the off-path analysis (`detection.analysis` in the rules file).

Every default comes from benign baselines: the analysis was run over benign-only
simulated populations and each threshold sits above what benign clusters reach,
with margin (docs/detection.md, "Benign baselines"). Change them the same way:
measure benign traffic first, never the campaign you want to catch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from authz.errors import ConfigError, format_validation_error
from authz.metering.result import MAX_NEAR_BITS
from authz.schema import StrictModel

# The kinds of evidence; a restriction needs several of them (see `min_kinds`).
Kind = Literal["content", "behaviour", "identity", "infrastructure"]


class Component(StrictModel):
    """One named piece of cluster evidence: a ramp from `start` to `full`, and its weight."""

    start: float = Field(description="Value at which the evidence starts to count.")
    full: float = Field(description="Value at which it counts fully (strength 1).")
    weight: float = Field(ge=0, description="Its weight in the cluster score.")

    @model_validator(mode="after")
    def _ordered(self) -> Component:
        if self.full == self.start:
            raise ValueError("'full' must differ from 'start'")
        return self

    def strength(self, value: float) -> float:
        """How strongly `value` shows the evidence, 0 to 1 (a ramp may also run downwards)."""
        return min(1.0, max(0.0, (value - self.start) / (self.full - self.start)))


class Components(StrictModel):
    """The score components, each computed over a cluster's members within the window."""

    template_spread: Component = Field(
        default=Component(start=8, full=20, weight=1.0),
        description="Most distinct identities seen on one of the cluster's shared template "
        "clusters within one hour.",
    )
    template_concentration: Component = Field(
        default=Component(start=0.4, full=0.8, weight=1.0),
        description="Members' median share of their requests on shared template clusters.",
    )
    elicitation: Component = Field(
        default=Component(start=0.35, full=0.6, weight=1.0),
        description="Mean reasoning-elicitation score of the cluster's requests.",
    )
    regular_timing: Component = Field(
        default=Component(start=0.2, full=0.6, weight=1.0),
        description="Share of members (with enough requests) whose gaps between requests "
        "have a coefficient of variation at or below `timing.cv_regular`.",
    )
    model_pivot: Component = Field(
        default=Component(start=0.3, full=0.7, weight=0.75),
        description="Share of the cluster's requests within `pivot_window` of a new model's "
        "first appearance that use that model.",
    )
    new_accounts: Component = Field(
        default=Component(start=0.2, full=0.6, weight=0.75),
        description="Share of members opened within `new_account_days`.",
    )
    unverified: Component = Field(
        default=Component(start=0.4, full=0.8, weight=0.5),
        description="Share of members whose KYC is not verified.",
    )
    signup_cohort: Component = Field(
        default=Component(start=0.2, full=0.6, weight=0.5),
        description="Share of members opened in a sign-up cohort (several accounts within "
        "`cohort.gap` of each other, same client fingerprint).",
    )
    proxy_pool: Component = Field(
        default=Component(start=2.5, full=5.0, weight=1.0),
        description="Members' median count of distinct networks (AS numbers, else /24s) "
        "over the window.",
    )
    network_churn: Component = Field(
        default=Component(start=0.5, full=0.9, weight=0.5),
        description="Members' median share of their requests, after the first, that came "
        "from a network (AS number, else /24) they had not used before in the window; "
        "members with a single request are left out. Rotating proxies show it from an "
        "account's second request, long before the count of networks grows.",
    )


KINDS: dict[str, Kind] = {
    "template_spread": "content",
    "template_concentration": "content",
    "elicitation": "content",
    "regular_timing": "behaviour",
    "model_pivot": "behaviour",
    "new_accounts": "identity",
    "unverified": "identity",
    "signup_cohort": "identity",
    "proxy_pool": "infrastructure",
    "network_churn": "infrastructure",
}
"""The kind of evidence each component is."""


class Linking(StrictModel):
    """What links two accounts into one cluster."""

    near_duplicate_bits: int = Field(
        default=7,
        ge=0,
        le=MAX_NEAR_BITS,
        description="Template SimHashes at most this many bits apart are near-duplicates. "
        "Every such pair is found: one of the four 16-bit bands differs in at most a quarter "
        "of the bits, and that many bits are probed around each band (the cost of ingest "
        "grows with it: 17 buckets a band up to 7 bits, 137 up to 11).",
    )
    min_template_chars: int = Field(
        default=64,
        ge=0,
        description="Prompts shorter than this many characters are left out of template "
        "linking (short prompts share templates by chance).",
    )
    shared_template_identities: int = Field(
        default=3,
        ge=2,
        description="Identities a template cluster needs within the window to count as shared.",
    )
    template_share: float = Field(
        default=0.3,
        ge=0,
        le=1,
        description="An account is linked by its shared templates only when at least this "
        "share of its requests is on shared template clusters.",
    )
    template_link_share: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="An account links through a shared template cluster only when that "
        "cluster carries at least this share of its requests: a request or two on a popular "
        "prompt frame links nothing.",
    )
    template_link_ratio: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="... and at least this fraction of what its main shared template cluster "
        "carries, so ordinary prompts mixed into templated traffic (cover traffic) link "
        "nothing.",
    )
    core_share: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="A group's core: the template clusters at least this share of its members "
        "(and two at least) are linked through, or `core_relative` of the members its most "
        "used template cluster links, whichever is fewer. Template links outside the core "
        "are dropped and the accounts linked again.",
    )
    core_relative: float = Field(
        default=0.25,
        ge=0,
        le=1,
        description="... so that a campaign spread evenly over many templates, each used by "
        "few of its accounts, keeps them all in its core.",
    )
    entity: bool = Field(default=True, description="Link accounts of one entity (strong link).")
    client_network: bool = Field(
        default=True,
        description="Weak link: the same client fingerprint from the same /24 (or /48) network.",
    )
    timing: bool = Field(
        default=True,
        description="Weak link: regular accounts with the same client fingerprint and a similar "
        "typical gap (synchronised, load-balancer-like timing).",
    )
    weak_meetings: int = Field(
        default=2,
        ge=1,
        description="Weak links two accounts must share to be linked (each /24 counts once, "
        "so do a sign-up cohort and a timing bucket): one alone is often chance.",
    )
    max_weak_key_accounts: int = Field(
        default=200,
        ge=2,
        description="A weak key shared by more accounts than this links none of them (too "
        "common to mean anything, and quadratic to count).",
    )
    cohort_gap: float = Field(
        default=300.0,
        gt=0,
        description="Seconds between sign-ups that keep a sign-up cohort together.",
    )
    cohort_min: int = Field(
        default=3, ge=2, description="Accounts with one client fingerprint that make a cohort."
    )
    max_bucket_pairs: int = Field(
        default=64,
        ge=1,
        description="Templates in one LSH bucket compared pairwise; beyond that each is "
        "compared with the first ones only (bounds the work on skewed buckets).",
    )


class Timing(StrictModel):
    """How regular timing is measured."""

    min_gaps: int = Field(
        default=5, ge=2, description="Gaps between requests an account needs to be judged."
    )
    cv_regular: float = Field(
        default=0.5,
        gt=0,
        description="Coefficient of variation of the gaps at or below which an account is regular.",
    )


class Thresholds(StrictModel):
    """Member scores (0 to 1, after the KYC multiplier) at which each action starts."""

    watch: float = Field(default=0.4, ge=0, description="Score of a watch verdict.")
    restrict: float = Field(default=0.55, ge=0, description="Score of a restrict verdict.")
    deny: float = Field(default=0.85, ge=0, description="Score of a deny verdict.")

    @model_validator(mode="after")
    def _ordered(self) -> Thresholds:
        if not self.watch <= self.restrict <= self.deny:
            raise ValueError("thresholds must be ordered: watch <= restrict <= deny")
        return self


class OwnedVerdicts(StrictModel):
    """What makes a template cluster or a network a restricted cluster's own, and its verdict.

    A campaign keeps opening accounts; a verdict on an account can only follow
    its first analysed requests, while one on what the campaign owns (its
    templates, the networks of its proxies) restricts the new account from its
    first request. A cluster owns a template cluster (near-duplicates joined)
    of its core, or a network (/24 or /48), when enough of the members its
    score restricts used it and no one else (at most `max_outsiders`) used it
    within the window, so the people on a popular prompt frame or behind a busy
    network never inherit a campaign's restriction.
    """

    enabled: bool = Field(default=True, description="Write these verdicts.")
    action: Literal["watch", "restrict"] = Field(
        default="restrict",
        description="What the verdict does (deny is never inferred from a template or a "
        "network alone).",
    )
    min_identities: int = Field(
        default=3,
        ge=1,
        description="Identities among the members the cluster's score restricts that used "
        "it within the window (for a template cluster before each member's own checks, for "
        "a network after them).",
    )
    max_outsiders: int = Field(
        default=0,
        ge=0,
        description="Identities outside the cluster that may have used it within the window.",
    )
    max_per_cluster: int = Field(
        default=1000,
        ge=1,
        description="Owned SimHashes (or networks) per cluster at most, those most members "
        "used first.",
    )
    max_total: int = Field(
        default=20000,
        ge=1,
        description="Owned SimHashes (or networks) at most over all clusters, those of the "
        "highest-scoring clusters first: bounds the keys written per analysis.",
    )


class NetworkVerdicts(OwnedVerdicts):
    """Verdicts on the networks a restricted cluster owns (see OwnedVerdicts).

    One key per network, `dg:v:{n:<network>}`, in the slot of the network's
    pool counter, so the request path reads it in the call it already makes.
    Stricter than for templates: only members restricted on their own evidence
    count towards `min_identities`, and every other identity that used the
    network, cluster member or not, is an outsider.
    """


class TemplateVerdicts(OwnedVerdicts):
    """Verdicts on the templates a restricted cluster owns (see OwnedVerdicts).

    The SimHashes of an owned template cluster get verdicts, applied to every
    request near one of them, and a member whose every request is on owned
    template clusters may be restricted (never denied) with fewer than
    `member_min_requests`.
    """

    max_per_key: int = Field(
        default=64,
        ge=1,
        description="SimHashes kept under one band value (those of the highest-scoring "
        "clusters first): bounds what one request reads.",
    )


class AnalysisSettings(StrictModel):
    """The off-path analysis: linking, scoring and verdicts (docs/detection.md)."""

    shadow: bool = Field(
        default=False,
        description="Compute and log verdicts, but write every one as `watch`.",
    )
    window: float = Field(
        default=86400.0, gt=0, description="Seconds of history the analysis looks at."
    )
    interval: float = Field(
        default=60.0, gt=0, description="Seconds of record time between two analyses."
    )
    verdict_ttl: float = Field(
        default=3600.0,
        gt=0,
        description="Seconds a verdict lasts unless a later analysis renews it.",
    )
    max_events_per_account: int = Field(
        default=256,
        ge=8,
        description="Requests kept per account (the newest); bounds memory for heavy users.",
    )
    max_accounts: int = Field(
        default=1_000_000,
        ge=1,
        description="Accounts kept at most; the longest idle ones are dropped first.",
    )
    new_account_days: float = Field(
        default=14.0, gt=0, description="An account opened this many days ago or less is new."
    )
    pivot_window: float = Field(
        default=86400.0,
        gt=0,
        description="Seconds after a model's first appearance during which using it counts "
        "as a pivot.",
    )
    pivot_warmup: float = Field(
        default=3600.0,
        ge=0,
        description="Models first seen within this many seconds of the analysis' first record "
        "are taken as old, not new.",
    )
    linking: Linking = Field(default_factory=Linking, description="What links accounts.")
    timing: Timing = Field(default_factory=Timing, description="How regularity is judged.")
    components: Components = Field(
        default_factory=Components, description="The score components and their weights."
    )
    fire: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="Strength at which a component counts as evidence (is named in reasons).",
    )
    min_kinds: int = Field(
        default=3,
        ge=1,
        le=4,
        description="Kinds of evidence (content, behaviour, identity, infrastructure) a cluster "
        "needs before it is restricted or denied; with fewer it is at most watched.",
    )
    full_identities: int = Field(
        default=5,
        ge=1,
        description="Distinct identities (verified accounts count once per entity) a cluster "
        "needs for its score to count in full; fewer scale it down proportionally.",
    )
    member_min_requests: int = Field(
        default=3, ge=1, description="Requests within the window a member needs for a verdict."
    )
    member_min_kinds: int = Field(
        default=2,
        ge=0,
        le=4,
        description="Kinds of evidence a member must show on its own to share its cluster's "
        "restriction (else it is watched only).",
    )
    thresholds: Thresholds = Field(
        default_factory=Thresholds, description="Member scores at which actions start."
    )
    template_verdicts: TemplateVerdicts = Field(
        default_factory=TemplateVerdicts,
        description="Verdicts on a restricted cluster's own templates.",
    )
    network_verdicts: NetworkVerdicts = Field(
        default_factory=NetworkVerdicts,
        description="Verdicts on a restricted cluster's own networks.",
    )
    kyc_multipliers: dict[str, float] = Field(
        default_factory=lambda: {
            "verified": 1.0,
            "pending": 1.15,
            "unverified": 1.3,
            "rejected": 1.5,
        },
        description="Cluster score multiplier per KYC status of the member (others: 1.0), so "
        "unverified accounts are restricted sooner.",
    )


def load_settings(path: Path) -> AnalysisSettings:
    """Read AnalysisSettings alone from a YAML file (an empty file gives the defaults)."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), "", f"cannot read: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), "", f"invalid YAML: {exc}") from None
    try:
        return AnalysisSettings.model_validate(doc or {})
    except ValidationError as exc:
        raise format_validation_error(str(path), exc) from None
