"""The `events` section of the rules file: which incidents are reportable (docs/events.md).

Each kind says whether it is on, how severe it is, what makes it reportable,
and its `cooldown`: an incident stays open while it goes on and for
`cooldown` after its latest sighting, and is reported once in that time.
Durations are written as the limits write their windows (`90s`, `10m`, `1h`, `1d`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import Field, field_validator

from authz.metering.rules import window_seconds
from authz.schema import StrictModel

Severity = Literal["info", "low", "medium", "high", "critical"]
KINDS = ("campaign_cluster", "restricted_jurisdiction", "unverified_signup_burst")


def _duration(text: str) -> str:
    try:
        window_seconds(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a duration: a whole number and a unit s, m, h or d "
            "(e.g. 90s, 10m, 6h), at most 31d"
        ) from None
    return text


def seconds(text: str) -> float:
    """Seconds in a duration the section validated (`90s`, `10m`, `6h`, `1d`)."""
    return float(window_seconds(text))


class CampaignCluster(StrictModel):
    """A cluster of the off-path analysis that looks like a distillation campaign."""

    enabled: bool = Field(default=True, description="Report such clusters.")
    severity: Severity = Field(default="high", description="Severity the events carry.")
    min_score: float | None = Field(
        default=None,
        ge=0,
        description="Cluster score (0 to ~1) at which a cluster is reportable; null: the "
        "analysis' restrict threshold (detection.analysis.thresholds.restrict).",
    )
    min_accounts: int = Field(
        default=5, ge=2, description="Accounts the cluster must hold at least."
    )
    cooldown: str = Field(
        default="6h",
        description="How long a cluster must stay below the thresholds (or be gone) before "
        "it counts as a new incident. A cluster that keeps its id, or whose accounts are "
        "mostly an open incident's, is that incident.",
    )

    _cooldown = field_validator("cooldown")(_duration)


class RestrictedJurisdiction(StrictModel):
    """Requests denied by a jurisdiction rule (in dry-run mode: those that would be)."""

    enabled: bool = Field(default=True, description="Report such attempts.")
    severity: Severity = Field(default="medium", description="Severity the events carry.")
    rules: list[str] = Field(
        default=[],
        description="Ids of `jurisdiction.rules` deny rules whose denials are reportable "
        "(another id is an error); empty: every rule's.",
    )
    per: Literal["network", "account"] = Field(
        default="network",
        description="One incident per rule and client network (/24 or /48), or per rule "
        "and account.",
    )
    min_requests: int = Field(
        default=1, ge=1, description="Denied requests an incident needs before it is reported."
    )
    cooldown: str = Field(
        default="1h",
        description="Quiet time after the latest denial that closes the incident.",
    )

    _cooldown = field_validator("cooldown")(_duration)


class UnverifiedSignupBurst(StrictModel):
    """Many accounts without verified KYC, opened close together, first seen from one network."""

    enabled: bool = Field(default=True, description="Report such bursts.")
    severity: Severity = Field(default="medium", description="Severity the events carry.")
    min_accounts: int = Field(
        default=10, ge=2, description="Accounts (KYC not `verified`) a burst needs at least."
    )
    window: str = Field(
        default="1h", description="The accounts' sign-up times must fall within this span."
    )
    by: list[Literal["network", "asn"]] = Field(
        default=["network"],
        min_length=1,
        description="Where an account was first seen from: its client network (/24 or "
        "/48), its AS number, or both (each counted on its own).",
    )
    cooldown: str = Field(
        default="6h",
        description="Quiet time after the latest new account of the burst that closes "
        "the incident.",
    )

    _durations = field_validator("window", "cooldown")(_duration)


def reference_problem(section: EventRules, actions: Mapping[str, str]) -> tuple[str, str] | None:
    """The first rule `restricted_jurisdiction.rules` names that can never deny, as (dotted
    path within the section, problem), or None. `actions` maps jurisdiction rule ids to
    their action.

    A mistyped id, or the id of an allow or flag rule, would filter out every denial
    and leave the kind silent.
    """
    for i, rule in enumerate(section.restricted_jurisdiction.rules):
        path = f"restricted_jurisdiction.rules.{i}"
        action = actions.get(rule)
        if action is None:
            known = ", ".join(sorted(actions)) or "none defined"
            return path, f"{rule!r} is not a jurisdiction rule id (jurisdiction.rules: {known})"
        if action != "deny":
            return path, f"jurisdiction rule {rule!r} never denies (its action is {action})"
    return None


class EventRules(StrictModel):
    """Reportable events: what is reported, once per incident (docs/events.md)."""

    campaign_cluster: CampaignCluster = Field(
        default_factory=CampaignCluster,
        description="A cluster of accounts whose score crosses a campaign threshold.",
    )
    restricted_jurisdiction: RestrictedJurisdiction = Field(
        default_factory=RestrictedJurisdiction,
        description="Attempts refused by jurisdiction rules.",
    )
    unverified_signup_burst: UnverifiedSignupBurst = Field(
        default_factory=UnverifiedSignupBurst,
        description="A burst of new unverified accounts from one network.",
    )
