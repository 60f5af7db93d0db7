"""The findings model of `distill-guard assess`, and the registry of configuration checks.

A check is a small function with fixed metadata (a stable id, a title, a
severity, the control it concerns and the fix); it looks at one deployment and
answers a status with its evidence. Probes and the campaign exercise produce
findings of the same shape, so the report treats them all alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from authz.assess.deployment import Deployment

Status = Literal["fail", "warn", "pass", "unverifiable"]
Input = Literal["rules", "accounts", "envoy", "serve"]

CONTROLS: dict[int, str] = {
    1: "identity and KYC tiers",
    2: "rate limits and volume anomalies",
    3: "extraction and campaign detection",
    4: "jurisdiction at the boundary",
    5: "output governance",
    6: "audit trail",
}


class Severity(IntEnum):
    """How much a failing finding matters to the mission, in order."""

    INFO = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @property
    def label(self) -> str:
        """The lower-case name used in flags, JSON and reports."""
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Severity:
        """The severity a name gives; ValueError for an unknown one."""
        try:
            return cls[text.strip().upper()]
        except KeyError:
            names = ", ".join(s.label for s in cls)
            raise ValueError(f"unknown severity {text!r} (one of {names})") from None


@dataclass(frozen=True, slots=True)
class CheckInfo:
    """What a check is: the parts of its findings that never change."""

    id: str
    title: str
    severity: Severity
    control: int
    fix: str

    def finding(self, status: Status, evidence: list[str]) -> Finding:
        """A finding of this check with its outcome."""
        return Finding(self, status, tuple(evidence))


@dataclass(frozen=True, slots=True)
class Finding:
    """One check's outcome on one deployment."""

    check: CheckInfo
    status: Status
    evidence: tuple[str, ...]

    @property
    def failed(self) -> bool:
        """Whether the finding counts against the deployment (fail or warn)."""
        return self.status in ("fail", "warn")

    def sort_key(self) -> tuple[int, int, int, str]:
        """Failing findings first, then by severity (highest first), control and id."""
        return (0 if self.failed else 1, -self.check.severity, self.check.control, self.check.id)

    def to_json(self) -> dict[str, Any]:
        """The finding as JSON-ready values."""
        c = self.check
        return {
            "id": c.id,
            "title": c.title,
            "severity": c.severity.label,
            "control": c.control,
            "control_name": CONTROLS[c.control],
            "status": self.status,
            "evidence": list(self.evidence),
            "fix": c.fix,
        }


Outcome = tuple[Status, list[str]]


def outcome(problems: list[str], passed: str) -> Outcome:
    """Fail with the problems when there are any, else pass with `passed` as evidence."""
    return ("fail", problems) if problems else ("pass", [passed])


@dataclass(frozen=True, slots=True)
class ConfigCheck:
    """A configuration check: its metadata, the inputs it reads, and the function."""

    info: CheckInfo
    needs: tuple[Input, ...]
    run: Callable[[Deployment], Outcome]


@dataclass
class Registry:
    """Every configuration check, in the order they were declared."""

    checks: list[ConfigCheck] = field(default_factory=list)

    def add(
        self,
        id: str,
        title: str,
        severity: Severity,
        control: int,
        needs: tuple[Input, ...],
        *,
        fix: str,
    ) -> Callable[[Callable[[Deployment], Outcome]], Callable[[Deployment], Outcome]]:
        """Decorator declaring a check."""

        def wrap(fn: Callable[[Deployment], Outcome]) -> Callable[[Deployment], Outcome]:
            if any(c.info.id == id for c in self.checks):
                raise ValueError(f"duplicate check id {id}")
            info = CheckInfo(id, title, severity, control, fix.strip("\n"))
            self.checks.append(ConfigCheck(info, needs, fn))
            return fn

        return wrap


REGISTRY = Registry()
check = REGISTRY.add
