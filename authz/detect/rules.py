"""The `detection` section of the rules file: request-path detectors, graduated actions
and what a restriction does to the output (docs/detection.md).

The request path scores each request from cheap signals the store answers in
its one round trip (how many accounts sent the same prompt template this hour,
how regular the account's timing is) and the request's own reasoning
elicitation; the off-path analysis adds verdicts on whole clusters. The larger
of the two actions applies: none < watch < restrict < deny.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum
from typing import Literal, get_args

from pydantic import Field, model_validator

from authz.detect.settings import AnalysisSettings
from authz.schema import StrictModel


class Risk(IntEnum):
    """The graduated actions, in order."""

    NONE = 0
    WATCH = 1  # recorded only
    RESTRICT = 2  # served with less: summary reasoning, capped thinking, no logprobs
    DENY = 3

    @property
    def label(self) -> str:
        """The name used in headers, records and rules."""
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Risk:
        """The risk a verdict names; unknown names count as none."""
        return _BY_LABEL.get(text, Risk.NONE)


_BY_LABEL = {r.name.lower(): r for r in Risk}

Detector = Literal[
    "template_spread", "elicitation", "regularity", "verdict", "network_verdict", "template_verdict"
]
DETECTORS: tuple[Detector, ...] = get_args(Detector)


class Ramp(StrictModel):
    """A signal that grows from 0 at `start` to 1 at `full`, with its weight in the score."""

    start: float = Field(ge=0, description="Value at which the signal starts to count.")
    full: float = Field(gt=0, description="Value at which the signal counts fully.")
    weight: float = Field(ge=0, le=1, description="Its share of the risk score (0 to 1).")

    @model_validator(mode="after")
    def _ordered(self) -> Ramp:
        if self.full <= self.start:
            raise ValueError("'full' must be greater than 'start'")
        return self

    def strength(self, value: float) -> float:
        """How strongly `value` shows the signal, 0 to 1."""
        return min(1.0, max(0.0, (value - self.start) / (self.full - self.start)))


class RegularityRule(StrictModel):
    """Machine-regular timing: a low coefficient of variation of the gaps between requests."""

    min_requests: int = Field(
        default=12, ge=3, description="Gaps needed before regularity counts at all."
    )
    cv_full: float = Field(
        default=0.15,
        ge=0,
        description="Coefficient of variation at or below which it counts fully.",
    )
    cv_start: float = Field(
        default=0.5, gt=0, description="Coefficient of variation above which it does not count."
    )
    weight: float = Field(default=0.25, ge=0, le=1, description="Its share of the risk score.")

    @model_validator(mode="after")
    def _ordered(self) -> RegularityRule:
        if self.cv_start <= self.cv_full:
            raise ValueError("'cv_start' must be greater than 'cv_full'")
        return self

    def strength(self, gaps: int, cv: float | None) -> float:
        """How regular the account is, 0 to 1 (0 until `min_requests` gaps are known)."""
        if cv is None or gaps < self.min_requests:
            return 0.0
        return min(1.0, max(0.0, (self.cv_start - cv) / (self.cv_start - self.cv_full)))


class Detectors(StrictModel):
    """The request-path detectors."""

    template_spread: Ramp = Field(
        default=Ramp(start=3, full=12, weight=0.45),
        description="Distinct accounts that sent this exact prompt template within the hour. "
        "Alone it only watches: CI jobs of many customers share templates too.",
    )
    elicitation: Ramp = Field(
        default=Ramp(start=0.3, full=0.8, weight=0.35),
        description="The request's reasoning-elicitation score (phrasing and parameters).",
    )
    regularity: RegularityRule = Field(
        default_factory=RegularityRule,
        description="Timing of the account's requests: scheduled traffic is regular.",
    )


class Thresholds(StrictModel):
    """Risk scores (0 to 1) at which each graduated action starts."""

    watch: float = Field(default=0.3, ge=0, le=1)
    restrict: float = Field(default=0.6, ge=0, le=1)
    deny: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Deny on the request-path score alone; null (the default) never does, "
        "leaving denial to verdicts of the off-path analysis.",
    )

    @model_validator(mode="after")
    def _ordered(self) -> Thresholds:
        if self.restrict < self.watch:
            raise ValueError("'restrict' must not be below 'watch'")
        if self.deny is not None and self.deny < self.restrict:
            raise ValueError("'deny' must not be below 'restrict'")
        return self

    def action(self, score: float) -> Risk:
        """The graduated action a score reaches."""
        if self.deny is not None and score >= self.deny:
            return Risk.DENY
        if score >= self.restrict:
            return Risk.RESTRICT
        if score >= self.watch:
            return Risk.WATCH
        return Risk.NONE


class RestrictOutput(StrictModel):
    """What the model server is told to do for a restricted request."""

    reasoning: Literal["summary", "none"] = Field(
        default="summary", description="Reasoning exposure of a restricted request."
    )
    max_thinking_tokens: int = Field(
        default=1024, ge=0, description="Cap on thinking tokens of a restricted request."
    )
    logprobs: bool = Field(default=False, description="Whether logprobs stay allowed.")
    watermark: Literal["cluster", "tier"] = Field(
        default="cluster",
        description="`cluster`: a watermark key of the account's cluster (or the account), so "
        "a model trained on the output can be traced to it; `tier`: the tier's key.",
    )


class DetectionRules(StrictModel):
    """The `detection` section."""

    enabled: bool = Field(default=True, description="Compute features and scores at all.")
    shadow: bool = Field(
        default=False,
        description="Record scores and actions but never apply them (every detector in shadow).",
    )
    shadow_detectors: list[Detector] = Field(
        default_factory=list,
        description="Detectors whose contribution is recorded but not applied.",
    )
    max_prompt_chars: int = Field(
        default=1024,
        ge=0,
        le=1 << 20,
        description="Characters of prompt text examined (cost grows with it: docs/detection.md).",
    )
    min_template_words: int = Field(
        default=8,
        ge=1,
        description="Prompts whose masked scaffold has fewer words are not counted as a "
        "template: short prompts ('hi', 'translate <name>') coincide across unrelated users.",
    )
    detectors: Detectors = Field(default_factory=Detectors)
    thresholds: Thresholds = Field(default_factory=Thresholds)
    tiers: dict[str, Thresholds] = Field(
        default_factory=dict, description="Thresholds per tier (others use `thresholds`)."
    )
    unverified_factor: float = Field(
        default=1.5,
        ge=1,
        description="Risk scores of accounts whose KYC is not verified are multiplied by this, "
        "so they are restricted sooner.",
    )
    restrict: RestrictOutput = Field(default_factory=RestrictOutput)
    analysis: AnalysisSettings = Field(
        default_factory=AnalysisSettings,
        description="The off-path analysis (`distill-guard analyze`): linking, scores, verdicts.",
    )


@dataclass(frozen=True, slots=True)
class Assessment:
    """The detect phase's answer for one request."""

    risk: Risk  # what every detector together says
    score: float
    fired: tuple[str, ...]  # detectors that contributed (shadow ones as "shadow:<name>")
    applied: Risk  # the action in force: shadow detectors left out
    cluster: str = ""  # from the account's verdict


def combine(strengths: dict[str, float], weights: dict[str, float]) -> float:
    """Independent signals into one score: 1 - prod(1 - weight * strength)."""
    keep = 1.0
    for name, strength in strengths.items():
        keep *= 1.0 - weights[name] * strength
    return 1.0 - keep if math.isfinite(keep) else 1.0
