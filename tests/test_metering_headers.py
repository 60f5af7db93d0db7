"""Response headers: Retry-After and the IETF RateLimit fields (ratelimit-headers draft 11)."""

from __future__ import annotations

from authz.metering.headers import allowed_headers, denied_headers, sf_string
from authz.metering.result import LimitState, MeterResult, Violation, describe

LIMITS = (
    LimitState("account-requests-1m", "account", "requests", 60, 20, 0, 17),
    LimitState("entity-requests-1d", "entity", "requests", 86400, 2000, 1500, 3600),
    LimitState("account-tokens-1d", "account", "tokens", 86400, 100000, 400, 3600),
)


def _denied(retry_after: float | None) -> MeterResult:
    v = Violation("account-requests-1m", "account", "requests", 60, 20, retry_after)
    return MeterResult(allowed=False, violated=v, limits=LIMITS, violations=(v,))


def test_a_429_carries_retry_after_and_structured_field_lists() -> None:
    """Retry-After is whole seconds rounded up; policies and limits are SF lists by name."""
    assert denied_headers(_denied(16.2)) == [
        ("retry-after", "17"),
        (
            "ratelimit-policy",
            '"account-requests-1m";q=20;w=60, "entity-requests-1d";q=2000;w=86400',
        ),
        ("ratelimit", '"account-requests-1m";r=0;t=17, "entity-requests-1d";r=1500;t=3600'),
        ("x-distill-token-budget", '"account-tokens-1d";q=100000;w=86400;r=400;t=3600'),
    ]


def test_retry_after_is_at_least_one_second_and_absent_when_waiting_cannot_help() -> None:
    """A sub-second wait says 1; a request that can never fit gets no Retry-After."""
    assert denied_headers(_denied(0.001))[0] == ("retry-after", "1")
    assert [name for name, _ in denied_headers(_denied(None))] == [
        "ratelimit-policy",
        "ratelimit",
        "x-distill-token-budget",
    ]


def test_allowed_responses_carry_quota_only_when_configured() -> None:
    """`headers: remaining` adds the quota fields to allowed responses; the default adds none."""
    result = MeterResult(allowed=True, limits=LIMITS[1:2])
    assert allowed_headers(result, remaining=False) == []
    assert allowed_headers(result, remaining=True) == [
        ("ratelimit-policy", '"entity-requests-1d";q=2000;w=86400'),
        ("ratelimit", '"entity-requests-1d";r=1500;t=3600'),
    ]


def test_policy_names_are_escaped_as_structured_field_strings() -> None:
    """Quotes and backslashes are escaped; anything outside printable ASCII becomes '?'."""
    assert sf_string('a"b\\c') == '"a\\"b\\\\c"'
    assert sf_string("modèle") == '"mod?le"'


def test_denials_are_described_in_a_sentence() -> None:
    """The deny detail names the limit and when to come back."""
    assert describe(_denied(16.2).violations[0]) == (
        "account-requests-1m: limit of 20 requests reached; retry in 17 s"
    )
    assert describe(Violation("account-tokens-1d", "account", "tokens", 86400, 9, None)) == (
        "account-tokens-1d: this request alone exceeds the limit of 9 tokens"
    )
