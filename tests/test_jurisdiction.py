"""Jurisdiction rules in the pipeline: IP country, KYC country, mismatch, networks, kinds."""

from __future__ import annotations

import asyncio

import pytest

from authz.decision import Decision
from authz.location import AddressKind, Location
from authz.reasons import Reason
from tests.fakes import BOB_KEY, CAROL_KEY, StaticGeo, StaticRules, facts, make_pipeline

RULES = """
version: geo-test
tiers:
  free: {allow_unverified: true}
  pro: {}
  enterprise: {}
jurisdiction:
  groups:
    embargoed: [CU, IR, KP, SY]
    eu: [DE, FR, NL]
  rules:
    - id: embargoed-kyc
      action: deny
      kyc_country: [embargoed]
    - id: embargoed-ip
      action: deny
      ip_country: [embargoed]
    - id: private-ok
      action: allow
      address: [private, loopback]
    - id: unknown-country
      action: deny
      address: [unlisted, reserved]
    - id: hosting-unverified
      action: deny
      kyc: [unverified]
      as_org: ["*hosting*", "DigitalOcean*"]
    - id: free-eu-us-only
      action: deny
      tiers: [free]
      ip_country_not: [eu, US]
    - id: mismatch-unverified
      action: flag
      kyc: [unverified]
      country_mismatch: true
    - id: mismatch-shadow
      action: deny
      shadow: true
      country_mismatch: true
"""

GEO = StaticGeo(
    {
        "5.0.0.1": Location(AddressKind.PUBLIC, "IR", 58224, "Iran Telecom"),
        "6.0.0.1": Location(AddressKind.PUBLIC, "DE", 3320, "Deutsche Telekom"),
        "7.0.0.1": Location(AddressKind.PUBLIC, "JP", 2516, "KDDI"),
        "8.0.0.1": Location(AddressKind.PUBLIC, "FR", 14061, "DigitalOcean, LLC"),
        "9.0.0.1": Location(AddressKind.UNLISTED),
        "10.0.0.1": Location(AddressKind.PRIVATE),
        "11.0.0.1": Location(AddressKind.PUBLIC, "US", 7922, "Comcast"),
    }
)


def decide(key: str, source: str, **kw: object) -> Decision:
    """One check from `source` with the jurisdiction test rules."""
    pipeline, _ = make_pipeline(rules=StaticRules.of(RULES), geo=GEO)
    return asyncio.run(pipeline.check(facts({"x-api-key": key}, source=source), **kw))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("key", "source", "reason", "rule"),
    [
        (BOB_KEY, "5.0.0.1", Reason.COUNTRY_DENIED, "jurisdiction:embargoed-ip"),
        (BOB_KEY, "9.0.0.1", Reason.ADDRESS_DENIED, "jurisdiction:unknown-country"),
        (CAROL_KEY, "8.0.0.1", Reason.NETWORK_DENIED, "jurisdiction:hosting-unverified"),
        (CAROL_KEY, "7.0.0.1", Reason.COUNTRY_DENIED, "jurisdiction:free-eu-us-only"),
    ],
)
def test_denials_name_their_rule(key: str, source: str, reason: Reason, rule: str) -> None:
    """Each jurisdiction denial carries its stable reason and the id of the rule."""
    d = decide(key, source)
    assert not d.allowed and d.reason is reason and d.rule == rule and d.status == 403
    assert rule.split(":", 1)[1] in d.detail


def test_allowed_from_home_country_and_private_networks() -> None:
    """Bob (DE account) from Germany, and anyone from a private address, is allowed."""
    assert decide(BOB_KEY, "6.0.0.1").allowed
    d = decide(CAROL_KEY, "10.0.0.1")
    assert d.allowed and d.location is not None and d.location.kind is AddressKind.PRIVATE


def test_kyc_country_is_refused_from_anywhere(tmp_path: object) -> None:
    """An account registered in a restricted country is refused even from an allowed country."""
    rules = RULES.replace("kyc_country: [embargoed]", "kyc_country: [embargoed, DE]")
    pipeline, _ = make_pipeline(rules=StaticRules.of(rules), geo=GEO)
    d = asyncio.run(pipeline.check(facts({"x-api-key": BOB_KEY}, source="11.0.0.1")))
    assert d.reason is Reason.KYC_COUNTRY_DENIED and d.rule == "jurisdiction:embargoed-kyc"


def test_mismatch_flag_and_shadow_deny_are_recorded_not_enforced() -> None:
    """Carol (FR, unverified) from the US: flagged and shadow-denied, but allowed."""
    d = decide(CAROL_KEY, "11.0.0.1")
    assert d.allowed
    assert d.flags == ("mismatch-unverified",)
    assert d.shadow_denies == ("mismatch-shadow",)


def test_default_deny_applies_when_nothing_decides() -> None:
    """With `default: deny`, a request no rule allows is refused by the rule `default`."""
    rules = RULES.replace("  rules:", "  default: deny\n  rules:")
    pipeline, _ = make_pipeline(rules=StaticRules.of(rules), geo=GEO)
    d = asyncio.run(pipeline.check(facts({"x-api-key": BOB_KEY}, source="6.0.0.1")))
    assert d.reason is Reason.JURISDICTION_DENIED and d.rule == "jurisdiction:default"
    assert asyncio.run(pipeline.check(facts({"x-api-key": BOB_KEY}, source="10.0.0.1"))).allowed


def test_explain_lists_every_rule() -> None:
    """The explain trace shows the client, each rule evaluated and the decision."""
    d = decide(CAROL_KEY, "7.0.0.1", explain=True)
    text = "\n".join(f"{phase}: {line}" for phase, line in d.trace)
    assert "locate: client 7.0.0.1 (from source): public, country JP, AS2516 KDDI" in text
    assert "jurisdiction: embargoed-ip: no match" in text
    assert "jurisdiction: free-eu-us-only: deny" in text
    assert text.endswith("decision: deny country_denied by jurisdiction:free-eu-us-only")
    assert decide(CAROL_KEY, "7.0.0.1").trace == ()


def test_xff_trusted_hop_moves_the_jurisdiction() -> None:
    """With one trusted hop, the address the proxy appended is the one located."""
    rules = RULES.replace("version: geo-test", "version: geo-test\nclient_ip: {trusted_hops: 1}")
    pipeline, _ = make_pipeline(rules=StaticRules.of(rules), geo=GEO)
    headers = {"x-api-key": BOB_KEY, "x-forwarded-for": "6.0.0.1, 5.0.0.1"}
    d = asyncio.run(pipeline.check(facts(headers, source="10.0.0.1")))
    assert d.reason is Reason.COUNTRY_DENIED and str(d.client_ip) == "5.0.0.1"
