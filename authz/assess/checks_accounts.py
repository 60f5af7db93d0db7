"""Configuration checks of the keys: the accounts file or the Redis registry."""

from __future__ import annotations

from authz.accounts import Kyc
from authz.assess.deployment import Deployment, KeyFact
from authz.assess.findings import Outcome, Severity, check, outcome

SHOWN = 5  # evidence lines per finding; the rest are counted


def _active(d: Deployment) -> list[KeyFact]:
    assert d.keys is not None
    return [k for k in d.keys if not k.revoked and (k.expires is None or k.expires > d.now)]


def _listed(facts: list[str], what: str) -> list[str]:
    extra = len(facts) - SHOWN
    return facts[:SHOWN] + ([f"... and {extra} more {what}"] if extra > 0 else [])


@check(
    "DG-ID-010",
    "Active keys expire",
    Severity.LOW,
    1,
    ("accounts",),
    fix='{"id": "k_1", "sha256": "...", "expires": "2027-01-01T00:00:00Z"}',
)
def keys_expire(d: Deployment) -> Outcome:
    """A key that never expires outlives the people and jobs that held it."""
    bad = [f"{k.where}: no expires" for k in _active(d) if k.expires is None]
    return outcome(_listed(bad, "keys without expiry"), "every active key has an expiry")


@check(
    "DG-ID-011",
    "The accounts file holds key digests, not secrets",
    Severity.MEDIUM,
    1,
    ("accounts",),
    fix='distill-guard keys hash   # then write {"sha256": "<digest>"}, not "secret"',
)
def digests_only(d: Deployment) -> Outcome:
    """Whoever reads the Secret or a backup of it could call as every customer."""
    bad = [f"{k.where}: plaintext secret" for k in _active(d) if k.plaintext]
    return outcome(_listed(bad, "plaintext keys"), "keys are stored as digests")


@check(
    "DG-ID-012",
    "Every account names a tier the rules define",
    Severity.LOW,
    1,
    ("accounts", "rules"),
    fix="tiers:\n  <the missing tier>: {...}   # or move the accounts to an existing tier",
)
def tiers_known(d: Deployment) -> Outcome:
    """Accounts on an unknown tier are denied `tier_unknown`: a broken plan, not a control."""
    assert d.rules is not None
    bad = sorted({f"{k.where}: tier {k.tier!r}" for k in _active(d) if k.tier not in d.rules.tiers})
    return outcome(_listed(bad, "keys on unknown tiers"), "every active key's tier exists")


@check(
    "DG-ID-013",
    "Accounts whose KYC was rejected hold no active key",
    Severity.MEDIUM,
    1,
    ("accounts",),
    fix='distill-guard keys revoke <key id>   # or "revoked": true in the accounts file',
)
def rejected_revoked(d: Deployment) -> Outcome:
    """A rejected account on a tier that admits unverified accounts is still served."""
    bad = [f"{k.where}: kyc rejected, key active" for k in _active(d) if k.kyc is Kyc.REJECTED]
    return outcome(
        _listed(bad, "keys of rejected accounts"), "no rejected account holds an active key"
    )
