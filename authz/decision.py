"""The Decision: the plain value the pipeline returns and the gRPC edge translates."""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from authz.accounts import Account
from authz.facts import IPAddress
from authz.location import Location
from authz.reasons import Reason

if TYPE_CHECKING:
    from authz.detect.features import RequestFeatures
    from authz.detect.rules import Assessment
    from authz.metering.result import Sighted


class Action(StrEnum):
    """What happens to the request."""

    ALLOW = "allow"
    DENY = "deny"


@dataclass(frozen=True, slots=True)
class Caller:
    """The identity a decision was made for (no secret in it)."""

    key_id: str
    account: Account


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one check.

    `reason` is the stable code; `detail` a human sentence for the logs; `rule`
    the id of the rule that decided (e.g. `jurisdiction:embargoed-ip`).
    `would_deny` is set in dry-run mode: the enforced answer is allow, the real one is kept;
    `shadow_denies` names shadow rules that would have denied; `flags` are signals raised
    by rules that only record. `trace` is filled only when explaining.
    """

    action: Action
    reason: Reason
    decision_id: str
    rules_version: str
    time: float = 0.0  # when the check started, epoch seconds by the pipeline's clock
    detail: str = ""
    rule: str | None = None
    caller: Caller | None = None
    model: str | None = None
    client_ip: IPAddress | None = None
    location: Location | None = None
    flags: tuple[str, ...] = ()
    shadow_denies: tuple[str, ...] = ()
    upstream_headers: tuple[tuple[str, str], ...] = ()
    remove_headers: tuple[str, ...] = ()
    response_headers: tuple[tuple[str, str], ...] = ()
    would_deny: Reason | None = None
    counters: tuple[tuple[str, int, int], ...] = ()  # (policy name, limit, remaining)
    estimated_tokens: int = 0
    trace: tuple[tuple[str, str], ...] = ()
    features: RequestFeatures | None = None  # extraction features (detection on)
    sighted: Sighted | None = None  # the pools' answers, timing and verdict
    assessment: Assessment | None = None  # the detect phase's risk and action

    @property
    def allowed(self) -> bool:
        """Whether the request goes on to the model server."""
        return self.action is Action.ALLOW

    @property
    def status(self) -> int:
        """The HTTP status of a denial (200 when allowed)."""
        return 200 if self.allowed else self.reason.status

    def deny_body(self) -> bytes:
        """The small JSON body a denied client receives."""
        return json.dumps(
            {
                "error": self.reason.error,
                "reason": self.reason.value,
                "decision_id": self.decision_id,
            },
            separators=(",", ":"),
        ).encode()
