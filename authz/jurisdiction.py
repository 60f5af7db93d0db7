"""Jurisdiction rules: where a request comes from, where its account is registered.

The `jurisdiction` section of the rules file is an ordered list of rules. Each
rule has an id, conditions (all must hold; a list condition holds when any
entry matches) and an action:

- `deny` stops the request (unless the rule is `shadow`: then it is recorded
  as "would deny" and evaluation goes on);
- `allow` stops jurisdiction evaluation in favour of the request;
- `flag` records a signal named after the rule and goes on.

When no deciding rule matches, `default` applies. Country lists name ISO
3166-1 alpha-2 codes or groups defined once under `groups`.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from dataclasses import dataclass
from typing import Literal

from pydantic import Field, field_validator, model_validator

from authz.accounts import Kyc
from authz.clientip import ClientIpPolicy
from authz.countries import ISO_3166_ALPHA2
from authz.location import AddressKind, Location
from authz.reasons import Reason
from authz.schema import StrictModel

_GROUP_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
_RULE_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


class ClientIpRules(StrictModel):
    """How much of X-Forwarded-For to believe (see docs/jurisdiction.md)."""

    trusted_hops: int = Field(
        default=0,
        ge=0,
        le=10,
        description="Proxies in front of Envoy that append to X-Forwarded-For. 0: use Envoy's "
        "source address only.",
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="CIDRs of proxies whose X-Forwarded-For entries are trusted, walked from "
        "the right. Takes precedence over trusted_hops.",
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _cidrs(cls, values: list[str]) -> list[str]:
        for value in values:
            try:
                ipaddress.ip_network(value)
            except ValueError:
                raise ValueError(f"{value!r} is not an IP network in CIDR notation") from None
        return values

    def compile(self) -> ClientIpPolicy:
        """The runtime policy."""
        return ClientIpPolicy(
            self.trusted_hops, tuple(ipaddress.ip_network(v) for v in self.trusted_proxies)
        )


CountryRef = str  # an ISO code (upper case) or a group name (lower case)


class JurisdictionRule(StrictModel):
    """One rule: conditions that must all hold, and what to do then."""

    id: str = Field(description="Stable id; named in decisions, audit records and spans.")
    action: Literal["deny", "allow", "flag"]
    shadow: bool = Field(default=False, description="Record 'would deny' but allow.")
    description: str = ""
    tiers: list[str] | None = Field(
        default=None, min_length=1, description="Applies to these tiers only."
    )
    kyc: list[Kyc] | None = Field(
        default=None, min_length=1, description="Applies to these KYC statuses."
    )
    ip_country: list[CountryRef] | None = Field(
        default=None, min_length=1, description="The client IP's country is one of these."
    )
    ip_country_not: list[CountryRef] | None = Field(
        default=None,
        min_length=1,
        description="The client IP's country is none of these (unknown included).",
    )
    kyc_country: list[CountryRef] | None = Field(
        default=None, min_length=1, description="The account's declared country is one of these."
    )
    country_mismatch: bool | None = Field(
        default=None,
        description="true: the IP country is known and differs from the KYC country.",
    )
    asn: list[int] | None = Field(
        default=None, min_length=1, description="The client network's AS number."
    )
    as_org: list[str] | None = Field(
        default=None,
        min_length=1,
        description="Glob patterns on the AS organisation (case-insensitive).",
    )
    address: list[AddressKind] | None = Field(
        default=None,
        min_length=1,
        description="The address kind: public, unlisted, private, loopback or reserved.",
    )

    @field_validator("id")
    @classmethod
    def _id_shape(cls, value: str) -> str:
        if not _RULE_ID.match(value):
            raise ValueError(f"rule id {value!r} must match [a-z0-9][a-z0-9_.-]*")
        return value

    @model_validator(mode="after")
    def _has_a_condition(self) -> JurisdictionRule:
        conditions = (
            self.tiers, self.kyc, self.ip_country, self.ip_country_not, self.kyc_country,
            self.country_mismatch, self.asn, self.as_org, self.address,
        )  # fmt: skip
        if all(c is None for c in conditions):
            raise ValueError(f"rule {self.id!r} has no condition; use `default` instead")
        return self


class JurisdictionRules(StrictModel):
    """The `jurisdiction` section."""

    groups: dict[str, list[str]] = Field(
        default_factory=dict, description="Named country groups, e.g. eu or embargoed."
    )
    rules: list[JurisdictionRule] = Field(default_factory=list)
    default: Literal["allow", "deny"] = Field(
        default="allow", description="What happens when no allow or deny rule matches."
    )

    @field_validator("groups")
    @classmethod
    def _group_names(cls, groups: dict[str, list[str]]) -> dict[str, list[str]]:
        for name in groups:
            if not _GROUP_NAME.match(name):
                raise ValueError(f"group name {name!r} must be lower case [a-z][a-z0-9_-]*")
        return groups


def reference_problem(section: JurisdictionRules, tiers: set[str]) -> tuple[str, str] | None:
    """The first dangling reference as (dotted path, problem), or None.

    Checked after schema validation so the error can name the exact entry.
    """
    for name, codes in section.groups.items():
        for j, code in enumerate(codes):
            if code not in ISO_3166_ALPHA2:
                return f"groups.{name}.{j}", f"{code!r} is not an ISO 3166-1 alpha-2 country code"
    seen: set[str] = set()
    for i, rule in enumerate(section.rules):
        if rule.id in seen:
            return f"rules.{i}.id", f"duplicate rule id {rule.id!r}"
        seen.add(rule.id)
        for j, tier in enumerate(rule.tiers or []):
            if tier not in tiers:
                return f"rules.{i}.tiers.{j}", f"{tier!r} is not a defined tier"
        for field in ("ip_country", "ip_country_not", "kyc_country"):
            for j, ref in enumerate(getattr(rule, field) or []):
                if ref in section.groups or ref in ISO_3166_ALPHA2:
                    continue
                if ref.isupper():
                    problem = f"{ref!r} is not an ISO 3166-1 alpha-2 country code"
                else:
                    known = ", ".join(sorted(section.groups)) or "none defined"
                    problem = f"{ref!r} is neither a country code nor a group (groups: {known})"
                return f"rules.{i}.{field}.{j}", problem
    return None


# --- compiled form ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """A rule with its country references expanded and patterns compiled."""

    id: str
    action: str
    shadow: bool
    reason: Reason
    tiers: frozenset[str] | None
    kyc: frozenset[Kyc] | None
    ip_country: frozenset[str] | None
    ip_country_not: frozenset[str] | None
    kyc_country: frozenset[str] | None
    country_mismatch: bool | None
    asn: frozenset[int] | None
    as_org: re.Pattern[str] | None
    address: frozenset[AddressKind] | None


@dataclass(frozen=True, slots=True)
class Jurisdiction:
    """The compiled jurisdiction section."""

    rules: tuple[CompiledRule, ...]
    default: str

    @property
    def uses_ip_country(self) -> bool:
        """Whether any rule needs a GeoIP country."""
        return any(r.ip_country or r.ip_country_not or r.country_mismatch for r in self.rules)


def compile_jurisdiction(section: JurisdictionRules) -> Jurisdiction:
    """Expand groups and compile patterns (references already checked)."""

    def expand(refs: list[str] | None) -> frozenset[str] | None:
        if refs is None:
            return None
        codes: set[str] = set()
        for ref in refs:
            codes.update(section.groups.get(ref, [ref]))
        return frozenset(codes)

    compiled = []
    for r in section.rules:
        compiled.append(
            CompiledRule(
                id=r.id,
                action=r.action,
                shadow=r.shadow,
                reason=_reason_for(r),
                tiers=frozenset(r.tiers) if r.tiers is not None else None,
                kyc=frozenset(r.kyc) if r.kyc is not None else None,
                ip_country=expand(r.ip_country),
                ip_country_not=expand(r.ip_country_not),
                kyc_country=expand(r.kyc_country),
                country_mismatch=r.country_mismatch,
                asn=frozenset(r.asn) if r.asn is not None else None,
                as_org=(
                    re.compile("|".join(fnmatch.translate(p) for p in r.as_org), re.IGNORECASE)
                    if r.as_org
                    else None
                ),
                address=frozenset(r.address) if r.address is not None else None,
            )
        )
    return Jurisdiction(tuple(compiled), section.default)


def _reason_for(rule: JurisdictionRule) -> Reason:
    """The stable reason code a denial by this rule carries, from its strongest condition."""
    if rule.kyc_country is not None:
        return Reason.KYC_COUNTRY_DENIED
    if rule.country_mismatch:
        return Reason.COUNTRY_MISMATCH
    if rule.asn is not None or rule.as_org is not None:
        return Reason.NETWORK_DENIED
    if rule.ip_country is not None or rule.ip_country_not is not None:
        return Reason.COUNTRY_DENIED
    if rule.address is not None:
        return Reason.ADDRESS_DENIED
    return Reason.JURISDICTION_DENIED


# --- evaluation ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Subject:
    """What jurisdiction rules look at for one request."""

    tier: str
    kyc: Kyc
    kyc_country: str
    location: Location


@dataclass(frozen=True, slots=True)
class Step:
    """One rule's evaluation, for explain."""

    rule: str
    matched: bool
    outcome: str  # "deny", "allow", "flag", "would deny", "no match"


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of the jurisdiction rules for one request."""

    denied_by: CompiledRule | None
    flags: tuple[str, ...]
    shadow_denies: tuple[str, ...]
    steps: tuple[Step, ...]


def matches(rule: CompiledRule, s: Subject) -> bool:
    """Whether every condition of the rule holds for the subject."""
    loc = s.location
    country = loc.country
    return (
        (rule.tiers is None or s.tier in rule.tiers)
        and (rule.kyc is None or s.kyc in rule.kyc)
        and (rule.ip_country is None or (country is not None and country in rule.ip_country))
        and (rule.ip_country_not is None or country is None or country not in rule.ip_country_not)
        and (rule.kyc_country is None or s.kyc_country in rule.kyc_country)
        and (
            rule.country_mismatch is None
            or rule.country_mismatch == (country is not None and country != s.kyc_country)
        )
        and (rule.asn is None or (loc.asn is not None and loc.asn in rule.asn))
        and (
            rule.as_org is None or (loc.as_org is not None and bool(rule.as_org.match(loc.as_org)))
        )
        and (rule.address is None or loc.kind in rule.address)
    )


def evaluate(j: Jurisdiction, s: Subject, *, trace: bool = False) -> Verdict:
    """Run the rules in order for one subject."""
    flags: list[str] = []
    shadow: list[str] = []
    steps: list[Step] = []
    for rule in j.rules:
        if not matches(rule, s):
            if trace:
                steps.append(Step(rule.id, False, "no match"))
            continue
        if rule.action == "flag":
            flags.append(rule.id)
            outcome = "flag"
        elif rule.shadow:
            if rule.action == "deny":
                shadow.append(rule.id)
            outcome = f"would {rule.action}"
        else:
            if trace:
                steps.append(Step(rule.id, True, rule.action))
            denied = rule if rule.action == "deny" else None
            return Verdict(denied, tuple(flags), tuple(shadow), tuple(steps))
        if trace:
            steps.append(Step(rule.id, True, outcome))
    default_rule = _DEFAULT_DENY if j.default == "deny" else None
    if trace:
        steps.append(Step("default", True, j.default))
    return Verdict(default_rule, tuple(flags), tuple(shadow), tuple(steps))


_DEFAULT_DENY = CompiledRule(
    id="default", action="deny", shadow=False, reason=Reason.JURISDICTION_DENIED,
    tiers=None, kyc=None, ip_country=None, ip_country_not=None, kyc_country=None,
    country_mismatch=None, asn=None, as_org=None, address=None,
)  # fmt: skip
