"""Configuration checks of the rules file (tiers, limits, jurisdiction, detection).

Each check reads the compiled rules the server itself would run (`load_rules`)
and points its evidence at `rules.yaml:<line> <dotted path>`.
"""

from __future__ import annotations

from authz.assess.deployment import Deployment
from authz.assess.findings import Outcome, Severity, check, outcome
from authz.rules import CompiledTier, Rules

DETECTORS_APPLIED = ("template_spread", "elicitation", "regularity", "verdict")
# Thinking budget a tier open to unverified accounts may grant (docs/assess.md): enough
# for ordinary step-by-step answers, too little to make each throwaway account a cheap
# source of long traces.
UNVERIFIED_THINKING_CEILING = 4096
# Shortest trusted-proxy prefix per IP version: an IPv4 /8 is the largest block one
# organisation holds; an IPv6 /32 is a whole provider's allocation. Shorter is "anyone".
MIN_PROXY_PREFIX = {4: 8, 6: 32}


def _rules(d: Deployment) -> Rules:
    assert d.rules is not None
    return d.rules


def _unverified_tiers(rules: Rules) -> list[CompiledTier]:
    return [t for t in rules.tiers.values() if t.allow_unverified]


@check(
    "DG-ID-001",
    "Rules enforce their decisions (not dry run)",
    Severity.HIGH,
    1,
    ("rules",),
    fix="mode: enforce   # dry_run allows every request it would deny",
)
def mode_enforced(d: Deployment) -> Outcome:
    """`mode: dry_run` computes decisions and then allows everything."""
    if _rules(d).mode == "dry_run":
        return "fail", [f"{d.rule_at('mode')}: dry_run: every denial is recorded, then allowed"]
    return "pass", [f"{d.rule_at('mode')}: enforce"]


@check(
    "DG-ID-002",
    "The API key is not forwarded to the model server",
    Severity.MEDIUM,
    1,
    ("rules",),
    fix="identity:\n  forward_key: false",
)
def key_not_forwarded(d: Deployment) -> Outcome:
    """A forwarded key lets the model server (and its logs) hold every credential."""
    if _rules(d).forward_key:
        return "fail", [f"{d.rule_at('identity.forward_key')}: true"]
    return "pass", ["identity.forward_key is false: the key header is removed upstream"]


@check(
    "DG-OG-001",
    "Tiers open to unverified accounts do not expose full reasoning",
    Severity.HIGH,
    5,
    ("rules",),
    fix="tiers:\n  free:\n    allow_unverified: true\n    reasoning: none      # or summary",
)
def unverified_no_full_reasoning(d: Deployment) -> Outcome:
    """Throwaway accounts harvesting full traces is the attack itself."""
    bad = [
        f"{d.rule_at(f'tiers.{t.name}.reasoning')}: {t.name} admits unverified accounts "
        "and exposes full reasoning"
        for t in _unverified_tiers(_rules(d))
        if t.reasoning == "full"
    ]
    return outcome(bad, "no tier open to unverified accounts exposes full reasoning")


@check(
    "DG-OG-002",
    "Tiers open to unverified accounts cap thinking when they expose reasoning",
    Severity.HIGH,
    5,
    ("rules",),
    fix="tiers:\n  free:\n    reasoning: summary\n    max_thinking_tokens: 2048",
)
def unverified_thinking_cap(d: Deployment) -> Outcome:
    """A large thinking budget on a cheap account is a cheap source of long traces."""
    bad = []
    for t in _unverified_tiers(_rules(d)):
        if t.reasoning == "none":
            continue
        if t.max_thinking_tokens is None:
            bad.append(
                f"{d.rule_at(f'tiers.{t.name}.max_thinking_tokens')}: {t.name} admits unverified "
                f"accounts, reasoning {t.reasoning}, no max_thinking_tokens"
            )
        elif t.max_thinking_tokens > UNVERIFIED_THINKING_CEILING:
            bad.append(
                f"{d.rule_at(f'tiers.{t.name}.max_thinking_tokens')}: {t.max_thinking_tokens} "
                f"above {UNVERIFIED_THINKING_CEILING} for a tier open to unverified accounts"
            )
    return outcome(
        bad,
        f"every unverified tier that shows reasoning caps thinking at "
        f"{UNVERIFIED_THINKING_CEILING} tokens or less",
    )


@check(
    "DG-OG-003",
    "Tiers open to unverified accounts deny log probabilities",
    Severity.MEDIUM,
    5,
    ("rules",),
    fix="tiers:\n  free:\n    logprobs: false",
)
def unverified_no_logprobs(d: Deployment) -> Outcome:
    """Log probabilities are the richest distillation signal per token."""
    bad = [
        f"{d.rule_at(f'tiers.{t.name}')}: {t.name} admits unverified accounts and allows "
        "logprobs (the default)"
        for t in _unverified_tiers(_rules(d))
        if t.logprobs
    ]
    return outcome(bad, "no unverified tier returns log probabilities")


@check(
    "DG-RL-001",
    "Tiers open to unverified accounts have per-account request limits",
    Severity.HIGH,
    2,
    ("rules",),
    fix="tiers:\n  free:\n    limits:\n      account: {requests: {1m: 5, 1d: 30}}",
)
def unverified_account_limits(d: Deployment) -> Outcome:
    """Without a quota, one free account can harvest as much as a campaign."""
    bad = [
        f"{d.rule_at(f'tiers.{t.name}.limits')}: {t.name} admits unverified accounts with no "
        "per-account request limit"
        for t in _unverified_tiers(_rules(d))
        if not any(w.kind == "requests" for w in t.limits.account)
    ]
    return outcome(bad, "every unverified tier limits requests per account")


@check(
    "DG-RL-002",
    "Every tier has entity-level limits",
    Severity.MEDIUM,
    2,
    ("rules",),
    fix="tiers:\n  pro:\n    limits:\n      entity: {requests: {1m: 300, 1d: 50000}}",
)
def entity_limits(d: Deployment) -> Outcome:
    """Per-account limits alone are sidestepped by opening more accounts of one entity."""
    bad = [
        f"{d.rule_at(f'tiers.{t.name}')}: {t.name} has no entity limits"
        for t in _rules(d).tiers.values()
        if not t.limits.entity
    ]
    return outcome(bad, "every tier pools its accounts' requests per entity")


@check(
    "DG-RL-003",
    "Tiers open to unverified accounts fail closed when the counter store fails",
    Severity.MEDIUM,
    2,
    ("rules",),
    fix="tiers:\n  free:\n    limits:\n      on_store_failure: fail_closed",
)
def unverified_fail_closed(d: Deployment) -> Outcome:
    """Under fail_open every replica counts alone: N replicas allow N times the quota."""
    bad = [
        f"{d.rule_at(f'tiers.{t.name}.limits.on_store_failure')}: {t.name} admits unverified "
        f"accounts and fails open (each replica allows {t.limits.fail_open_fraction:g} of "
        "every limit)"
        for t in _unverified_tiers(_rules(d))
        if t.limits.on_store_failure == "fail_open"
    ]
    return outcome(bad, "unverified tiers fail closed when the store is down")


@check(
    "DG-RL-004",
    "Volume anomaly detection is on for at least one tier",
    Severity.LOW,
    2,
    ("rules",),
    fix="tiers:\n  pro:\n    limits:\n      anomaly: {z_score: 4, multiple: 5, min_baseline: 50}",
)
def anomaly_on(d: Deployment) -> Outcome:
    """Spikes against an account's own baseline are one of the six controls' signals."""
    on = [t.name for t in _rules(d).tiers.values() if t.limits.anomaly is not None]
    if not on:
        return "fail", [f"{d.rule_at('tiers')}: no tier has limits.anomaly"]
    return "pass", [f"anomaly signals on: {', '.join(on)}"]


@check(
    "DG-DT-001",
    "Extraction detection is enabled and enforced",
    Severity.HIGH,
    3,
    ("rules",),
    fix="detection:\n  enabled: true\n  shadow: false\n  shadow_detectors: []",
)
def detection_enforced(d: Deployment) -> Outcome:
    """Detection that is off, or only in shadow, restricts nobody."""
    det = _rules(d).detection
    if not det.enabled:
        return "fail", [f"{d.rule_at('detection.enabled')}: false"]
    if det.shadow:
        return "fail", [f"{d.rule_at('detection.shadow')}: true: every detector in shadow"]
    if set(DETECTORS_APPLIED) <= set(det.shadow_detectors):
        return "fail", [f"{d.rule_at('detection.shadow_detectors')}: all detectors in shadow"]
    return "pass", ["detection enabled, not in shadow"]


@check(
    "DG-DT-002",
    "No single detector is left in shadow",
    Severity.MEDIUM,
    3,
    ("rules",),
    fix="detection:\n  shadow_detectors: []   # after the shadow trial",
)
def no_shadow_detectors(d: Deployment) -> Outcome:
    """A detector in shadow records what it would do; it is a trial, not a control."""
    det = _rules(d).detection
    some = [n for n in det.shadow_detectors if n in DETECTORS_APPLIED]
    if some and not set(DETECTORS_APPLIED) <= set(some):
        return "warn", [f"{d.rule_at('detection.shadow_detectors')}: {', '.join(some)}"]
    return "pass", ["no detector partly in shadow"]


@check(
    "DG-DT-003",
    "Unverified accounts are restricted sooner",
    Severity.LOW,
    3,
    ("rules",),
    fix="detection:\n  unverified_factor: 1.5",
)
def unverified_sooner(d: Deployment) -> Outcome:
    """Farmed sign-ups are unverified; equal scores for them waste the KYC signal."""
    factor = _rules(d).detection.unverified_factor
    if factor <= 1.0:
        return "fail", [f"{d.rule_at('detection.unverified_factor')}: {factor:g}"]
    return "pass", [f"unverified_factor {factor:g}"]


@check(
    "DG-DT-004",
    "A restricted request loses logprobs and gets a watermark of its own",
    Severity.LOW,
    5,
    ("rules",),
    fix="detection:\n  restrict: {logprobs: false, watermark: cluster}",
)
def restrict_output(d: Deployment) -> Outcome:
    """The cluster watermark is what lets a distilled model be traced back later."""
    r = _rules(d).detection.restrict
    bad = []
    if r.logprobs:
        bad.append(f"{d.rule_at('detection.restrict.logprobs')}: true")
    if r.watermark != "cluster":
        bad.append(f"{d.rule_at('detection.restrict.watermark')}: {r.watermark}")
    return outcome(bad, "restricted output: no logprobs, cluster watermark")


def denied_countries(rules: Rules, attr: str) -> set[str]:
    """Countries (of `ip_country` or `kyc_country`) an enforced, all-tier deny rule names."""
    out: set[str] = set()
    for r in rules.jurisdiction.rules:
        values = getattr(r, attr)
        if r.action == "deny" and not r.shadow and values is not None and r.tiers is None:
            out |= set(values)
    return out


@check(
    "DG-JU-001",
    "Countries denied by IP are denied by declared KYC country too",
    Severity.HIGH,
    4,
    ("rules",),
    fix="jurisdiction:\n  rules:\n"
    "    - {id: embargoed-kyc, action: deny, kyc_country: [embargoed]}",
)
def kyc_country_rule(d: Deployment) -> Outcome:
    """An IP rule alone is walked around with a VPN; the account's country is not."""
    rules = _rules(d)
    by_ip = denied_countries(rules, "ip_country")
    missing = sorted(by_ip - denied_countries(rules, "kyc_country"))
    if not by_ip:
        return "fail", [f"{d.rule_at('jurisdiction.rules')}: no country is denied by IP or KYC"]
    if missing:
        return "fail", [
            f"{d.rule_at('jurisdiction.rules')}: denied by IP but not by KYC country: "
            + ", ".join(missing)
        ]
    return "pass", [f"denied by IP and by KYC country: {', '.join(sorted(by_ip))}"]


@check(
    "DG-JU-002",
    "Jurisdiction deny rules are enforced, not in shadow",
    Severity.MEDIUM,
    4,
    ("rules",),
    fix="jurisdiction:\n  rules:\n    - {id: embargoed-ip, action: deny, ip_country: [embargoed]}"
    "   # no shadow: true",
)
def jurisdiction_not_shadow(d: Deployment) -> Outcome:
    """A shadow deny rule only records; the jurisdiction is open."""
    bad = [
        f"{d.rule_at(f'jurisdiction.rules.{i}.shadow')}: rule {r.id} is in shadow"
        for i, r in enumerate(_rules(d).jurisdiction.rules)
        if r.shadow and r.action == "deny"
    ]
    return outcome(bad, "no deny rule is in shadow")


@check(
    "DG-JU-003",
    "X-Forwarded-For is trusted only from named proxies",
    Severity.HIGH,
    4,
    ("rules",),
    fix="client_ip:\n  trusted_hops: 0\n"
    "  trusted_proxies: [10.0.0.0/16]   # your load balancers only",
)
def xff_trust(d: Deployment) -> Outcome:
    """Trusting XFF from anyone lets a client pick its country and its rate-limit bucket."""
    policy = _rules(d).client_ip
    bad = [
        f"{d.rule_at('client_ip.trusted_proxies')}: {net} trusts every address as a proxy"
        for net in policy.trusted_proxies
        if net.prefixlen < MIN_PROXY_PREFIX[net.version]
    ]
    if policy.trusted_hops > 0 and not policy.trusted_proxies:
        bad.append(
            f"{d.rule_at('client_ip.trusted_hops')}: {policy.trusted_hops} hop(s) trusted from "
            "any peer (no trusted_proxies CIDRs)"
        )
    if bad:
        return "fail", bad
    if policy.trusted_proxies:
        nets = ", ".join(str(n) for n in policy.trusted_proxies)
        return "pass", [f"XFF read only behind {nets}"]
    return "pass", ["X-Forwarded-For is not read: the client is Envoy's peer"]
