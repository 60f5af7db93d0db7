"""The detect phase's arithmetic: features and pooled signals into a graduated action.

Each detector yields a strength from 0 to 1; weighted strengths combine as
independent evidence (1 - prod(1 - w*s)), unverified accounts' scores are
scaled up, and the tier's thresholds turn the score into none, watch,
restrict or deny. A verdict of the off-path analysis on the account raises the
action to its own; a verdict on the request's network or on a template near
the request's (a restricted campaign's own network or template, the
template's SimHash within the verdict's bits of the request's) raises it to at
most restrict, since neither alone shows who is behind a request (and a
network verdict only applies to requests that ask for reasoning). Shadow
detectors are scored but left out of the action applied, so their effect can
be measured before it is enforced.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from authz.accounts import Kyc
from authz.detect.features import RequestFeatures
from authz.detect.rules import DETECTORS, Assessment, DetectionRules, Risk, combine
from authz.metering.result import Sighted, VerdictView


def assess_risk(
    rules: DetectionRules,
    *,
    tier: str,
    kyc: Kyc,
    features: RequestFeatures,
    sighted: Sighted | None,
) -> Assessment:
    """The risk of one request (see the module docstring)."""
    d = rules.detectors
    pools = dict(sighted.observed) if sighted is not None else {}
    timing = sighted.timing if sighted is not None else None
    strengths = {
        "template_spread": d.template_spread.strength(pools.get("template_accounts", 0)),
        "elicitation": d.elicitation.strength(features.elicitation.score),
        "regularity": d.regularity.strength(timing.gaps, timing.cv) if timing else 0.0,
    }
    weights = {
        "template_spread": d.template_spread.weight,
        "elicitation": d.elicitation.weight,
        "regularity": d.regularity.weight,
    }
    shadow: set[str] = set(DETECTORS) if rules.shadow else set(rules.shadow_detectors)
    factor = 1.0 if kyc is Kyc.VERIFIED else rules.unverified_factor
    score = min(1.0, combine(strengths, weights) * factor)
    enforced = {k: v for k, v in strengths.items() if k not in shadow}
    applied_score = min(1.0, combine(enforced, weights) * factor)
    thresholds = rules.tiers.get(tier, rules.thresholds)
    risk, applied = thresholds.action(score), thresholds.action(applied_score)
    fired = [_name(k, shadow) for k, v in strengths.items() if v > 0]
    cluster = ""
    if sighted is not None:
        verdicts = (
            ("verdict", sighted.verdict, Risk.DENY),
            # A network verdict acts on what a campaign comes for, requests that ask for
            # reasoning: people sharing a residential network with a proxy exit keep the
            # tier's output for everything else.
            (
                "network_verdict",
                sighted.network_verdict if strengths["elicitation"] > 0 else None,
                Risk.RESTRICT,
            ),
            (
                "template_verdict",
                near_template(sighted.template_verdicts, features.simhash),
                Risk.RESTRICT,
            ),
        )
        for detector, verdict, ceiling in verdicts:
            said = min(Risk.parse(verdict.action), ceiling) if verdict is not None else Risk.NONE
            if verdict is None or said == Risk.NONE:
                continue
            fired.append(_name(detector, shadow))
            risk = max(risk, said)
            acts = detector not in shadow
            if acts:
                applied = max(applied, said)
            # The account's own verdict names its cluster in any case; a network or template
            # verdict only when it acts, so a shadowed or watching one ties no one to a campaign.
            if detector == "verdict" or (acts and said >= Risk.RESTRICT):
                cluster = cluster or verdict.cluster
            score = max(score, min(1.0, verdict.score))
    return Assessment(risk, round(score, 4), tuple(fired), applied, cluster)


def near_template(views: Sequence[VerdictView], simhash: int) -> VerdictView | None:
    """The template verdict on the owned SimHash nearest `simhash`, naming that hash's owner.

    The band keys only narrow the search (a shared 16-bit band); a verdict
    applies when one of its SimHashes is within its `bits` of the request's,
    and the cluster it names is the one that owns that SimHash.
    """
    best: tuple[int, VerdictView, str] | None = None
    for v in views:
        for h, owner in v.simhashes:
            distance = (h ^ simhash).bit_count()
            if distance <= v.bits and (best is None or distance < best[0]):
                best = (distance, v, owner)
    return None if best is None else dataclasses.replace(best[1], cluster=best[2])


def _name(detector: str, shadow: set[str]) -> str:
    return f"shadow:{detector}" if detector in shadow else detector
