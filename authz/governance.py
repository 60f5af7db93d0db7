"""The governance header namespace: what the model server learns from us.

Every header under GOVERNANCE_PREFIX is ours. Copies sent by a client are
removed before the request goes upstream, and ours overwrite them.
"""

from __future__ import annotations

from collections.abc import Mapping

from authz.decision import Caller
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
RULES_VERSION = GOVERNANCE_PREFIX + "rules-version"
DRY_RUN_DENY = GOVERNANCE_PREFIX + "dry-run-deny"


def client_governance_headers(headers: Mapping[str, str]) -> tuple[str, ...]:
    """Names of headers in our namespace that the client sent (to be removed)."""
    return tuple(sorted(name for name in headers if name.startswith(GOVERNANCE_PREFIX)))


def upstream_headers(
    decision_id: str,
    rules_version: str,
    caller: Caller,
    tier: CompiledTier,
    model: str | None,
) -> tuple[tuple[str, str], ...]:
    """The headers the model server receives with an allowed request."""
    account = caller.account
    headers = [
        (DECISION_ID, decision_id),
        (KEY_ID, caller.key_id),
        (ACCOUNT, account.account),
        (ENTITY, account.entity),
        (TIER, tier.name),
        (KYC, account.kyc.value),
        (REASONING, tier.reasoning),
        (RULES_VERSION, rules_version),
    ]
    if model is not None:
        headers.append((MODEL, model))
    return tuple(headers)
