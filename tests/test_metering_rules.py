"""The `limits:` section: its YAML shape, strict validation with exact messages, compilation."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from authz.errors import format_validation_error
from authz.metering.rules import (
    AnomalySettings,
    LimitRules,
    WindowLimit,
    compile_limits,
    window_label,
    window_seconds,
)

EXAMPLE = """
account:
  requests: {1m: 20, 1h: 300, 1d: 2000}
  tokens: {1d: 2000000}
entity:
  requests: {1m: 100, 1d: 20000}
  tokens: {1d: 20000000}
models:
  "frontier-*":
    account: {requests: {1m: 5}, tokens: {1d: 500000}}
token_estimate: {default_output: 2048}
anomaly: {z_score: 4, multiple: 5, min_baseline: 50, action: throttle, throttle_factor: 0.25}
on_store_failure: fail_open
fail_open_fraction: 0.2
headers: remaining
"""


def _error(text: str) -> str:
    with pytest.raises(ValidationError) as info:
        LimitRules.model_validate(yaml.safe_load(text))
    return str(format_validation_error("rules.yaml", info.value, prefix="tiers.pro.limits"))


def test_the_documented_example_compiles_to_sorted_window_limits() -> None:
    """The example of docs/limits.md compiles: requests before tokens, shortest window first."""
    limits = compile_limits(LimitRules.model_validate(yaml.safe_load(EXAMPLE)))
    assert limits.account == (
        WindowLimit("requests", 60, 20),
        WindowLimit("requests", 3600, 300),
        WindowLimit("requests", 86400, 2000),
        WindowLimit("tokens", 86400, 2_000_000),
    )
    assert limits.entity[0] == WindowLimit("requests", 60, 100)
    (frontier,) = limits.models
    assert frontier.pattern == "frontier-*"
    assert frontier.regex.fullmatch("frontier-2") and not frontier.regex.fullmatch("small-1")
    assert frontier.entity == ()
    assert limits.anomaly == AnomalySettings(4.0, 5.0, 50.0, 0.1, "throttle", 0.25)
    assert (limits.on_store_failure, limits.fail_open_fraction) == ("fail_open", 0.2)
    assert limits.headers_remaining and limits.default_output_tokens == 2048


def test_defaults_count_nothing_and_fail_closed() -> None:
    """An absent section has no limits, no anomaly detection, fail_closed, no quota headers."""
    limits = compile_limits(LimitRules())
    assert limits.empty
    assert (limits.on_store_failure, limits.headers_remaining) == ("fail_closed", False)


@pytest.mark.parametrize(
    ("text", "seconds", "label"),
    [
        ("1s", 1, "1s"),
        ("90s", 90, "90s"),
        ("60s", 60, "1m"),
        ("24h", 86400, "1d"),
        ("31d", 2678400, "31d"),
    ],
)
def test_window_syntax(text: str, seconds: int, label: str) -> None:
    """Windows are a whole number and a unit; labels use the largest unit that divides."""
    assert window_seconds(text) == seconds
    assert window_label(seconds) == label


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "account: {requests: {1w: 5}}",
            "rules.yaml: tiers.pro.limits: account.requests: window '1w' must be a whole number "
            "and a unit s, m, h or d (e.g. 1m, 6h, 1d)",
        ),
        (
            "account: {requests: {0m: 5}}",
            "rules.yaml: tiers.pro.limits: account.requests: window '0m' must be a whole number "
            "and a unit s, m, h or d (e.g. 1m, 6h, 1d)",
        ),
        (
            "entity: {tokens: {32d: 5}}",
            "rules.yaml: tiers.pro.limits: entity.tokens: window '32d' is longer than 31d",
        ),
        (
            "account: {requests: {60s: 5, 1m: 6}}",
            "rules.yaml: tiers.pro.limits: account.requests: windows '60s' and '1m' are the "
            "same length",
        ),
        (
            "account: {requests: {60: 5}}",
            "rules.yaml: tiers.pro.limits: account.requests.60: Input should be a valid "
            "string (got 60)",
        ),
        (
            "account: {requests: {1m: '20'}}",
            "rules.yaml: tiers.pro.limits: account.requests.1m: Input should be a valid integer "
            "(got '20')",
        ),
        (
            "account: {requests: {1m: 0}}",
            "rules.yaml: tiers.pro.limits: account.requests.1m: Input should be greater than or "
            "equal to 1 (got 0)",
        ),
        (
            "account: {request: {1m: 5}}",
            "rules.yaml: tiers.pro.limits: account.request: unknown key",
        ),
        (
            "models: {'frontier 2': {}}",
            "rules.yaml: tiers.pro.limits: models: model pattern 'frontier 2' has characters a "
            "model name cannot",
        ),
        (
            "anomaly: {action: block}",
            "rules.yaml: tiers.pro.limits: anomaly.action: Input should be 'record', 'throttle' "
            "or 'deny' (got 'block')",
        ),
        (
            "fail_open_fraction: 0",
            "rules.yaml: tiers.pro.limits: fail_open_fraction: Input should be greater than 0 "
            "(got 0)",
        ),
        (
            "on_store_failure: open",
            "rules.yaml: tiers.pro.limits: on_store_failure: Input should be 'fail_open' or "
            "'fail_closed' (got 'open')",
        ),
    ],
)
def test_invalid_sections_fail_with_exact_messages(text: str, message: str) -> None:
    """Each mistake is refused with a message naming the path and the problem."""
    assert _error(text) == message


def test_every_field_is_described_in_the_json_schema() -> None:
    """Editors show a description for every setting of the section."""
    schema: dict[str, Any] = json.loads(json.dumps(LimitRules.model_json_schema()))
    models = [schema, *schema["$defs"].values()]
    missing = [
        f"{m.get('title')}.{name}"
        for m in models
        for name, prop in m.get("properties", {}).items()
        if not prop.get("description")
    ]
    assert missing == []
    assert re.search(r"\{1m: 20, 1h: 300, 1d: 2000\}", json.dumps(schema))
