"""The configuration review: every registered check whose inputs were given."""

from __future__ import annotations

# The check modules register themselves on import; the order here is the report's
# order among findings of equal severity and control.
from authz.assess import checks_accounts, checks_envoy, checks_rules, checks_serve
from authz.assess.deployment import Deployment
from authz.assess.findings import REGISTRY, Finding

CHECK_MODULES = (checks_rules, checks_accounts, checks_envoy, checks_serve)
__all__ = ["CHECK_MODULES", "REGISTRY", "present", "review"]


def present(d: Deployment) -> set[str]:
    """The inputs this deployment provides."""
    parts = {
        "rules": d.rules is not None,
        "accounts": d.keys is not None,
        "envoy": d.envoy is not None,
        "serve": d.serve is not None,
    }
    return {name for name, given in parts.items() if given}


def review(d: Deployment) -> tuple[list[Finding], list[str]]:
    """The findings of every check that can run, and the ids of those that could not."""
    have = present(d)
    findings: list[Finding] = []
    skipped: list[str] = []
    for c in REGISTRY.checks:
        if not set(c.needs) <= have:
            skipped.append(c.info.id)
            continue
        status, evidence = c.run(d)
        findings.append(c.info.finding(status, evidence))
    return findings, skipped
