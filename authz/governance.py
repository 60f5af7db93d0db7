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


def headers_to_remove(
    headers: Mapping[str, str], ours: tuple[tuple[str, str], ...]
) -> tuple[str, ...]:
    """Client-sent headers in our namespace that none of ours overwrites.

    Envoy applies `headers_to_remove` after the headers we set, so a name we
    set must not be listed: the overwrite already replaces the client's copy,
    and removing it would drop ours too.
    """
    set_by_us = {name for name, _ in ours}
    return tuple(
        sorted(n for n in headers if n.startswith(GOVERNANCE_PREFIX) and n not in set_by_us)
    )


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
