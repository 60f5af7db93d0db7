"""The governance header namespace: what the model server learns from us.

Every header under GOVERNANCE_PREFIX is ours. Copies sent by a client are
removed before the request goes upstream, and ours overwrite them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from authz.decision import Caller
from authz.detect.rules import RestrictOutput
from authz.rules import CompiledTier

GOVERNANCE_PREFIX = "x-distill-"

DECISION_ID = GOVERNANCE_PREFIX + "decision-id"
KEY_ID = GOVERNANCE_PREFIX + "key-id"
ACCOUNT = GOVERNANCE_PREFIX + "account"
ENTITY = GOVERNANCE_PREFIX + "entity"
TIER = GOVERNANCE_PREFIX + "tier"
KYC = GOVERNANCE_PREFIX + "kyc"
MODEL = GOVERNANCE_PREFIX + "model"
REASONING = GOVERNANCE_PREFIX + "reasoning"
MAX_THINKING = GOVERNANCE_PREFIX + "max-thinking-tokens"
LOGPROBS = GOVERNANCE_PREFIX + "logprobs"
WATERMARK = GOVERNANCE_PREFIX + "watermark-key"
RISK = GOVERNANCE_PREFIX + "risk"
CLUSTER = GOVERNANCE_PREFIX + "cluster"
RULES_VERSION = GOVERNANCE_PREFIX + "rules-version"
DRY_RUN_DENY = GOVERNANCE_PREFIX + "dry-run-deny"


def headers_to_remove(
    headers: Mapping[str, str], ours: tuple[tuple[str, str], ...]
) -> tuple[str, ...]:
    """Client-sent headers in our namespace that none of ours overwrites.

    Envoy applies `headers_to_remove` after the headers we set, so a name we
    set must not be listed: the overwrite already replaces the client's copy,
    and removing it would drop ours too.
    """
    sent = [n for n in headers if n.startswith(GOVERNANCE_PREFIX)]
    if not sent:  # what honest clients send: no need to collect our names
        return ()
    set_by_us = {name for name, _ in ours}
    return tuple(sorted(n for n in sent if n not in set_by_us))


_EXPOSURE_RANK = {"none": 0, "summary": 1, "full": 2}


@dataclass(frozen=True, slots=True)
class Output:
    """What the model server may give one request: the output governance contract."""

    reasoning: str  # full | summary | none
    max_thinking_tokens: int | None  # None: no cap
    logprobs: bool
    watermark_key: str


def output_for(tier: CompiledTier, restrict: RestrictOutput | None, cluster: str) -> Output:
    """The tier's output, or, for a restricted request, the lesser of it and the restriction.

    A restricted request's watermark key names its cluster (`cluster-<id>`) when the
    rules say so, so output harvested by a campaign carries a key of its own.
    """
    if restrict is None:
        return Output(tier.reasoning, tier.max_thinking_tokens, tier.logprobs, tier.watermark_key)
    reasoning = min(tier.reasoning, restrict.reasoning, key=_EXPOSURE_RANK.__getitem__)
    caps = [c for c in (tier.max_thinking_tokens, restrict.max_thinking_tokens) if c is not None]
    watermark = tier.watermark_key
    if restrict.watermark == "cluster" and cluster:
        watermark = f"cluster-{cluster}"[:64]
    return Output(reasoning, min(caps), tier.logprobs and restrict.logprobs, watermark)


def upstream_headers(
    decision_id: str,
    rules_version: str,
    caller: Caller,
    tier: CompiledTier,
    model: str | None,
    *,
    output: Output,
    risk: str = "none",
    cluster: str = "",
) -> tuple[tuple[str, str], ...]:
    """The headers the model server receives with an allowed request (docs/governance.md)."""
    account = caller.account
    headers = [
        (DECISION_ID, decision_id),
        (KEY_ID, caller.key_id),
        (ACCOUNT, account.account),
        (ENTITY, account.entity),
        (TIER, tier.name),
        (KYC, account.kyc.value),
        (REASONING, output.reasoning),
        (LOGPROBS, "allowed" if output.logprobs else "denied"),
        (WATERMARK, output.watermark_key),
        (RISK, risk),
        (RULES_VERSION, rules_version),
    ]
    if output.max_thinking_tokens is not None:
        headers.append((MAX_THINKING, str(output.max_thinking_tokens)))
    if cluster:
        headers.append((CLUSTER, cluster))
    if model is not None:
        headers.append((MODEL, model))
    return tuple(headers)
