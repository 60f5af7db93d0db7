"""Response headers for rate decisions: Retry-After and the IETF RateLimit fields.

Syntax of draft-ietf-httpapi-ratelimit-headers-11 (May 2026): both fields are
Structured Field Lists (RFC 9651) of Strings naming a policy, with parameters

    ratelimit-policy: "account-requests-1m";q=20;w=60, "entity-requests-1d";q=2000;w=86400
    ratelimit: "account-requests-1m";r=0;t=17, "entity-requests-1d";r=1500;t=3600

q is the quota and w the window in seconds; r is what is left and t the
effective window in seconds (see LimitState.reset). Only request-count limits
appear there: the draft's quota-unit registry has no unit for tokens, so token
budgets go in `x-distill-token-budget` with the same syntax (q, w, r, t).
Names are lower case, as HTTP/2 and Envoy carry them.
"""

from __future__ import annotations

import functools
import math

from authz.metering.result import LimitState, MeterResult

RETRY_AFTER = "retry-after"
RATELIMIT_POLICY = "ratelimit-policy"
RATELIMIT = "ratelimit"
TOKEN_BUDGET = "x-distill-token-budget"


@functools.lru_cache(maxsize=4096)  # policy names: a small, fixed set per rules version
def sf_string(text: str) -> str:
    """A Structured Field String: quoted, with backslash and quote escaped, ASCII only."""
    printable = "".join(ch if " " <= ch <= "~" else "?" for ch in text)
    return '"' + printable.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _policy_items(limits: list[LimitState]) -> str:
    return ", ".join(f"{sf_string(s.name)};q={s.limit};w={s.window}" for s in limits)


def _limit_items(limits: list[LimitState]) -> str:
    return ", ".join(f"{sf_string(s.name)};r={s.remaining};t={s.reset}" for s in limits)


def _budget_items(limits: list[LimitState]) -> str:
    return ", ".join(
        f"{sf_string(s.name)};q={s.limit};w={s.window};r={s.remaining};t={s.reset}" for s in limits
    )


def quota_headers(result: MeterResult) -> list[tuple[str, str]]:
    """RateLimit-Policy and RateLimit for request limits, and the token-budget field."""
    requests = [s for s in result.limits if s.kind == "requests"]
    tokens = [s for s in result.limits if s.kind == "tokens"]
    headers: list[tuple[str, str]] = []
    if requests:
        headers.append((RATELIMIT_POLICY, _policy_items(requests)))
        headers.append((RATELIMIT, _limit_items(requests)))
    if tokens:
        headers.append((TOKEN_BUDGET, _budget_items(tokens)))
    return headers


def denied_headers(result: MeterResult) -> list[tuple[str, str]]:
    """Headers of a 429: Retry-After (whole seconds, rounded up) and the quota fields.

    No Retry-After when the request can never fit (its cost exceeds the limit):
    waiting would not help.
    """
    headers: list[tuple[str, str]] = []
    violated = result.violated
    if violated is not None and violated.retry_after is not None:
        headers.append((RETRY_AFTER, str(max(1, math.ceil(violated.retry_after)))))
    return headers + quota_headers(result)


def allowed_headers(result: MeterResult, *, remaining: bool) -> list[tuple[str, str]]:
    """Headers of an allowed response: the quota fields when the tier says `headers: remaining`."""
    return quota_headers(result) if remaining else []
