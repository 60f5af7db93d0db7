"""The rules loader: strict schema, exact error messages, compiled snapshots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from authz.cli import main
from authz.errors import ConfigError
from authz.rules import json_schema, load_rules, parse_rules

FIXTURES = Path(__file__).parent / "fixtures" / "rules"
DEMO_RULES = Path(__file__).parents[1] / "authz" / "demo" / "rules.yaml"

# One fixture per failure mode, with the exact message an engineer reads.
EXPECTED = {
    "bad_header.yaml": "bad_header.yaml:2: identity.key_headers: "
    "'X-Api-Key' is not a lower-case HTTP header name",
    "bad_mode.yaml": "bad_mode.yaml:1: mode: Input should be 'enforce' or 'dry_run' (got 'audit')",
    "bad_reasoning.yaml": "bad_reasoning.yaml:3: tiers.pro.reasoning: "
    "Input should be 'full', 'summary' or 'none' (got 'everything')",
    "bad_tier_name.yaml": "bad_tier_name.yaml:1: tiers: "
    "tier name 'Free Tier' must match [a-z0-9][a-z0-9_-]*",
    "bad_yaml.yaml": "bad_yaml.yaml:3: invalid YAML: expected ',' or '}', but got '<stream end>'",
    "empty_tiers.yaml": "empty_tiers.yaml:1: tiers: define at least one tier",
    "no_tiers.yaml": "no_tiers.yaml:1: tiers: required key is missing",
    "not_mapping.yaml": "not_mapping.yaml: expected a mapping at the top level",
    "not_utf8.yaml": "not_utf8.yaml: not UTF-8 (byte 36)",
    "unknown_tier_key.yaml": "unknown_tier_key.yaml:4: tiers.free.alow_unverified: unknown key",
    "unknown_top_key.yaml": "unknown_top_key.yaml:4: limits: unknown key",
    "wrong_type.yaml": "wrong_type.yaml:3: tiers.free.paths: "
    "Input should be a valid list (got '/v1/*')",
    "geo_bad_action.yaml": "geo_bad_action.yaml:5: jurisdiction.rules.0.action: "
    "Input should be 'deny', 'allow' or 'flag' (got 'block')",
    "geo_bad_address_kind.yaml": "geo_bad_address_kind.yaml:5: jurisdiction.rules.0.address.0: "
    "Input should be 'public', 'unlisted', 'private', 'loopback' or 'reserved' (got 'tor')",
    "geo_bad_country.yaml": "geo_bad_country.yaml:7: jurisdiction.rules.0.ip_country.1: "
    "'XX' is not an ISO 3166-1 alpha-2 country code",
    "geo_bad_group_member.yaml": "geo_bad_group_member.yaml:5: jurisdiction.groups.eu.2: "
    "'EU' is not an ISO 3166-1 alpha-2 country code",
    "geo_bad_proxy_cidr.yaml": "geo_bad_proxy_cidr.yaml:2: client_ip.trusted_proxies: "
    "'10.0.0.0/33' is not an IP network in CIDR notation",
    "geo_duplicate_id.yaml": "geo_duplicate_id.yaml:6: jurisdiction.rules.1.id: "
    "duplicate rule id 'a'",
    "geo_no_condition.yaml": "geo_no_condition.yaml:5: jurisdiction.rules.0: "
    "rule 'everything' has no condition; use `default` instead",
    "geo_unknown_group.yaml": "geo_unknown_group.yaml:9: jurisdiction.rules.0.ip_country_not.0: "
    "'europe' is neither a country code nor a group (groups: eu)",
    "geo_empty_condition.yaml": "geo_empty_condition.yaml:5: jurisdiction.rules.0.as_org: "
    "List should have at least 1 item after validation, not 0 (got [])",
    "geo_unknown_tier.yaml": "geo_unknown_tier.yaml:7: jurisdiction.rules.0.tiers.0: "
    "'gold' is not a defined tier",
    "events_unknown_jurisdiction_rule.yaml": "events_unknown_jurisdiction_rule.yaml:9: "
    "events.restricted_jurisdiction.rules.1: 'embargoed_ip' is not a jurisdiction rule id "
    "(jurisdiction.rules: embargoed-ip, embargoed-kyc)",
}


def test_every_fixture_has_an_expected_message() -> None:
    """Each failure-mode fixture on disk is covered by an exact expectation."""
    assert sorted(p.name for p in FIXTURES.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_failure_mode_message(name: str) -> None:
    """A broken rules file fails with a message naming file, line, path and problem."""
    with pytest.raises(ConfigError) as info:
        load_rules(FIXTURES / name)
    assert str(info.value) == f"{FIXTURES}/{EXPECTED[name]}"


def test_missing_file_is_named() -> None:
    """A rules path that does not exist is reported, not raised as OSError."""
    with pytest.raises(ConfigError, match=r"nope\.yaml: cannot read: No such file"):
        load_rules(FIXTURES / "nope.yaml")


def test_demo_rules_compile() -> None:
    """The bundled demo rules load, and globs compile into matchers."""
    rules = load_rules(DEMO_RULES)
    assert rules.version.startswith("demo-1@")
    free = rules.tiers["free"]
    assert free.allows_path("/v1/messages?beta=true")
    assert not free.allows_path("/v1/embeddings")
    assert free.allows_model("small-1") and not free.allows_model("frontier-2")
    assert free.restricts_models and not rules.tiers["enterprise"].restricts_models


def test_version_is_label_and_content_hash() -> None:
    """The rules version changes with the content even when the label does not."""
    a = parse_rules(b"version: v7\ntiers: {free: {}}\n", source="a")
    b = parse_rules(b"version: v7\ntiers: {free: {reasoning: none}}\n", source="b")
    assert a.version.startswith("v7@") and b.version.startswith("v7@")
    assert a.version != b.version


def test_rules_check_command(capsys: pytest.CaptureFixture[str]) -> None:
    """`rules check` exits 0 for good files and 1 with the loader's message for bad ones."""
    assert main(["rules", "check", str(DEMO_RULES)]) == 0
    assert "ok:" in capsys.readouterr().out
    assert main(["rules", "check", str(FIXTURES / "unknown_top_key.yaml")]) == 1
    assert capsys.readouterr().err.strip() == (
        f"error: {FIXTURES / 'unknown_top_key.yaml'}:4: limits: unknown key"
    )


def test_json_schema_describes_tiers(capsys: pytest.CaptureFixture[str]) -> None:
    """The exported JSON Schema is valid JSON, forbids unknown keys and documents fields."""
    schema = json.loads(json_schema())
    assert schema["additionalProperties"] is False
    assert "tiers" in schema["required"]
    tier = schema["$defs"]["TierRules"]
    assert tier["additionalProperties"] is False
    assert "description" in tier["properties"]["allow_unverified"]
    assert main(["rules", "schema"]) == 0
    assert json.loads(capsys.readouterr().out) == schema
